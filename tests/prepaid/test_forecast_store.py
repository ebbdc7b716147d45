"""Days left from stored readings (rollups → forecast → prepaid_forecasts), the SQL look-up agreeing with Python,
and a low-balance alarm level in days: an account crossing it raises the alarm (issue 16 item 7)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text

from meterhub.alarms.models import Alarm
from meterhub.alarms.sources import apply_level
from meterhub.db import service_session
from meterhub.errors import ValidationError
from meterhub.models import utcnow
from meterhub.modules.prepaid import accounts, cashier, forecast_store
from meterhub.modules.prepaid.alarm_levels import set_alarm_levels
from meterhub.modules.prepaid.forecast import days_left_on_curve
from meterhub.modules.prepaid.models import PrepaidAccount, PrepaidEvent, PrepaidForecast
from meterhub.timeseries.rollups import refresh_rollups

from tests.portal.conftest import codes  # noqa: F401  (the portal's sign-in codes fixture)

from .conftest import write_readings

pytestmark = pytest.mark.plain_postgres  # rollups refreshed by hand
ZONE = ZoneInfo("Asia/Shanghai")


def _ten_kwh_a_day(world, meter_id: int, days: int = 10) -> None:
    """A reading at each local midnight of the last ``days`` days, 10 kWh apart."""
    today = utcnow().astimezone(ZONE).date()
    rows = [(meter_id, datetime.combine(today - timedelta(days=days - i), datetime.min.time(), ZONE), D(10 * i))
            for i in range(days + 1)]
    with world.app.app_context(), service_session() as s:
        write_readings(s, world.group_id, rows)
    with world.app.app_context(), service_session() as s:
        refresh_rollups(s, utcnow() - timedelta(hours=1), [meter_id])


def _account(world, meter_id: int, topup: str) -> int:
    with world.app.app_context(), service_session() as s:
        acc = accounts.create_account(s, world.group_id, world.property_id, [meter_id], customer_name="Li Lei",
                                      alarm1="5.00", alarm2="1.00", actor="t")
        cashier.topup(s, world.group_id, acc.id, topup, "cash", f"f-{acc.id}", actor="t")
        return acc.id


def test_forecast_from_the_rollups_and_the_sql_lookup(world):
    meter_id = world.meters[0]
    _ten_kwh_a_day(world, meter_id)
    account_id = _account(world, meter_id, "45.00")
    with world.app.app_context(), service_session() as s:
        assert forecast_store.refresh(s, [account_id]) == 1
    with world.app.app_context(), service_session() as s:
        stored = s.get(PrepaidForecast, account_id)
        assert stored.status == "ok" and stored.days_left == D("4.50")  # 45.00 at 10.00 a day
        assert stored.daily_cost == D("10.00") and stored.property_id == world.property_id
        # the SQL look-up (room monitor, dashboards, alarm levels) says what Python says, for other balances too
        for elapsed, available in ((D("0"), D("45")), (D("0.3"), D("12.5")), (D("2"), D("100")), (D("1"), D("0"))):
            sql = s.execute(text("SELECT meterhub_days_left(cum_cost, first_fraction, :e, :a) FROM prepaid_forecasts "
                                 "WHERE account_id = :id"), {"e": elapsed, "a": available, "id": account_id}).scalar()
            assert sql == days_left_on_curve(stored.cum_cost, stored.first_fraction, elapsed, available)
        now = forecast_store.current(s, account_id, D("45.00"), D("0"))
        assert now.status == "ok" and abs(now.days - D("4.5")) <= D("0.01")


def test_not_enough_usage_yet(world):
    meter_id = world.meters[1]
    _ten_kwh_a_day(world, meter_id, days=2)  # two days of history
    account_id = _account(world, meter_id, "45.00")
    with world.app.app_context(), service_session() as s:
        forecast_store.refresh(s, [account_id])
        assert s.get(PrepaidForecast, account_id).status == "no_usage"
        assert forecast_store.current(s, account_id, D("45.00"), D("0")).days is None


def test_alarm_level_in_days_raises_the_alarm(world):
    meter_id = world.meters[2]
    _ten_kwh_a_day(world, meter_id)
    account_id = _account(world, meter_id, "45.00")  # 4.5 days left
    with world.app.app_context(), service_session() as s:
        forecast_store.refresh(s, [account_id])
        acc = s.get(PrepaidAccount, account_id)
        with pytest.raises(ValidationError):
            set_alarm_levels(s, acc, alarm1="5.00", alarm2="1.00", alarm1_days="2", alarm2_days="3", actor="t")
        with pytest.raises(ValidationError):
            set_alarm_levels(s, acc, alarm1="5.00", alarm2="1.00", alarm1_days="abc", actor="t")
    with world.app.app_context(), service_session() as s:
        acc = s.get(PrepaidAccount, account_id)
        set_alarm_levels(s, acc, alarm1="5.00", alarm2="1.00", alarm1_days="4", alarm2_days="1.5", actor="t")
        assert acc.alarm_level == 0  # 4.5 days > 4 days, 45.00 > 5.00
    with world.app.app_context(), service_session() as s:
        # a refund of 10.00 leaves 35.00: 3.5 days from the stored curve, no new projection needed
        cashier.refund(s, world.group_id, account_id, "10.00", "cash", f"r-{account_id}", reason="t", actor="t")
        assert s.get(PrepaidAccount, account_id).alarm_level == 1
    with world.app.app_context(), service_session() as s:
        cashier.refund(s, world.group_id, account_id, "22.00", "cash", f"r2-{account_id}", reason="t", actor="t")
        assert s.get(PrepaidAccount, account_id).alarm_level == 2  # 13.00: 1.3 days ≤ 1.5
        kinds = s.execute(select(PrepaidEvent.kind).where(PrepaidEvent.account_id == account_id)
                          .order_by(PrepaidEvent.id)).scalars().all()
        assert kinds[-2:] == ["alarm1", "alarm2"]
    with world.app.app_context(), service_session() as s:
        # what the alarm source does with each event (sources.from_prepaid_events reads them once no older
        # transaction is running anywhere on the server, which on a shared test server may take a while)
        for e in s.execute(select(PrepaidEvent).where(PrepaidEvent.account_id == account_id)
                           .order_by(PrepaidEvent.id)).scalars():
            apply_level(s, e.group_id, account_id, e.level, e.balance, e.at)
    with world.app.app_context(), service_session() as s:
        open_kinds = s.execute(select(Alarm.kind).where(Alarm.account_id == account_id,
                                                        Alarm.state == "active")).scalars().all()
        assert open_kinds == ["low_balance_2"]
    with world.app.app_context(), service_session() as s:  # money only again: back to normal
        set_alarm_levels(s, s.get(PrepaidAccount, account_id), alarm1="5.00", alarm2="1.00", actor="t")
        assert s.get(PrepaidAccount, account_id).alarm_level == 0


def test_portal_home_says_about_how_many_days_are_left(world, client, codes):  # noqa: F811
    from tests.portal.conftest import sign_in_with_code

    meter_id = world.meters[0]
    _ten_kwh_a_day(world, meter_id)
    phone = "1390000" + str(meter_id).zfill(4)[-4:]
    with world.app.app_context(), service_session() as s:
        acc = accounts.create_account(s, world.group_id, world.property_id, [meter_id], customer_name="Han Mei",
                                      phone=phone, actor="t")
        cashier.topup(s, world.group_id, acc.id, "45.00", "cash", f"p-{acc.id}", actor="t")
        number = acc.number
        forecast_store.refresh(s, [acc.id])
    sign_in_with_code(client, codes, phone)
    page = client.get(f"/portal/a/{number}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "about 4 days left" in page
    page = client.get(f"/portal/a/{number}", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "大约还剩 4 天" in page
