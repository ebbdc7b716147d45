"""alarms: alarms and history, notifier configs, notification log, portal messages, report exports, schedules

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from meterhub.rls import enable_tenant_rls, mark_append_only

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TENANT_TABLES = ("alarms", "alarm_events", "notifier_configs", "notification_log", "portal_messages",
                 "report_exports", "scheduled_reports")
TS = sa.DateTime(timezone=True)


def _group():
    return sa.Column("group_id", sa.BigInteger(), sa.ForeignKey("groups.id", ondelete="CASCADE"), nullable=False,
                     index=True)


def _id():
    return sa.Column("id", sa.BigInteger(), primary_key=True)


def _str(name, length, nullable=False):
    return sa.Column(name, sa.String(length), nullable=nullable)


def upgrade():
    op.create_table(
        "alarms", _id(), _group(),
        sa.Column("property_id", sa.BigInteger(), sa.ForeignKey("properties.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        _str("kind", 32), _str("state", 16), _str("subject_key", 64),
        sa.Column("meter_id", sa.BigInteger(), index=True), sa.Column("account_id", sa.BigInteger(), index=True),
        sa.Column("device_id", sa.BigInteger()), sa.Column("gateway_id", sa.BigInteger()),
        sa.Column("detail", postgresql.JSONB(), nullable=False), sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("raised_at", TS, nullable=False), sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("acknowledged_at", TS), sa.Column("acknowledged_by", sa.BigInteger()),
        _str("acknowledged_by_name", 100), sa.Column("cleared_at", TS), _str("cleared_by", 100),
        sa.CheckConstraint("state IN ('active','acknowledged','cleared')", name="state"))
    op.create_index("ux_alarms_open", "alarms", ["group_id", "kind", "subject_key"], unique=True,
                    postgresql_where=sa.text("state <> 'cleared'"))
    op.create_index("ix_alarms_group_raised", "alarms", ["group_id", "raised_at"])
    op.create_table(
        "alarm_events", _id(), _group(),
        sa.Column("alarm_id", sa.BigInteger(), sa.ForeignKey("alarms.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("at", TS, nullable=False), _str("action", 16), _str("actor", 100),
        sa.Column("operator_id", sa.BigInteger()), _str("note", 500))
    op.create_table(
        "notifier_configs", _id(), _group(), _str("notifier", 32), _str("name", 100),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("settings", postgresql.JSONB(), nullable=False), sa.Column("secrets", postgresql.JSONB(), nullable=False),
        sa.Column("kinds", postgresql.JSONB(), nullable=False), sa.Column("recipients", postgresql.JSONB(), nullable=False),
        sa.Column("throttle_minutes", sa.Integer(), nullable=False), sa.Column("max_per_hour", sa.Integer(), nullable=False),
        _str("quiet_start", 5, True), _str("quiet_end", 5, True), sa.Column("created_at", TS, nullable=False))
    op.create_table(
        "notification_log", _id(), _group(),
        sa.Column("alarm_id", sa.BigInteger(), sa.ForeignKey("alarms.id", ondelete="SET NULL"), index=True),
        sa.Column("config_id", sa.BigInteger(), sa.ForeignKey("notifier_configs.id", ondelete="SET NULL")),
        _str("notifier", 32), _str("recipient", 300), _str("kind", 32), _str("subject_key", 64), _str("status", 12),
        sa.Column("attempts", sa.Integer(), nullable=False), _str("title", 200),
        sa.Column("body", sa.Text(), nullable=False), sa.Column("error", sa.Text(), nullable=False),
        sa.Column("send_after", TS), sa.Column("created_at", TS, nullable=False), sa.Column("sent_at", TS))
    op.create_index("ix_notification_log_throttle", "notification_log", ["config_id", "recipient", "created_at"])
    op.create_index("ix_notification_log_held", "notification_log", ["send_after"],
                    postgresql_where=sa.text("status = 'held'"))
    op.create_table(
        "portal_messages", _id(), _group(),
        sa.Column("account_id", sa.BigInteger(), sa.ForeignKey("prepaid_accounts.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("alarm_id", sa.BigInteger(), sa.ForeignKey("alarms.id", ondelete="SET NULL")),
        _str("title", 200), sa.Column("body", sa.Text(), nullable=False), sa.Column("created_at", TS, nullable=False),
        sa.Column("read_at", TS))
    op.create_table(
        "alarm_watermarks", _str("key", 64), sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key"))
    op.create_table(
        "report_exports", _id(), _group(), sa.Column("operator_id", sa.BigInteger(), index=True), _str("report", 64),
        sa.Column("params", postgresql.JSONB(), nullable=False), _str("status", 12),
        sa.Column("rows", sa.Integer(), nullable=False), sa.Column("total", sa.Integer()), _str("path", 500),
        sa.Column("error", sa.Text(), nullable=False), sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS))
    op.create_table(
        "scheduled_reports", _id(), _group(), _str("report", 64),
        sa.Column("params", postgresql.JSONB(), nullable=False), _str("frequency", 8),
        sa.Column("hour", sa.SmallInteger(), nullable=False), sa.Column("recipients", postgresql.JSONB(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False), sa.Column("last_period", sa.Date()),
        sa.Column("last_error", sa.Text(), nullable=False), sa.Column("created_by", sa.BigInteger()),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("frequency IN ('daily','monthly')", name="frequency"))
    for table in TENANT_TABLES:
        enable_tenant_rls(table)
    mark_append_only("alarm_events")


def downgrade():
    for table in ("scheduled_reports", "report_exports", "alarm_watermarks", "portal_messages", "notification_log",
                  "notifier_configs", "alarm_events", "alarms"):
        op.drop_table(table)
