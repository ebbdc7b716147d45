"""Every deduction explained to the tenant (issue 21 item 7): a public-area share, a top-up, a billing item and a
reversal appear in the portal's money history with a one-line reason in the tenant's language."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from meterhub.db import service_session
from meterhub.modules.apportion.posting import post_run, reverse_run
from meterhub.modules.apportion.rules import create_rule
from meterhub.modules.apportion.statement import month_bounds
from meterhub.modules.billing_items.service import charge_due, create_item
from meterhub.modules.prepaid import cashier
from meterhub.tariffs import service as tariffs
from meterhub.tariffs.pricing import PlanVersion
from tests.api.world import open_site
from tests.prepaid.conftest import add_meters, write_readings

from .conftest import sign_in_with_code


def _history(page: str) -> str:
    section = re.search(r'<section class="card" id="history">(.*?)</section>', page, re.S)
    assert section, "no history section on the account page"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section.group(1)))


@pytest.fixture()
def shared(app, group):  # noqa: ANN001, ANN201
    """An open account that paid a ¥24.79 public-area share for January 2026, a top-up and a monthly fee."""
    site = open_site(app, group)
    start, end = month_bounds("Asia/Shanghai", 2026, 1)
    with app.app_context(), service_session() as s:
        cashier.topup(s, group.group_id, site.account_id, "100.00", "cash", uuid.uuid4().hex, actor="t")
        plan = tariffs.create_tariff(s, group.group_id, f"Public {uuid.uuid4().hex[:6]}")
        tariffs.add_version(s, plan, datetime(2020, 1, 1, tzinfo=UTC),
                            PlanVersion("flat", tariffs.flat_prices(Decimal("0.67"))))
        parent = add_meters(s, group.group_id, group.property_id, group.gateway_id, None, 1)[0]
        write_readings(s, group.group_id, [(parent, start - timedelta(hours=1), Decimal("0")),
                                           (parent, end, Decimal("37"))])  # 37 kWh × 0.67 = 24.79
        from meterhub.modules.prepaid.models import PrepaidAccount

        s.get(PrepaidAccount, site.account_id).opened_at = start - timedelta(days=1)
        rule = create_rule(s, group.group_id, group.property_id, name="走廊照明", parent_meter_id=parent,
                           sub_meter_ids=[], method="ratio", tariff_id=plan.id, members=[(site.account_id, "1")],
                           actor="t")
        run = post_run(s, group.group_id, rule.id, start, end, actor="t")
        item = create_item(s, group.group_id, group.property_id, name="物业费", rate="12.00",
                           start_date=date.today().replace(day=1), account_ids=[site.account_id], actor="t")
        charge_due(s, group_id=group.group_id)
    return site, run.id, item.id


def test_tenant_sees_the_public_area_share_with_its_reason_in_chinese(app, client, group, codes, shared):
    site, _run, _item = shared
    sign_in_with_code(client, codes, site.phone)
    page = client.get(f"/portal/a/{site.account_number}", headers={"Accept-Language": "zh-CN"})
    history = _history(page.get_data(as_text=True))
    assert "−¥24.79" in history, history
    assert "公摊费用 走廊照明 2026-01-01–2026-01-31" in history, history  # the rule and its period
    assert "按固定比例" in history or "比例" in history, history  # why this account pays: its ratio
    assert "+¥100.00" in history and "现金" in history, history  # the top-up and its channel
    assert "物业费" in history and "−¥12.00" in history, history  # the billing item
    assert "Public-area" not in history and "ratio" not in history and "due" not in history


def test_the_same_history_reads_in_english_and_shows_a_reversal(app, client, group, codes, shared):
    site, run_id, _item = shared
    with app.app_context(), service_session() as s:
        reverse_run(s, group.group_id, run_id, "wrong meter", actor="t")
    sign_in_with_code(client, codes, site.phone)
    page = client.get(f"/portal/a/{site.account_number}", headers={"Accept-Language": "en"})
    history = _history(page.get_data(as_text=True))
    assert "Public-area share (走廊照明) 2026-01-01–2026-01-31" in history, history
    assert "Public-area share reversed: wrong meter" in history and "+¥24.79" in history, history


def test_an_alarm_message_reads_in_the_tenants_language(app, client, group, codes):
    """The portal notifier keeps the default template as a message: the tenant reads it in their language."""
    from meterhub.alarms.dispatch import plan
    from meterhub.alarms.engine import raise_alarm
    from meterhub.alarms.models import NotifierConfig, PortalMessage
    from meterhub.models import utcnow

    site = open_site(app, group)
    with app.app_context(), service_session() as s:
        s.add(NotifierConfig(group_id=group.group_id, notifier="portal", name="门户", kinds=["low_balance_1"]))
        s.flush()
        alarm = raise_alarm(s, group.group_id, "low_balance_1", account_id=site.account_id,
                            detail={"balance": "8.50"})
        plan(s, alarm, utcnow())
        assert s.execute(select(PortalMessage).where(PortalMessage.account_id == site.account_id)).scalar_one()
    sign_in_with_code(client, codes, site.phone)
    url = f"/portal/a/{site.account_number}"
    zh = client.get(url, headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    en = client.get(url, headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "已低于报警1，请及时充值" in zh and "8.50" in zh and "below alarm level 1" not in zh
    assert "is below alarm level 1. Please top up." in en and "请及时充值" not in en
