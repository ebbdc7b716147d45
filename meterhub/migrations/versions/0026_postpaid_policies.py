"""post-paid policy per property: the monthly bill run and the overdue policy (issue 21 item 4)

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07 21:15:00

``postpaid_policies`` (one row per property): ``bill_day`` (1–28: on that day the previous month's bills of the
property are made, NULL: no schedule), ``confirm_on_run`` (the run confirms the bills it makes), the overdue policy:
``remind_every_days`` (a reminder every N days while a bill is overdue), ``late_fee_daily_rate`` (a fraction of
what is outstanding, charged per overdue day) capped at ``late_fee_cap_rate`` (a fraction of the bill's own total),
``cutoff_days`` (switch the account's meters off after N days overdue; NULL: never). ``postpaid_bill_lines`` gains
kind ``late_fee`` lines (one per bill and day, ``fee_day``).
"""
import sqlalchemy as sa
from alembic import op

from meterhub.rls import enable_tenant_rls

revision = '0026'
down_revision = '0025'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "postpaid_policies",
        sa.Column("property_id", sa.BigInteger(), sa.ForeignKey("properties.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("group_id", sa.BigInteger(), sa.ForeignKey("groups.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("bill_day", sa.Integer(), nullable=True),
        sa.Column("confirm_on_run", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("remind_every_days", sa.Integer(), nullable=False, server_default="3"),
        sa.Column("late_fee_daily_rate", sa.Numeric(8, 6), nullable=False, server_default="0"),
        sa.Column("late_fee_cap_rate", sa.Numeric(8, 6), nullable=False, server_default="0"),
        sa.Column("cutoff_days", sa.Integer(), nullable=True),
        sa.Column("last_run_month", sa.Date(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("bill_day BETWEEN 1 AND 28", name="bill_day_range"),
        sa.CheckConstraint("remind_every_days BETWEEN 1 AND 90", name="remind_range"),
        sa.CheckConstraint("late_fee_daily_rate >= 0 AND late_fee_daily_rate <= 0.01", name="rate_range"),
        sa.CheckConstraint("late_fee_cap_rate >= 0 AND late_fee_cap_rate <= 1", name="cap_range"),
        sa.CheckConstraint("cutoff_days BETWEEN 1 AND 365", name="cutoff_range"),
    )
    enable_tenant_rls("postpaid_policies")
    op.add_column("postpaid_bill_lines", sa.Column("fee_day", sa.Date(), nullable=True))
    op.create_index("ux_postpaid_late_fee_day", "postpaid_bill_lines", ["bill_id", "fee_day"], unique=True,
                    postgresql_where=sa.text("fee_day IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ux_postpaid_late_fee_day", table_name="postpaid_bill_lines")
    op.drop_column("postpaid_bill_lines", "fee_day")
    op.drop_table("postpaid_policies")
