"""days of money left, alarm levels in days, dashboard rollups (issue 16 items 3 and 7)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 21:05:00

``prepaid_forecasts`` keeps each open account's latest projection (:mod:`meterhub.modules.prepaid.forecast`):
its cost curve, so that the days left for the balance of any later moment are read in SQL by
``meterhub_days_left`` without pricing again. ``prepaid_accounts.alarm1_days`` / ``alarm2_days`` are low-balance
alarm levels in days (NULL: money only). ``usage_property_daily`` (usage per property, utility and local day)
and ``usage_top_meters`` (the month's ten biggest meters per property and utility) are kept by the dashboard
rollup job from the usage rollups, so a dashboard over 100,000 meters reads a few hundred rows. Partial indexes
for the dashboard's counts (money in by time, offline meters, accounts by alarm level).
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from meterhub.rls import enable_tenant_rls

revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

DAYS_LEFT_FN = """
CREATE OR REPLACE FUNCTION meterhub_days_left(cum numeric[], ff numeric, elapsed numeric, available numeric)
RETURNS numeric LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
-- Days from ``elapsed`` days after the curve's start until ``available`` money is spent (as
-- meterhub.modules.prepaid.forecast.days_left_on_curve): cum[1] = 0, cum[i] = expected cost to the end of
-- slice i - 1; slice 1 lasts ff days, the others one day. NULL past the curve's end.
DECLARE
  n int := coalesce(array_length(cum, 1), 0);
  i int; lo numeric; hi numeric; spent numeric; target numeric;
BEGIN
  IF available IS NULL THEN RETURN NULL; END IF;
  IF available <= 0 THEN RETURN 0; END IF;
  IF n < 2 THEN RETURN NULL; END IF;
  spent := cum[n];
  FOR i IN 2..n LOOP
    lo := CASE WHEN i = 2 THEN 0 ELSE ff + (i - 3) END;
    hi := ff + (i - 2);
    IF elapsed <= hi THEN
      spent := cum[i - 1] + (cum[i] - cum[i - 1]) * (elapsed - lo) / (hi - lo);
      EXIT;
    END IF;
  END LOOP;
  target := spent + available;
  FOR i IN 2..n LOOP
    IF cum[i] >= target AND cum[i] > cum[i - 1] THEN
      lo := CASE WHEN i = 2 THEN 0 ELSE ff + (i - 3) END;
      hi := ff + (i - 2);
      RETURN round(greatest(0, lo + (hi - lo) * (target - cum[i - 1]) / (cum[i] - cum[i - 1]) - elapsed), 2);
    END IF;
  END LOOP;
  RETURN NULL;
END $$
"""


def _group() -> sa.Column:
    return sa.Column("group_id", sa.BigInteger(), sa.ForeignKey("groups.id", ondelete="CASCADE"), nullable=False)


def upgrade():
    op.add_column("prepaid_accounts", sa.Column("alarm1_days", sa.Numeric(5, 1), nullable=True))
    op.add_column("prepaid_accounts", sa.Column("alarm2_days", sa.Numeric(5, 1), nullable=True))
    op.create_check_constraint("alarm_days", "prepaid_accounts",
                               "(alarm1_days IS NULL OR alarm1_days > 0) AND (alarm2_days IS NULL OR alarm2_days > 0) "
                               "AND (alarm1_days IS NULL OR alarm2_days IS NULL OR alarm2_days <= alarm1_days)")
    op.create_table(
        "prepaid_forecasts",
        sa.Column("account_id", sa.BigInteger(), sa.ForeignKey("prepaid_accounts.id", ondelete="CASCADE"),
                  primary_key=True),
        _group(),
        sa.Column("property_id", sa.BigInteger(), sa.ForeignKey("properties.id", ondelete="CASCADE"), nullable=False),
        sa.Column("computed_at", TS, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("balance", sa.Numeric(14, 2), nullable=False),
        sa.Column("days_left", sa.Numeric(8, 2), nullable=True),
        sa.Column("first_fraction", sa.Numeric(), nullable=False),
        sa.Column("cum_cost", postgresql.ARRAY(sa.Numeric()), nullable=False),
        sa.Column("daily_cost", sa.Numeric(14, 2), nullable=True),
    )
    op.create_index("ix_prepaid_forecasts_group_id", "prepaid_forecasts", ["group_id"])
    op.create_index("ix_prepaid_forecasts_property", "prepaid_forecasts", ["property_id", "days_left"])
    enable_tenant_rls("prepaid_forecasts")
    op.execute(DAYS_LEFT_FN)
    op.create_table(
        "usage_property_daily", _group(),
        sa.Column("property_id", sa.BigInteger(), sa.ForeignKey("properties.id", ondelete="CASCADE"), nullable=False),
        sa.Column("utility", sa.String(16), nullable=False), sa.Column("day", sa.Date(), nullable=False),
        sa.Column("usage", sa.Numeric(18, 4), nullable=False), sa.Column("meters", sa.Integer(), nullable=False),
        sa.Column("computed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("property_id", "utility", "day"))
    op.create_index("ix_usage_property_daily_group_id", "usage_property_daily", ["group_id"])
    enable_tenant_rls("usage_property_daily")
    op.create_table(
        "usage_top_meters", _group(),
        sa.Column("property_id", sa.BigInteger(), sa.ForeignKey("properties.id", ondelete="CASCADE"), nullable=False),
        sa.Column("utility", sa.String(16), nullable=False), sa.Column("month", sa.Date(), nullable=False),
        sa.Column("rank", sa.SmallInteger(), nullable=False),
        sa.Column("meter_id", sa.BigInteger(), sa.ForeignKey("meters.id", ondelete="CASCADE"), nullable=False),
        sa.Column("usage", sa.Numeric(18, 4), nullable=False),
        sa.PrimaryKeyConstraint("property_id", "utility", "month", "rank"))
    op.create_index("ix_usage_top_meters_group_id", "usage_top_meters", ["group_id"])
    enable_tenant_rls("usage_top_meters")
    op.create_index("ix_ledger_transfers_money_in", "ledger_transfers", ["created_at"],
                    postgresql_where=sa.text("kind IN ('topup', 'refund', 'reversal')"))
    op.create_index("ix_meters_offline", "meters", ["property_id"], postgresql_where=sa.text("status = 'offline'"))
    op.create_index("ix_prepaid_accounts_level", "prepaid_accounts", ["property_id", "alarm_level"],
                    postgresql_where=sa.text("status = 'open'"))


def downgrade():
    op.drop_index("ix_prepaid_accounts_level", table_name="prepaid_accounts")
    op.drop_index("ix_meters_offline", table_name="meters")
    op.drop_index("ix_ledger_transfers_money_in", table_name="ledger_transfers")
    op.drop_table("usage_top_meters")
    op.drop_table("usage_property_daily")
    op.execute("DROP FUNCTION IF EXISTS meterhub_days_left(numeric[], numeric, numeric, numeric)")
    op.drop_table("prepaid_forecasts")
    op.drop_constraint("alarm_days", "prepaid_accounts", type_="check")
    op.drop_column("prepaid_accounts", "alarm2_days")
    op.drop_column("prepaid_accounts", "alarm1_days")
