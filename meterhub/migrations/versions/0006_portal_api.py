"""portal users and invitations, API tokens, payment channels/orders/callbacks, sandbox trades

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from meterhub.rls import enable_tenant_rls, mark_append_only

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TENANT_TABLES = ("portal_users", "portal_memberships", "portal_invitations", "api_tokens", "payment_channels",
                 "payment_orders", "payment_notifications", "payment_sandbox_trades")
TS = sa.DateTime(timezone=True)
MONEY = sa.Numeric(14, 2)
# Look-ups that must find a row's group before the group is known (SECURITY DEFINER, owned by the
# service role through ensure_grants, EXECUTE granted to the app role).
LOOKUPS = {
    "meterhub_portal_lookup(p_phone text)": ("TABLE(portal_user_id bigint, group_id bigint)",
                                             "SELECT id, group_id FROM portal_users WHERE phone = p_phone "
                                             "AND active ORDER BY id"),
    "meterhub_portal_invitation_lookup(p_phone text)": (
        "TABLE(invitation_id bigint, group_id bigint)",
        "SELECT id, group_id FROM portal_invitations WHERE phone = p_phone AND accepted_at IS NULL "
        "AND revoked_at IS NULL AND expires_at > now() ORDER BY id"),
    "meterhub_portal_account_lookup(p_phone text)": (
        "TABLE(account_id bigint, group_id bigint)",
        "SELECT id, group_id FROM prepaid_accounts WHERE phone = p_phone AND status <> 'closed' ORDER BY id"),
    "meterhub_api_token_lookup(p_hash text)": ("TABLE(token_id bigint, group_id bigint)",
                                               "SELECT id, group_id FROM api_tokens WHERE token_hash = p_hash"),
    "meterhub_payment_channel_lookup(p_key text)": ("TABLE(channel_id bigint, group_id bigint)",
                                                    "SELECT id, group_id FROM payment_channels "
                                                    "WHERE notify_key = p_key"),
}


def _id():
    return sa.Column("id", sa.BigInteger(), primary_key=True)


def _group():
    return sa.Column("group_id", sa.BigInteger(), sa.ForeignKey("groups.id", ondelete="CASCADE"), nullable=False,
                     index=True)


def _fk(name, table, ondelete="CASCADE", nullable=False):
    return sa.Column(name, sa.BigInteger(), sa.ForeignKey(f"{table}.id", ondelete=ondelete), nullable=nullable,
                     index=True)


def _str(name, length, nullable=False):
    return sa.Column(name, sa.String(length), nullable=nullable)


def upgrade():
    op.create_table(
        "portal_users", _id(), _group(), _str("phone", 32), _str("name", 100), _str("password_hash", 255, True),
        sa.Column("active", sa.Boolean(), nullable=False), _str("locale", 10, True),
        sa.Column("created_at", TS, nullable=False), sa.Column("last_login_at", TS),
        sa.UniqueConstraint("group_id", "phone"))
    op.create_index("ix_portal_users_phone", "portal_users", ["phone"])
    op.create_table(
        "portal_memberships", _id(), _group(), _fk("portal_user_id", "portal_users"),
        _fk("account_id", "prepaid_accounts"), _str("role", 8), sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("portal_user_id", "account_id"), sa.CheckConstraint("role IN ('owner','staff')", "role"))
    op.create_table(
        "portal_invitations", _id(), _group(), _fk("account_id", "prepaid_accounts"), _str("phone", 32),
        _str("role", 8), _str("invited_by", 100), sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False), sa.Column("accepted_at", TS), sa.Column("revoked_at", TS),
        sa.CheckConstraint("role IN ('owner','staff')", "role"))
    op.create_index("ix_portal_invitations_phone", "portal_invitations", ["phone"])
    op.create_table(
        "api_tokens", _id(), _group(), _fk("operator_id", "operators"), _str("name", 100),
        sa.Column("prefix", sa.String(16), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", postgresql.JSONB(), nullable=False), sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS), sa.Column("last_used_at", TS), sa.Column("revoked_at", TS),
        _str("revoked_by", 100))
    op.create_table(
        "payment_channels", _id(), _group(), _str("provider", 32), _str("name", 100),
        sa.Column("notify_key", sa.String(64), nullable=False, unique=True),
        sa.Column("settings", postgresql.JSONB(), nullable=False), sa.Column("secrets", postgresql.JSONB(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False), sa.Column("created_at", TS, nullable=False))
    op.create_table(
        "payment_orders", _id(), _group(), _fk("property_id", "properties", "RESTRICT"),
        _fk("account_id", "prepaid_accounts", "RESTRICT"), _fk("channel_id", "payment_channels", "RESTRICT"),
        sa.Column("out_trade_no", sa.String(32), nullable=False, unique=True),
        sa.Column("amount", MONEY, nullable=False), _str("currency", 3), _str("state", 12),
        _str("provider_txn_id", 64, True),
        sa.Column("transfer_id", sa.BigInteger(), sa.ForeignKey("ledger_transfers.id", ondelete="RESTRICT")),
        sa.Column("portal_user_id", sa.BigInteger()), sa.Column("pay_url", sa.Text(), nullable=False),
        sa.Column("detail", postgresql.JSONB(), nullable=False), sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False), sa.Column("paid_at", TS),
        sa.UniqueConstraint("channel_id", "provider_txn_id"),
        sa.CheckConstraint("amount > 0", "amount_positive"),
        sa.CheckConstraint("state IN ('created','paid','expired','disputed','unapplied')", "state"))
    op.create_table(
        "payment_notifications", _id(), _group(), _fk("channel_id", "payment_channels"),
        sa.Column("order_id", sa.BigInteger(), index=True), _str("outcome", 16), _str("provider_txn_id", 64),
        _str("message", 500), _str("body_sha256", 64), _str("remote_addr", 64),
        sa.Column("received_at", TS, nullable=False))
    op.create_table(
        "payment_sandbox_trades", _id(), _group(), _fk("channel_id", "payment_channels"),
        sa.Column("txn_id", sa.String(64), nullable=False, unique=True), _str("out_trade_no", 32),
        sa.Column("amount", MONEY, nullable=False), _str("currency", 3), _str("state", 12),
        sa.Column("paid_at", TS, nullable=False))
    op.create_index("ix_payment_sandbox_trades_out_trade_no", "payment_sandbox_trades", ["out_trade_no"])
    for table in TENANT_TABLES:
        enable_tenant_rls(table)
    mark_append_only("payment_notifications")
    for signature, (returns, body) in LOOKUPS.items():
        op.execute(f"CREATE FUNCTION {signature} RETURNS {returns} LANGUAGE sql STABLE SECURITY DEFINER "
                   f"SET search_path = public, pg_temp AS $$ {body} $$")
        op.execute(f"REVOKE ALL ON FUNCTION {signature.split('(')[0]}(text) FROM PUBLIC")


def downgrade():
    for signature in LOOKUPS:
        op.execute(f"DROP FUNCTION IF EXISTS {signature.split('(')[0]}(text)")
    for table in reversed(TENANT_TABLES):
        op.drop_table(table)
