"""Post-paid bills: usage × tariff + billed apportioned share + billed item; confirm, pay partly, overdue
with one reminder per day, pay in full; ledger; PDF text; Excel of unpaid bills."""

from __future__ import annotations

import io
from datetime import date
from decimal import Decimal

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader
from sqlalchemy import func, select

from meterhub.alarms.models import PortalMessage
from meterhub.db import service_session
from meterhub.errors import ValidationError
from meterhub.ledger import check_ledger
from meterhub.modules.apportion.posting import post_run
from meterhub.modules.billing_items.service import charge_due, create_item
from meterhub.modules.postpaid import service as postpaid
from meterhub.modules.postpaid.documents import bill_pdf, unpaid_xlsx
from meterhub.modules.postpaid.models import BillLine
from meterhub.modules.prepaid.models import MeterState

from .test_apportion import JAN, january, rule

D = Decimal


def test_bill_lifecycle_pdf_and_export(site):
    account = site.accounts[0]
    with site.app.app_context(), service_session() as s:
        postpaid.make_postpaid(s, site.group_id, account, due_days=10, actor="t")
        assert not s.get(MeterState, site.meters[0]).active  # no more real-time prepaid charging
        create_item(s, site.group_id, site.property_id, name="物业费 Property fee", rate="2.0", basis="per_m2",
                    start_date=date(2026, 1, 1), day=31, account_ids=[account], actor="t")
    january(site)  # the account's meter used 10 kWh in January
    rule_id = rule(site, "ratio", 2)
    with site.app.app_context(), service_session() as s:
        post_run(s, site.group_id, rule_id, *JAN, actor="t")  # post-paid account: its 33.33 is billed
        from datetime import UTC, datetime

        charge_due(s, datetime(2026, 1, 31, 12, tzinfo=UTC), group_id=site.group_id)  # 10 m² × 2.0 = 20.00
    with site.app.app_context(), service_session() as s:
        bill = postpaid.generate_bill(s, site.group_id, account, date(2026, 1, 1), date(2026, 2, 1), actor="t")
        kinds = {line.kind: line.amount for line in s.execute(select(BillLine).where(BillLine.bill_id == bill.id))
                 .scalars()}
        assert kinds == {"usage": D("10.00"), "apportion": D("33.33"), "item": D("20.00")}
        assert bill.total == D("63.33") and bill.status == "draft"
        bill_id, number = bill.id, bill.number
        with pytest.raises(ValidationError, match="already has a bill"):
            postpaid.generate_bill(s, site.group_id, account, date(2026, 1, 15), date(2026, 2, 15), actor="t")
    with site.app.app_context(), service_session() as s:
        bill = postpaid.confirm_bill(s, site.group_id, bill_id, today=date(2026, 2, 1), actor="t")
        assert bill.status == "confirmed" and bill.due_date == date(2026, 2, 11)
        postpaid.record_payment(s, site.group_id, bill_id, "30.00", "cash", "pay-1", actor="t")
        postpaid.record_payment(s, site.group_id, bill_id, "30.00", "cash", "pay-1", actor="t")  # a retry
        assert bill.status == "partially_paid" and bill.paid == D("30.00")
        with pytest.raises(ValidationError, match="too much"):
            postpaid.record_payment(s, site.group_id, bill_id, "40.00", "cash", "pay-2", actor="t")
    with site.app.app_context(), service_session() as s:
        assert postpaid.mark_overdue(s, date(2026, 2, 12), group_id=site.group_id) == [bill_id]
        postpaid.mark_overdue(s, date(2026, 2, 12), group_id=site.group_id)  # same day: no second reminder
        assert s.execute(select(func.count()).select_from(PortalMessage).where(
            PortalMessage.account_id == account)).scalar_one() == 1
        sheet = load_workbook(io.BytesIO(unpaid_xlsx(s, lambda q: q.where(
            __import__("meterhub.modules.postpaid.models", fromlist=["Bill"]).Bill.group_id == site.group_id))))
        rows = list(sheet["Unpaid bills"].iter_rows(values_only=True))
        assert rows[0][:3] == ("Bill number", "Account", "Customer")
        assert rows[1][0] == number and rows[1][5] == "Overdue" and rows[1][8] == 33.33
        bill = postpaid.load_bill(s, site.group_id, bill_id)
        text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(bill_pdf(s, bill))).pages)
        assert number in text and "63.33" in text and "33.33" in text and "Tenant 0" in text
    with site.app.app_context(), service_session() as s:
        bill = postpaid.record_payment(s, site.group_id, bill_id, "33.33", "online", "pay-3", actor="t")
        assert bill.status == "paid" and bill.outstanding == 0
        assert check_ledger(s, site.group_id).ok
