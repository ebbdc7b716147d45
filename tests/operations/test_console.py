"""Console pages of the operations modules: they render for permitted roles, hide from others, and another
group's objects answer 404."""

from __future__ import annotations

import pytest

from tests.conftest import csrf_token

PAGES = ["/apportion/", "/billing-items/", "/batch/", "/bills/", "/bills/unpaid.xlsx"]


def test_pages_render_for_admin(client, operator, group):
    operator("group_admin")
    for url in PAGES:
        assert client.get(url).status_code == 200, url
    ids = group.operations
    for url in (f"/apportion/rules/{ids['rule_id']}?start=2026-01-01&end=2026-02-01", f"/apportion/runs/{ids['run_id']}",
                f"/billing-items/{ids['item_id']}", f"/batch/{ids['batch_id']}", f"/bills/{ids['bill_id']}",
                f"/batch/{ids['batch_id']}/results.xlsx"):
        response = client.get(url)
        assert response.status_code == 200, url
    pdf = client.get(f"/bills/{ids['bill_id']}/bill.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")


def test_electrician_sees_no_money_pages(client, operator):
    operator("electrician")
    for url in ["/apportion/", "/billing-items/", "/batch/", "/bills/"]:
        assert client.get(url).status_code == 404, url


@pytest.mark.parametrize("role", ["group_admin", "property_manager"])
def test_other_groups_objects_are_404(role, client, operator, other_group):
    operator(role)
    ids = other_group.operations
    token = csrf_token(client, "/password")
    for url in (f"/apportion/rules/{ids['rule_id']}", f"/apportion/runs/{ids['run_id']}",
                f"/billing-items/{ids['item_id']}", f"/batch/{ids['batch_id']}", f"/bills/{ids['bill_id']}",
                f"/bills/{ids['bill_id']}/bill.pdf", f"/batch/{ids['batch_id']}/results.xlsx"):
        assert client.get(url).status_code == 404, url
    for url in (f"/apportion/rules/{ids['rule_id']}/post", f"/apportion/runs/{ids['run_id']}/reverse",
                f"/batch/{ids['batch_id']}/cancel", f"/batch/{ids['batch_id']}/retry", f"/bills/{ids['bill_id']}/pay",
                f"/bills/{ids['bill_id']}/confirm"):
        assert client.post(url, data={"csrf_token": token, "reason": "x"}).status_code == 404, url


def test_batch_created_and_cancelled_from_the_console(client, operator, group):
    operator("group_admin")
    token = csrf_token(client, "/batch/")
    response = client.post("/batch/new", data={"csrf_token": token, "property_id": group.property_id,
                                               "action": "read_now", "meter_ids": "", "at": "2099-01-01T08:00",
                                               "confirmed": "yes"})
    assert response.status_code == 302 and "/batch/" in response.location
    page = client.get(response.location).get_data(as_text=True)
    assert "Scheduled" in page
    batch_url = response.location.split("localhost")[-1]
    assert client.post(f"{batch_url}/cancel", data={"csrf_token": token}).status_code == 302
    assert "Cancelled" in client.get(batch_url).get_data(as_text=True)


def test_due_days_zero_is_kept_and_a_bad_value_is_refused(app, client, operator, group):
    """Due at once (0) stays 0; text is refused with a message, never silently replaced by the default 15."""
    from meterhub.db import service_session
    from meterhub.modules.postpaid.models import Bill, PostpaidAccount

    operator("group_admin")
    with app.app_context(), service_session() as s:
        account_id = s.get(Bill, group.operations["bill_id"]).account_id
        s.query(PostpaidAccount).filter_by(account_id=account_id).delete()
    token = csrf_token(client, "/bills/")
    form = {"csrf_token": token, "account_id": account_id, "start": "2026-03-01", "end": "2026-04-01",
            "make_postpaid": "1"}
    response = client.post("/bills/generate", data={**form, "due_days": "soon"}, follow_redirects=True)
    assert "Due days must be a whole number" in response.get_data(as_text=True)
    with app.app_context(), service_session() as s:
        assert s.query(PostpaidAccount).filter_by(account_id=account_id).first() is None
    client.post("/bills/generate", data={**form, "due_days": "0"})
    with app.app_context(), service_session() as s:
        assert s.query(PostpaidAccount).filter_by(account_id=account_id).one().due_days == 0
