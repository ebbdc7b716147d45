"""operations: apportioning, post-paid bills, billing items, batch operations

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from meterhub.rls import enable_tenant_rls

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TENANT_TABLES = ("apportion_rules", "apportion_sub_meters", "apportion_members", "apportion_runs",
                 "apportion_shares", "postpaid_accounts", "postpaid_bills", "postpaid_bill_lines",
                 "postpaid_payments", "postpaid_reminders", "billing_items", "billing_item_accounts",
                 "billing_charges", "batches", "batch_items")
MONEY = sa.Numeric(14, 2)
USAGE = sa.Numeric(18, 4)
TS = sa.DateTime(timezone=True)


def _group():
    return sa.Column("group_id", sa.BigInteger(), sa.ForeignKey("groups.id", ondelete="CASCADE"), nullable=False,
                     index=True)


def _id():
    return sa.Column("id", sa.BigInteger(), primary_key=True)


def _fk(name, target, nullable=False, ondelete="RESTRICT", **kw):
    return sa.Column(name, sa.BigInteger(), sa.ForeignKey(target, ondelete=ondelete), nullable=nullable, **kw)


def _str(name, length, nullable=False):
    return sa.Column(name, sa.String(length), nullable=nullable)


def _apportion():
    op.create_table(
        "apportion_rules", _id(), _group(), _fk("property_id", "properties.id", index=True), _str("name", 100),
        _fk("parent_meter_id", "meters.id"), sa.Column("subtract_sub_meters", sa.Boolean(), nullable=False),
        _str("method", 8), _fk("tariff_id", "tariffs.id"), _str("post_mode", 8),
        _fk("remainder_account_id", "prepaid_accounts.id", nullable=True, ondelete="SET NULL"),
        sa.Column("active", sa.Boolean(), nullable=False), sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("group_id", "name"),
        sa.CheckConstraint("method IN ('ratio','area','usage')", name="method"),
        sa.CheckConstraint("post_mode IN ('deduct','bill')", name="post_mode"))
    op.create_table(
        "apportion_sub_meters", _group(),
        sa.Column("rule_id", sa.BigInteger(), sa.ForeignKey("apportion_rules.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("meter_id", sa.BigInteger(), sa.ForeignKey("meters.id", ondelete="RESTRICT"), primary_key=True))
    op.create_table(
        "apportion_members", _id(), _group(), _fk("rule_id", "apportion_rules.id", ondelete="CASCADE", index=True),
        _fk("account_id", "prepaid_accounts.id", index=True), sa.Column("ratio", sa.Numeric(12, 4), nullable=False),
        sa.UniqueConstraint("rule_id", "account_id"), sa.CheckConstraint("ratio >= 0", name="ratio"))
    op.create_table(
        "apportion_runs", _id(), _group(), _fk("property_id", "properties.id", index=True),
        _fk("rule_id", "apportion_rules.id", index=True), sa.Column("period_start", TS, nullable=False),
        sa.Column("period_end", TS, nullable=False), sa.Column("correction", sa.Integer(), nullable=False),
        _str("status", 10), sa.Column("usage", USAGE, nullable=False), sa.Column("amount", MONEY, nullable=False),
        sa.Column("statement", postgresql.JSONB(), nullable=False), _str("actor", 100),
        sa.Column("posted_at", TS, nullable=False), sa.Column("reversed_at", TS), _str("reversal_reason", 300),
        sa.CheckConstraint("status IN ('posted','reversed')", name="status"),
        sa.CheckConstraint("period_end > period_start", name="period"))
    op.create_index("ux_apportion_runs_posted", "apportion_runs", ["rule_id", "period_start", "period_end"],
                    unique=True, postgresql_where=sa.text("status = 'posted'"))
    op.create_table(
        "apportion_shares", _id(), _group(), _fk("run_id", "apportion_runs.id", index=True),
        _fk("account_id", "prepaid_accounts.id", index=True), sa.Column("weight", sa.Numeric(), nullable=False),
        sa.Column("amount", MONEY, nullable=False), _str("disposition", 10),
        _fk("transfer_id", "ledger_transfers.id", nullable=True), sa.Column("bill_id", sa.BigInteger(), index=True),
        _str("note", 300), sa.UniqueConstraint("run_id", "account_id"))


def _postpaid():
    op.create_table(
        "postpaid_accounts", _group(),
        sa.Column("account_id", sa.BigInteger(), sa.ForeignKey("prepaid_accounts.id", ondelete="RESTRICT"),
                  primary_key=True),
        _fk("property_id", "properties.id", index=True), sa.Column("due_days", sa.Integer(), nullable=False),
        sa.Column("since", TS, nullable=False))
    op.create_table(
        "postpaid_bills", _id(), _group(), _fk("property_id", "properties.id", index=True),
        _fk("account_id", "prepaid_accounts.id", index=True), _str("number", 40),
        sa.Column("period_start", sa.Date(), nullable=False), sa.Column("period_end", sa.Date(), nullable=False),
        _str("status", 16), sa.Column("total", MONEY, nullable=False), sa.Column("paid", MONEY, nullable=False),
        sa.Column("due_date", sa.Date()), sa.Column("created_at", TS, nullable=False), sa.Column("confirmed_at", TS),
        sa.Column("paid_at", TS), sa.Column("reminded_at", TS), sa.UniqueConstraint("group_id", "number"),
        sa.CheckConstraint("status IN ('draft','confirmed','partially_paid','paid','overdue','void')", name="status"),
        sa.CheckConstraint("paid >= 0 AND paid <= total", name="paid"))
    op.create_index("ux_postpaid_bills_period", "postpaid_bills", ["account_id", "period_start", "period_end"],
                    unique=True, postgresql_where=sa.text("status <> 'void'"))
    op.create_table(
        "postpaid_bill_lines", _id(), _group(), _fk("bill_id", "postpaid_bills.id", ondelete="CASCADE", index=True),
        _str("kind", 12), _str("description", 300), sa.Column("quantity", USAGE),
        sa.Column("amount", MONEY, nullable=False), sa.Column("source_id", sa.BigInteger()))
    op.create_table(
        "postpaid_payments", _id(), _group(), _fk("bill_id", "postpaid_bills.id", index=True),
        _fk("transfer_id", "ledger_transfers.id", unique=True), sa.Column("amount", MONEY, nullable=False),
        _str("channel", 16), sa.Column("at", TS, nullable=False))
    op.create_table(
        "postpaid_reminders", _id(), _group(), _fk("bill_id", "postpaid_bills.id", ondelete="CASCADE", index=True),
        _str("kind", 12), sa.Column("day", sa.Date(), nullable=False), _str("channel", 16),
        sa.Column("at", TS, nullable=False), sa.UniqueConstraint("bill_id", "kind", "day"))


def _billing_items():
    op.create_table(
        "billing_items", _id(), _group(), _fk("property_id", "properties.id", index=True), _str("name", 100),
        _str("category", 16), _str("basis", 8), sa.Column("rate", sa.Numeric(12, 4), nullable=False),
        _str("recurrence", 10), sa.Column("day", sa.SmallInteger(), nullable=False),
        sa.Column("anchor_month", sa.SmallInteger(), nullable=False), sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date()), _str("mode", 8), sa.Column("may_trip", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False), sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("day BETWEEN 1 AND 31 AND anchor_month BETWEEN 1 AND 12", name="day"),
        sa.CheckConstraint("rate >= 0", name="rate"),
        sa.CheckConstraint("recurrence IN ('once','monthly','quarterly','yearly')", name="recurrence"))
    op.create_table(
        "billing_item_accounts", _group(),
        sa.Column("item_id", sa.BigInteger(), sa.ForeignKey("billing_items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("account_id", sa.BigInteger(), sa.ForeignKey("prepaid_accounts.id", ondelete="RESTRICT"),
                  primary_key=True))
    op.create_table(
        "billing_charges", _id(), _group(), _fk("property_id", "properties.id", index=True),
        _fk("item_id", "billing_items.id", index=True), _fk("account_id", "prepaid_accounts.id", index=True),
        sa.Column("due_date", sa.Date(), nullable=False), sa.Column("amount", MONEY, nullable=False),
        _str("status", 10), _str("reason", 300), _fk("transfer_id", "ledger_transfers.id", nullable=True),
        sa.Column("bill_id", sa.BigInteger(), index=True), sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("item_id", "account_id", "due_date"))


def _batch():
    op.create_table(
        "batches", _id(), _group(), _fk("property_id", "properties.id", index=True), _str("action", 24),
        sa.Column("params", postgresql.JSONB(), nullable=False), sa.Column("selection", postgresql.JSONB(), nullable=False),
        _str("status", 10), sa.Column("scheduled_at", TS, nullable=False), sa.Column("started_at", TS),
        sa.Column("finished_at", TS), _str("actor", 100), sa.Column("operator_id", sa.BigInteger()),
        sa.Column("total", sa.Integer(), nullable=False), sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('scheduled','running','done','cancelled')", name="status"))
    op.create_index("ix_batches_due", "batches", ["scheduled_at"], postgresql_where=sa.text("status = 'scheduled'"))
    op.create_table(
        "batch_items", _id(), _group(), _fk("batch_id", "batches.id", ondelete="CASCADE", index=True),
        _fk("meter_id", "meters.id", ondelete="CASCADE", index=True), _str("status", 10),
        sa.Column("reason", sa.Text(), nullable=False),
        _fk("command_id", "commands.id", nullable=True, ondelete="SET NULL", index=True),
        sa.Column("attempts", sa.Integer(), nullable=False), sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("batch_id", "meter_id"),
        sa.CheckConstraint("status IN ('pending','running','ok','failed','skipped')", name="status"))


def upgrade():
    _apportion()
    _postpaid()
    _billing_items()
    _batch()
    for table in TENANT_TABLES:
        enable_tenant_rls(table)


def downgrade():
    for table in reversed(TENANT_TABLES):
        op.drop_table(table)
