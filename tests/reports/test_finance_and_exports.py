"""Finance reports from the ledger, the xlsx export through rq (cell by cell), scope and isolation."""

from __future__ import annotations

import io
from datetime import date, timedelta
from decimal import Decimal

from openpyxl import load_workbook
from sqlalchemy import text

from meterhub.db import service_session
from meterhub.ledger import run_money_transaction
from meterhub.models import utcnow
from meterhub.modules.prepaid import cashier
from meterhub.reports.filters import ReportFilter
from meterhub.reports.finance import arrears_rows, revenue_rows, sales_rows
from tests.alarms.conftest import run_jobs
from tests.alarms.helpers import make_site
from tests.conftest import csrf_token

D = Decimal


def _money(site):
    with site.app.app_context(), service_session() as s:
        r1 = run_money_transaction(s, lambda s: cashier.topup(s, site.group_id, site.account_id, "100.00", "cash",
                                                              "k1", actor="alice"))
        run_money_transaction(s, lambda s: cashier.topup(s, site.group_id, site.account_id, "50.00", "online",
                                                         "k2", actor="bob"))
        run_money_transaction(s, lambda s: cashier.refund(s, site.group_id, site.account_id, "30.00", "cash", "k3",
                                                          actor="alice"))
        run_money_transaction(s, lambda s: cashier.reverse(s, site.group_id, r1.transfer_id, "wrong account", "k4",
                                                           actor="alice"))


def _today(site):
    return utcnow().astimezone(ReportFilter(site.group_id, date.today(), date.today()).tz).date()


def test_sales_revenue_and_arrears(app, group):
    site = make_site(app, group)
    _money(site)
    today = _today(site)
    f = ReportFilter(site.group_id, today, today + timedelta(days=1))
    with app.app_context(), service_session() as s:
        sales = [r[2:] for r in sales_rows(s, f)]
        assert sales == [("alice", "cash", "refund", 1, D("-30.00")), ("alice", "cash", "reversal", 1, D("-100.00")),
                         ("alice", "cash", "topup", 1, D("100.00")), ("bob", "online", "topup", 1, D("50.00"))]
        revenue = list(revenue_rows(s, ReportFilter(**{**f.__dict__, "granularity": "month"})))
        assert revenue == [(today.strftime("%Y-%m"), D("150.00"), D("30.00"), D("100.00"), D("20.00"), D(0), 4)]
        # balance 20.00 is above the trip line: not in arrears; another account at 0 is
        assert [r[0] for r in arrears_rows(s, f)] == []
        s.execute(text("UPDATE prepaid_accounts SET overdraft_limit = 0 WHERE id = :a"), {"a": site.account_id})
        run_money_transaction(s, lambda s: cashier.refund(s, site.group_id, site.account_id, "20.00", "cash", "k5",
                                                          actor="alice"))
        rows = list(arrears_rows(s, f))
        assert len(rows) == 1 and rows[0][1] == f"Holder {group.marker}" and rows[0][5] == D("0.00")


def test_export_runs_as_a_job_and_matches_cell_by_cell(app, client, group, other_group, operator, tmp_path):
    app.config["EXPORT_DIR"] = str(tmp_path)
    site = make_site(app, group)
    _money(site)
    operator("group_finance")
    today = _today(site)
    token = csrf_token(client, "/reports/")
    response = client.post("/reports/sales/export", data={"csrf_token": token, "start": today.isoformat(),
                                                          "end": today.isoformat()})
    assert response.status_code == 302
    status_url = response.headers["Location"]
    assert client.get(status_url + "?format=json").get_json()["status"] == "queued"  # the request did not wait
    assert run_jobs(app, "reports") >= 1
    state = client.get(status_url + "?format=json").get_json()
    assert state["status"] == "done" and state["rows"] == 4, state
    response = client.get(state["download"])
    data = response.get_data()
    response.close()
    workbook = load_workbook(io.BytesIO(data), read_only=True)
    cells = [list(r) for r in workbook.active.iter_rows(values_only=True)]
    workbook.close()
    prop = f"Mall {group.marker}"
    day = today.isoformat()
    assert cells == [
        ["Day", "Property", "Cashier", "Channel", "Kind", "Count", "Amount (CNY)"],
        [day, prop, "alice", "cash", "refund", 1, -30], [day, prop, "alice", "cash", "reversal", 1, -100],
        [day, prop, "alice", "cash", "topup", 1, 100], [day, prop, "bob", "online", "topup", 1, 50],
    ]
    # another group's operator never sees this export, nor this group's money
    export_id = int(status_url.rstrip("/").split("/")[-1])
    other_user, password, _ = other_group.operator("group_admin")
    client.post("/logout", data={"csrf_token": csrf_token(client, "/reports/")})
    client.post("/login", data={"username": other_user, "password": password, "csrf_token": csrf_token(client)})
    assert client.get(f"/reports/exports/{export_id}").status_code == 404
    assert client.get(f"/reports/exports/{export_id}/download").status_code == 404
    page = client.get(f"/reports/sales?start={day}&end={day}").get_data(as_text=True)
    assert group.marker not in page and "alice" not in page


def test_scope_and_permissions(app, client, group, operator):
    make_site(app, group)
    operator("property_manager", properties=("P1",))
    assert client.get("/reports/usage").status_code == 200
    assert client.get(f"/reports/usage?property_id={group.property2_id}").status_code == 404
    assert client.get(f"/reports/usage?room_id={group.room2_id}").status_code == 404
    assert client.get("/reports/sales").status_code == 200  # property managers hold report.finance


def test_cashier_sees_no_reports(app, client, group, operator):
    operator("cashier")
    assert client.get("/reports/").status_code == 404
    assert client.get("/reports/usage").status_code == 404
