"""prepaid: ledger, tariffs, commands, prepaid accounts, charging state, charges, events

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from meterhub.ledger import ddl
from meterhub.rls import enable_tenant_rls, mark_append_only

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TENANT_TABLES = ("ledger_accounts", "ledger_balances", "ledger_transfers", "ledger_entries", "tariffs",
                 "tariff_versions", "tariff_periods", "tariff_tiers", "tariff_assignments", "commands",
                 "prepaid_accounts", "prepaid_meter_state", "prepaid_charges", "prepaid_events")
APPEND_ONLY = ("ledger_balances", "ledger_transfers", "ledger_entries", "prepaid_charges", "prepaid_events")
MONEY = sa.Numeric(14, 2)
PRICE = sa.Numeric(12, 6)
USAGE = sa.Numeric(18, 4)
TS = sa.DateTime(timezone=True)


def _group():
    return sa.Column("group_id", sa.BigInteger(), sa.ForeignKey("groups.id", ondelete="CASCADE"), nullable=False,
                     index=True)


def _id():
    return sa.Column("id", sa.BigInteger(), primary_key=True)


def _fk(name, target, nullable=False, ondelete="RESTRICT", **kw):
    return sa.Column(name, sa.BigInteger(), sa.ForeignKey(target, ondelete=ondelete), nullable=nullable, **kw)


def upgrade():
    op.create_table(
        "ledger_accounts", _id(), _group(), _fk("property_id", "properties.id", True, index=True),
        sa.Column("kind", sa.String(32), nullable=False), sa.Column("code", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False), sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("group_id", "code"))
    op.create_table(
        "ledger_balances", _group(), sa.Column("account_id", sa.BigInteger(), sa.ForeignKey(
            "ledger_accounts.id", ondelete="RESTRICT"), primary_key=True),
        sa.Column("balance", MONEY, nullable=False))
    op.create_table(
        "ledger_transfers", _id(), _group(), sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        _fk("reverses_transfer_id", "ledger_transfers.id", True, unique=True),
        sa.Column("wallet_account_id", sa.BigInteger(), index=True), sa.Column("amount", MONEY, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False), sa.Column("receipt_no", sa.String(40), unique=True),
        sa.Column("reason", sa.String(300), nullable=False), sa.Column("operator_id", sa.BigInteger()),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("detail", postgresql.JSONB(), nullable=False), sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("group_id", "idempotency_key"))
    op.create_table(
        "ledger_entries", _id(), _group(), _fk("transfer_id", "ledger_transfers.id", index=True),
        _fk("account_id", "ledger_accounts.id", index=True), sa.Column("amount", MONEY, nullable=False),
        sa.Column("created_at", TS, nullable=False), sa.CheckConstraint("amount <> 0", name="nonzero"))
    op.execute("CREATE SEQUENCE ledger_receipt_seq")
    for statement in ddl.UPGRADE:
        op.execute(statement)

    op.create_table(
        "tariffs", _id(), _group(), sa.Column("name", sa.String(100), nullable=False),
        sa.Column("utility", sa.String(16), nullable=False), sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("group_id", "name"))
    op.create_table(
        "tariff_versions", _id(), _group(), _fk("tariff_id", "tariffs.id", index=True),
        sa.Column("effective_from", TS, nullable=False), sa.Column("kind", sa.String(16), nullable=False),
        *[sa.Column(f"price_{r}", PRICE, nullable=False) for r in ("sharp", "peak", "flat", "valley")],
        sa.Column("tier_period", sa.String(8), nullable=False),
        sa.UniqueConstraint("tariff_id", "effective_from"),
        sa.CheckConstraint("kind IN ('flat','tou','tiered','tiered_tou')", name="kind"),
        sa.CheckConstraint("tier_period IN ('month','year')", name="tier_period"))
    op.create_table(
        "tariff_periods", _id(), _group(), _fk("version_id", "tariff_versions.id", index=True),
        sa.Column("start_minute", sa.Integer(), nullable=False), sa.Column("end_minute", sa.Integer(), nullable=False),
        sa.Column("rate", sa.String(8), nullable=False), sa.UniqueConstraint("version_id", "start_minute"),
        sa.CheckConstraint("start_minute >= 0 AND end_minute <= 1440 AND start_minute < end_minute", name="range"),
        sa.CheckConstraint("rate IN ('sharp','peak','flat','valley')", name="rate"))
    op.create_table(
        "tariff_tiers", _id(), _group(), _fk("version_id", "tariff_versions.id", index=True),
        sa.Column("lower", sa.Numeric(14, 4), nullable=False), sa.Column("surcharge", PRICE, nullable=False),
        sa.UniqueConstraint("version_id", "lower"))
    op.create_table(
        "tariff_assignments", _id(), _group(), sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("scope_id", sa.BigInteger(), nullable=False), sa.Column("utility", sa.String(16), nullable=False),
        _fk("tariff_id", "tariffs.id", index=True), sa.UniqueConstraint("scope", "scope_id", "utility"),
        sa.CheckConstraint("scope IN ('meter','room','building','property')", name="scope"))

    op.create_table(
        "commands", _id(), _group(), _fk("property_id", "properties.id", index=True),
        _fk("meter_id", "meters.id", ondelete="CASCADE"), _fk("device_id", "devices.id", ondelete="CASCADE"),
        _fk("gateway_id", "gateways.id", ondelete="CASCADE"), sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("params", postgresql.JSONB(), nullable=False), sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False), sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False), sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("operator_id", sa.BigInteger()), sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False), sa.Column("expires_at", TS, nullable=False),
        sa.Column("enqueued_at", TS), sa.Column("sent_at", TS), sa.Column("done_at", TS),
        sa.CheckConstraint("state IN ('queued','sent','confirmed','failed','expired','cancelled')", name="state"))
    op.create_index("ix_commands_open", "commands", ["state", "created_at"],
                    postgresql_where=sa.text("state IN ('queued','sent')"))
    op.create_index("ix_commands_meter_created", "commands", ["meter_id", "created_at"])

    op.create_table(
        "prepaid_accounts", _id(), _group(), _fk("property_id", "properties.id", index=True),
        _fk("room_id", "rooms.id", True, ondelete="SET NULL", index=True),
        sa.Column("number", sa.String(40), nullable=False), sa.Column("customer_name", sa.String(100), nullable=False),
        sa.Column("phone", sa.String(32), nullable=False, index=True), sa.Column("status", sa.String(8), nullable=False),
        _fk("wallet_account_id", "ledger_accounts.id", unique=True),
        sa.Column("alarm1", MONEY, nullable=False), sa.Column("alarm2", MONEY, nullable=False),
        sa.Column("overdraft_limit", MONEY, nullable=False), sa.Column("alarm_level", sa.SmallInteger(), nullable=False),
        sa.Column("purchase_count", sa.Integer(), nullable=False), sa.Column("created_at", TS, nullable=False),
        sa.Column("opened_at", TS), sa.Column("closed_at", TS), sa.UniqueConstraint("group_id", "number"),
        sa.CheckConstraint("status IN ('preset','open','closed')", name="status"),
        sa.CheckConstraint("overdraft_limit >= 0", name="overdraft"))
    op.create_table(
        "prepaid_meter_state", _group(),
        sa.Column("meter_id", sa.BigInteger(), sa.ForeignKey("meters.id", ondelete="RESTRICT"), primary_key=True),
        _fk("account_id", "prepaid_accounts.id", index=True), _fk("property_id", "properties.id"),
        sa.Column("utility", sa.String(16), nullable=False), sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("last_ts", TS, nullable=False), sa.Column("last_total", USAGE),
        *[sa.Column(f"last_{r}", USAGE) for r in ("sharp", "peak", "flat", "valley")],
        sa.Column("cost_exact_total", sa.Numeric(), nullable=False), sa.Column("charged_total", MONEY, nullable=False),
        sa.Column("period_start", sa.Date()), sa.Column("period_usage", USAGE, nullable=False),
        sa.Column("meter_purchase_count", sa.Integer()), sa.Column("bound_at", TS, nullable=False))
    op.create_index("ix_prepaid_meter_state_active", "prepaid_meter_state", ["meter_id"],
                    postgresql_where=sa.text("active"))
    op.create_table(
        "prepaid_charges", _id(), _group(), _fk("meter_id", "meters.id"),
        _fk("account_id", "prepaid_accounts.id", index=True), _fk("transfer_id", "ledger_transfers.id", True, index=True),
        sa.Column("tariff_version_id", sa.BigInteger()), sa.Column("interval_start", TS, nullable=False),
        sa.Column("interval_end", TS, nullable=False), sa.Column("usage", USAGE, nullable=False),
        *[sa.Column(f"usage_{r}", USAGE) for r in ("sharp", "peak", "flat", "valley")],
        sa.Column("cost_exact", sa.Numeric(), nullable=False), sa.Column("amount", MONEY, nullable=False),
        sa.Column("note", sa.String(32), nullable=False), sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("meter_id", "interval_end"), sa.UniqueConstraint("meter_id", "interval_start"),
        sa.CheckConstraint("interval_end > interval_start", name="interval"))
    op.create_table(
        "prepaid_events", _id(), _group(), _fk("account_id", "prepaid_accounts.id", True, index=True),
        sa.Column("meter_id", sa.BigInteger(), index=True), sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("level", sa.SmallInteger()), sa.Column("balance", MONEY),
        sa.Column("detail", postgresql.JSONB(), nullable=False), sa.Column("at", TS, nullable=False))
    for table in ("prepaid_meter_state", "ledger_balances", "prepaid_accounts"):
        op.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")  # room for HOT updates every charging run
    for table in TENANT_TABLES:
        enable_tenant_rls(table)
    for table in APPEND_ONLY:
        mark_append_only(table)


def downgrade():
    for table in ("prepaid_events", "prepaid_charges", "prepaid_meter_state", "prepaid_accounts", "commands",
                  "tariff_assignments", "tariff_tiers", "tariff_periods", "tariff_versions", "tariffs",
                  "ledger_entries", "ledger_transfers", "ledger_balances", "ledger_accounts"):
        op.drop_table(table)
    op.execute("DROP SEQUENCE IF EXISTS ledger_receipt_seq")
    for statement in ddl.DOWNGRADE:
        op.execute(statement)
