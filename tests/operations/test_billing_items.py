"""Billing items: due dates over month ends and leap years, exactly-once charging, deduct / trip / bill."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import func, select

from meterhub.db import service_session
from meterhub.ledger import balance_of, check_ledger
from meterhub.ledger.models import Transfer
from meterhub.modules.billing_items.models import BillingCharge
from meterhub.modules.billing_items.schedule import due_dates
from meterhub.modules.billing_items.service import charge_due, create_item
from meterhub.modules.prepaid.models import PrepaidAccount

D = Decimal


def test_day_31_falls_on_each_month_end_including_leap_february():
    got = list(due_dates("monthly", 31, 1, date(2027, 12, 1), date(2028, 5, 31)))
    assert got == [date(2027, 12, 31), date(2028, 1, 31), date(2028, 2, 29), date(2028, 3, 31), date(2028, 4, 30),
                   date(2028, 5, 31)]
    assert list(due_dates("monthly", 30, 1, date(2026, 1, 1), date(2026, 3, 31)))[1] == date(2026, 2, 28)


def test_yearly_on_29_february_and_quarterly():
    assert list(due_dates("yearly", 29, 2, date(2027, 1, 1), date(2029, 12, 31))) == [
        date(2027, 2, 28), date(2028, 2, 29), date(2029, 2, 28)]
    assert list(due_dates("quarterly", 31, 2, date(2026, 1, 1), date(2026, 12, 31))) == [
        date(2026, 2, 28), date(2026, 5, 31), date(2026, 8, 31), date(2026, 11, 30)]
    assert list(due_dates("once", 1, 1, date(2026, 3, 5), date(2026, 3, 4))) == []
    assert list(due_dates("once", 1, 1, date(2026, 3, 5), date(2026, 12, 1))) == [date(2026, 3, 5)]
    assert list(due_dates("monthly", 15, 1, date(2026, 1, 20), date(2026, 4, 1), end=date(2026, 2, 28))) == [
        date(2026, 2, 15)]


def _wallets(s, site):
    return [balance_of(s, s.get(PrepaidAccount, a).wallet_account_id) for a in site.accounts]


def test_job_charges_each_due_date_exactly_once(site):
    with site.app.app_context(), service_session() as s:
        fixed = create_item(s, site.group_id, site.property_id, name="Service fee", rate="12.50", day=31,
                            start_date=date(2027, 12, 1), account_ids=site.accounts[:1], actor="t").id
        per_m2 = create_item(s, site.group_id, site.property_id, name="Property fee", rate="1.5", basis="per_m2",
                             category="property_fee", day=31, start_date=date(2027, 12, 1),
                             account_ids=site.accounts[1:], actor="t").id
        before = _wallets(s, site)
    now = datetime(2028, 3, 1, 12, tzinfo=UTC)  # 20:00 in Shanghai: Dec 31, Jan 31, Feb 29 are due
    with site.app.app_context(), service_session() as s:
        assert charge_due(s, now, group_id=site.group_id) == 3 + 6
    with site.app.app_context(), service_session() as s:  # the job runs again: nothing new
        assert charge_due(s, now, group_id=site.group_id) == 0
        dates = sorted(s.execute(select(BillingCharge.due_date).where(BillingCharge.item_id == fixed)).scalars())
        assert dates == [date(2027, 12, 31), date(2028, 1, 31), date(2028, 2, 29)]
        after = _wallets(s, site)
        # 12.50 × 3; rooms of 20 and 30 m² × 1.5 = 30.00 and 45.00, × 3 months
        assert [b - a for a, b in zip(after, before, strict=True)] == [D("37.50"), D("90.00"), D("135.00")]
        keys = set(s.execute(select(Transfer.idempotency_key).where(Transfer.kind == "fee",
                                                                    Transfer.group_id == site.group_id)).scalars())
        assert f"fee:{per_m2}:2028-02-29:{site.accounts[2]}" in keys and len(keys) == 9
        assert check_ledger(s, site.group_id).ok


def test_deduct_that_would_trip_is_billed_unless_the_item_may_trip(site):
    with site.app.app_context(), service_session() as s:
        create_item(s, site.group_id, site.property_id, name="Rent", rate="300.00", recurrence="once",
                    start_date=date(2026, 1, 5), account_ids=[site.accounts[0]], category="rent", actor="t")
        create_item(s, site.group_id, site.property_id, name="Rent (may trip)", rate="300.00", recurrence="once",
                    start_date=date(2026, 1, 5), account_ids=[site.accounts[1]], may_trip=True, actor="t")
    with site.app.app_context(), service_session() as s:
        charge_due(s, datetime(2026, 1, 6, tzinfo=UTC), group_id=site.group_id)
    with site.app.app_context(), service_session() as s:
        rows = {c.account_id: c for c in s.execute(select(BillingCharge).where(
            BillingCharge.account_id.in_(site.accounts[:2]))).scalars()}
        assert rows[site.accounts[0]].status == "billed" and "too low" in rows[site.accounts[0]].reason
        assert rows[site.accounts[1]].status == "deducted"
        tripped = s.get(PrepaidAccount, site.accounts[1])
        assert tripped.alarm_level == 3  # 200 − 300 = −100: the control loop trips it
        assert balance_of(s, tripped.wallet_account_id) == D("-100.00")
        assert s.execute(select(func.count()).select_from(BillingCharge).where(
            BillingCharge.account_id == site.accounts[0])).scalar_one() == 1


def test_charge_now_from_the_console_charges_what_is_due_once_and_says_so(site, client, operator):
    """Issue 21 item 5: a billing item is charged at once from its page, not at the next hourly job; a second
    click (or the job) finds nothing more to charge; another group's item answers 404."""
    from datetime import timedelta

    from meterhub.models import utcnow
    from tests.conftest import csrf_token

    start = utcnow().date() - timedelta(days=40)
    with site.app.app_context(), service_session() as s:
        item = create_item(s, site.group_id, site.property_id, name="Rent now", rate="10.00", recurrence="once",
                           day=1, start_date=start, account_ids=site.accounts[:2], actor="t").id
        before = _wallets(s, site)
    operator("group_admin")
    token = csrf_token(client, f"/billing-items/{item}")
    page = client.post(f"/billing-items/{item}/charge-now", data={"csrf_token": token}, follow_redirects=True)
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "Rent now: 2 charges made now" in text and "2 deducted" in text, text[-2000:]
    with site.app.app_context(), service_session() as s:
        assert [b - a for a, b in zip(_wallets(s, site), before, strict=True)] == [D("10.00"), D("10.00"), D(0)]
        assert charge_due(s, group_id=site.group_id) == 0  # the hourly job finds them made
    again = client.post(f"/billing-items/{item}/charge-now", data={"csrf_token": token}, follow_redirects=True)
    assert "nothing is due up to today" in again.get_data(as_text=True)


def test_charge_now_is_404_for_another_groups_item(client, operator, other_group):
    from tests.conftest import csrf_token

    operator("group_admin")
    token = csrf_token(client, "/billing-items/")
    item = other_group.operations["item_id"]
    assert client.post(f"/billing-items/{item}/charge-now", data={"csrf_token": token}).status_code == 404
