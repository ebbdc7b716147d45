"""Issue 21 item 4: a month's post-paid bills for a property (or a building) in one run with a preview, from the
service, the console and the CLI, on a monthly schedule; the overdue policy (reminders, a late fee per day with a
cap, a cut-off after N days); invalid due days and policies refused with a message."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from meterhub.alarms.models import PortalMessage
from meterhub.commands.models import Command
from meterhub.db import service_session
from meterhub.errors import ValidationError
from meterhub.ledger import check_ledger
from meterhub.modules.billing_items.service import charge_due, create_item
from meterhub.modules.postpaid import service as postpaid
from meterhub.modules.postpaid.models import Bill, BillLine, PostpaidPolicy
from meterhub.modules.postpaid.overdue import save_policy
from meterhub.modules.postpaid.runs import bill_run, scheduled_runs
from tests.conftest import csrf_token

from .test_apportion import january

D = Decimal


def _postpaid_with_rent(site) -> None:
    """Two post-paid accounts (due in 10 days), a monthly rent of 100.00 for both, January's usage."""
    with site.app.app_context(), service_session() as s:
        for account in site.accounts[:2]:
            postpaid.make_postpaid(s, site.group_id, account, due_days=10, actor="t")
        create_item(s, site.group_id, site.property_id, name="Rent", rate="100.00", category="rent", day=31,
                    start_date=date(2026, 1, 1), account_ids=site.accounts[:2], actor="t")
        charge_due(s, datetime(2026, 1, 31, 12, tzinfo=UTC), group_id=site.group_id)
    january(site)  # the accounts' meters used 10 and 20 kWh (1.00/kWh)


def test_preview_keeps_nothing_then_the_run_bills_every_post_paid_account_once(site):
    _postpaid_with_rent(site)
    with site.app.app_context(), service_session() as s:
        preview = bill_run(s, site.group_id, site.property_id, date(2026, 1, 1), preview=True, actor="amy")
        assert [(r.total, r.lines, r.bill_id, r.problem) for r in preview] == [
            (D("110.00"), 2, None, ""), (D("120.00"), 2, None, "")]
        assert s.execute(select(func.count()).select_from(Bill).where(Bill.group_id == site.group_id)).scalar() == 0
    with site.app.app_context(), service_session() as s:
        again = bill_run(s, site.group_id, site.property_id, date(2026, 1, 1), preview=True, actor="amy")
        assert [r.total for r in again] == [D("110.00"), D("120.00")]  # the preview left the charges unbilled
        made = bill_run(s, site.group_id, site.property_id, date(2026, 1, 1), confirm=True, actor="amy",
                        today=date(2026, 2, 1))
        assert [(r.total, r.status) for r in made] == [(D("110.00"), "confirmed"), (D("120.00"), "confirmed")]
        assert all(r.bill_id for r in made)
    with site.app.app_context(), service_session() as s:
        twice = bill_run(s, site.group_id, site.property_id, date(2026, 1, 1), actor="amy")
        assert all(r.problem.startswith("already billed") for r in twice)
        assert s.get(Bill, made[0].bill_id).due_date == date(2026, 2, 11)
        assert check_ledger(s, site.group_id).ok


def test_monthly_schedule_bills_the_previous_month_once_on_its_day(site):
    _postpaid_with_rent(site)
    with site.app.app_context(), service_session() as s:
        save_policy(s, site.group_id, site.property_id, bill_day="3", confirm_on_run=False, remind_every_days="3",
                    late_fee_daily_rate="0", late_fee_cap_rate="0", cutoff_days="", actor="t")
        assert scheduled_runs(s, datetime(2026, 2, 2, 12, tzinfo=UTC)) == 0  # before the bill day
        assert scheduled_runs(s, datetime(2026, 2, 3, 12, tzinfo=UTC)) == 2
        assert scheduled_runs(s, datetime(2026, 2, 4, 12, tzinfo=UTC)) == 0  # once a month
        statuses = s.execute(select(Bill.status, Bill.period_start).where(Bill.group_id == site.group_id)).all()
        assert statuses == [("draft", date(2026, 1, 1))] * 2


def test_overdue_policy_reminds_charges_a_capped_daily_fee_and_cuts_off(site):
    _postpaid_with_rent(site)
    with site.app.app_context(), service_session() as s:
        save_policy(s, site.group_id, site.property_id, bill_day="", confirm_on_run=True, remind_every_days="2",
                    late_fee_daily_rate="0.01", late_fee_cap_rate="0.02", cutoff_days="3", actor="t")
        made = bill_run(s, site.group_id, site.property_id, date(2026, 1, 1), confirm=True, actor="t",
                        today=date(2026, 2, 1))
        bill_id = made[0].bill_id  # 110.00 due on 11 February
    for day in range(12, 17):  # overdue from the 12th
        with site.app.app_context(), service_session() as s:
            postpaid.mark_overdue(s, date(2026, 2, day), group_id=site.group_id)
            postpaid.mark_overdue(s, date(2026, 2, day), group_id=site.group_id)  # the hourly job again
    with site.app.app_context(), service_session() as s:
        bill = s.get(Bill, bill_id)
        fees = [line.amount for line in s.execute(select(BillLine).where(BillLine.bill_id == bill_id,
                                                                         BillLine.kind == "late_fee")
                                                  .order_by(BillLine.fee_day)).scalars()]
        assert fees == [D("1.10"), D("1.10")]  # 1 % of 110.00 a day, capped at 2 % = 2.20
        assert bill.total == D("112.20") and bill.status == "overdue"
        reminders = s.execute(select(func.count()).select_from(PortalMessage).where(
            PortalMessage.account_id == bill.account_id)).scalar()
        assert reminders == 3  # days 1, 3 and 5 overdue (every 2 days)
        commands = s.execute(select(Command.kind, Command.params, Command.source).where(
            Command.meter_id == site.meters[0], Command.source == "postpaid")).all()
        assert commands == [("switch", {"closed": False}, "postpaid")]  # cut off once, after 3 days
        assert check_ledger(s, site.group_id).ok


@pytest.mark.parametrize("field, value", [("bill_day", "31"), ("late_fee_daily_rate", "0.5"),
                                          ("cutoff_days", "-1"), ("remind_every_days", "x")])
def test_invalid_policy_values_are_refused_with_a_message(site, field, value):
    values = dict(bill_day="1", confirm_on_run=True, remind_every_days="3", late_fee_daily_rate="0",
                  late_fee_cap_rate="0", cutoff_days="")
    values[field] = value
    with site.app.app_context(), service_session() as s:
        with pytest.raises(ValidationError, match=field):
            save_policy(s, site.group_id, site.property_id, actor="t", **values)
        assert s.get(PostpaidPolicy, site.property_id) is None


def test_invalid_due_days_are_refused_with_a_message(site, client, operator):
    operator("group_admin")
    token = csrf_token(client, "/bills/")
    for bad in ("abc", "-1", "121"):
        page = client.post("/bills/generate", data={"csrf_token": token, "account_id": site.accounts[0],
                                                     "make_postpaid": "1", "due_days": bad, "start": "2026-01-01",
                                                     "end": "2026-02-01"}, follow_redirects=True)
        assert "Due days must be a whole number from 0 to 120" in page.get_data(as_text=True) or \
            "due days must be a whole number" in page.get_data(as_text=True), bad


def test_console_preview_and_run_and_cli(site, client, operator, runner):
    _postpaid_with_rent(site)
    operator("group_admin")
    token = csrf_token(client, "/bills/")
    form = {"csrf_token": token, "property_id": site.property_id, "month": "2026-01"}
    preview = client.post("/bills/run", data={**form, "preview": "1"})
    text = preview.get_data(as_text=True)
    assert preview.status_code == 200 and "110.00" in text and "120.00" in text
    with site.app.app_context(), service_session() as s:
        assert s.execute(select(func.count()).select_from(Bill).where(Bill.group_id == site.group_id)).scalar() == 0
    done = client.post("/bills/run", data={**form, "confirm": "1"}, follow_redirects=True)
    assert "2 bills made" in done.get_data(as_text=True)
    bad = client.post("/bills/run", data={**form, "month": "2026-13"}, follow_redirects=True)
    assert "YYYY-MM" in bad.get_data(as_text=True)
    result = runner.invoke(args=["postpaid", "run", "--property-id", str(site.property_id), "--month", "2026-01",
                                 "--preview"])
    assert result.exit_code == 0, result.output
    assert result.output.count("already billed") == 2 and "preview, nothing made" in result.output
    bad = runner.invoke(args=["postpaid", "run", "--property-id", str(site.property_id), "--month", "January"])
    assert bad.exit_code != 0 and "YYYY-MM" in bad.output


def test_policy_page_saves_and_a_cut_off_asks_for_confirmation_first(site, client, operator):
    operator("group_admin")
    url = f"/bills/policy/{site.property_id}"
    assert client.get(url).status_code == 200
    token = csrf_token(client, url)
    form = {"csrf_token": token, "bill_day": "5", "confirm_on_run": "1", "remind_every_days": "3",
            "late_fee_daily_rate": "0.0005", "late_fee_cap_rate": "0.1", "cutoff_days": "30"}
    asked = client.post(url, data=form)
    assert asked.status_code == 200 and "confirmed" in asked.get_data(as_text=True)  # the confirmation page
    with site.app.app_context(), service_session() as s:
        assert s.get(PostpaidPolicy, site.property_id) is None  # nothing saved before the confirmation
    saved = client.post(url, data={**form, "confirmed": "yes"}, follow_redirects=True)
    assert saved.status_code == 200
    with site.app.app_context(), service_session() as s:
        policy = s.get(PostpaidPolicy, site.property_id)
        assert (policy.bill_day, policy.cutoff_days, policy.late_fee_daily_rate) == (5, 30, D("0.0005"))
    bad = client.post(url, data={**form, "cutoff_days": "", "bill_day": "31"}, follow_redirects=True)
    assert "bill_day" in bad.get_data(as_text=True)
    assert client.get("/bills/policy/999999").status_code == 404
