"""Issue 20, finding 15: top-up limits per group, counter, API and online alike. Above the group's maximum a
top-up is refused with a 4xx saying why; above its confirmation threshold the counter asks (naming room,
tenant and amount) and the API wants ``"confirm": true``. Nothing is booked until then."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import pytest

from meterhub.db import service_session
from meterhub.ledger.post import balance_of
from meterhub.modules.prepaid import cashier
from meterhub.modules.prepaid.limits import TopupTooLarge
from meterhub.modules.prepaid.models import PrepaidAccount
from meterhub.payments.models import PaymentOrder
from meterhub.tenants.models import Group
from tests.api.world import bearer, make_token, open_site
from tests.conftest import csrf_token
from tests.payments.conftest import make_channel
from tests.portal.conftest import codes, sign_in_with_code, token_of  # noqa: F401  (codes: fixture)


def _balance(app, account_id: int) -> Decimal:
    with app.app_context(), service_session() as s:
        return balance_of(s, s.get(PrepaidAccount, account_id).wallet_account_id)


def _limits(app, group_id: int, maximum: str, confirm_above: str) -> None:
    with app.app_context(), service_session() as s:
        g = s.get(Group, group_id)
        g.topup_max, g.topup_confirm_above = Decimal(maximum), Decimal(confirm_above)


@pytest.fixture()
def site(app, group):
    return open_site(app, group)


def _counter_topup(client, account_id: int, amount: str, **extra):
    token = csrf_token(client, f"/prepaid/accounts/{account_id}")
    data = {"csrf_token": token, "amount": amount, "channel": "cash", "key": f"k-{uuid.uuid4().hex}", **extra}
    return client.post(f"/prepaid/accounts/{account_id}/topup", data=data)


def test_defaults_are_50000_and_5000():
    assert Group.__table__.c.topup_max.server_default.arg == "50000.00"
    assert Group.__table__.c.topup_confirm_above.server_default.arg == "5000.00"


def test_the_counter_refuses_a_million(app, client, operator, site):
    operator("cashier")
    response = _counter_topup(client, site.account_id, "1000000.00")
    assert response.status_code == 422
    assert "at most 50000.00 CNY" in response.get_data(as_text=True)
    assert _balance(app, site.account_id) == Decimal("0.00")


def test_the_counter_asks_to_confirm_above_the_threshold_naming_room_tenant_and_amount(app, client, operator, group,
                                                                                      site):
    operator("cashier")
    response = _counter_topup(client, site.account_id, "8000.00")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and 'id="confirm-topup"' in page
    assert f"Shop {group.marker}" in page  # the tenant
    assert "101" in re.search(r'id="confirm-room">([^<]*)<', page).group(1)  # the room
    assert "8,000.00" in re.search(r'id="confirm-amount">(.*?)</dd>', page).group(1)
    assert _balance(app, site.account_id) == Decimal("0.00")  # nothing booked yet
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))
    assert fields["confirm"] == "1"
    confirmed = client.post(f"/prepaid/accounts/{site.account_id}/topup", data=fields)
    assert confirmed.status_code == 302 and "/receipts/" in confirmed.headers["Location"]
    assert _balance(app, site.account_id) == Decimal("8000.00")
    again = client.post(f"/prepaid/accounts/{site.account_id}/topup", data=fields)  # same key: replayed, once
    assert again.status_code == 302 and _balance(app, site.account_id) == Decimal("8000.00")


def test_the_api_refuses_a_million_and_wants_confirm_above_the_threshold(app, client, group, site):
    token = make_token(app, group, "cashier")
    url = f"/api/v1/accounts/{site.account_id}/topups"

    def post(body: dict):
        return client.post(url, json=body, headers={**bearer(token), "Idempotency-Key": uuid.uuid4().hex})

    huge = post({"amount": "1000000.00"})
    assert huge.status_code == 422 and "at most 50000.00 CNY" in huge.get_json()["error"]["message"]
    unconfirmed = post({"amount": "8000.00"})
    assert unconfirmed.status_code == 422
    assert unconfirmed.get_json()["error"]["fields"] == {"confirm": "required"}
    assert post({"amount": "8000.00", "confirm": "yes"}).status_code == 422
    assert _balance(app, site.account_id) == Decimal("0.00")
    assert post({"amount": "8000.00", "confirm": True}).status_code == 201
    assert post({"amount": "100.00"}).status_code == 201  # below the threshold: no confirmation
    assert _balance(app, site.account_id) == Decimal("8100.00")


def test_online_orders_follow_the_groups_maximum(app, client, group, site, codes):
    _limits(app, group.group_id, "300.00", "100.00")
    make_channel(app, group.group_id)
    assert sign_in_with_code(client, codes, site.phone).status_code == 302
    page = client.get(f"/portal/a/{site.account_number}").get_data(as_text=True)
    refused = client.post(f"/portal/a/{site.account_number}/pay", data={"amount": "500", "csrf_token": token_of(page)},
                          follow_redirects=True)
    assert "at most 300.00 CNY" in refused.get_data(as_text=True)
    placed = client.post(f"/portal/a/{site.account_number}/pay", data={"amount": "200", "csrf_token": token_of(page)})
    assert placed.status_code == 302 and "/pay/sandbox/" in placed.headers["Location"]  # the payer confirms there
    with app.app_context(), service_session() as s:
        amounts = [o.amount for o in s.query(PaymentOrder).filter_by(account_id=site.account_id)]
    assert amounts == [Decimal("200.00")]


def test_the_limit_binds_every_caller_of_the_cashier(app, group, site):
    _limits(app, group.group_id, "1000.00", "500.00")
    with app.app_context(), service_session() as s, pytest.raises(TopupTooLarge):
        cashier.topup(s, group.group_id, site.account_id, "1000.01", "transfer", uuid.uuid4().hex, actor="batch")
    assert _balance(app, site.account_id) == Decimal("0.00")


def test_group_admin_sets_the_limits_and_bad_values_are_refused(app, client, operator, group, site):
    operator("group_admin", all_properties=True)
    token = csrf_token(client, "/settings/")
    bad = client.post("/settings/", data={"csrf_token": token, "section": "topup_limits", "topup_max": "100.00",
                                          "topup_confirm_above": "200.00"})
    assert bad.status_code == 422 and "between 0 and the maximum" in bad.get_data(as_text=True)
    for maximum in ("abc", "0", "2000000.00"):
        assert client.post("/settings/", data={"csrf_token": token, "section": "topup_limits", "topup_max": maximum,
                                               "topup_confirm_above": "0"}).status_code == 422
    ok = client.post("/settings/", data={"csrf_token": token, "section": "topup_limits", "topup_max": "2000.00",
                                         "topup_confirm_above": "1000.00"})
    assert ok.status_code == 302
    with app.app_context(), service_session() as s:
        g = s.get(Group, group.group_id)
        assert (g.topup_max, g.topup_confirm_above) == (Decimal("2000.00"), Decimal("1000.00"))
    refused = _counter_topup(client, site.account_id, "2500.00")
    assert refused.status_code == 422 and "at most 2000.00 CNY" in refused.get_data(as_text=True)


def test_a_cashier_cannot_change_the_limits(app, client, operator, group):
    operator("cashier")
    token = csrf_token(client, "/prepaid/counter")
    response = client.post("/settings/", data={"csrf_token": token, "section": "topup_limits",
                                               "topup_max": "999999.00", "topup_confirm_above": "0"})
    assert response.status_code == 404
    with app.app_context(), service_session() as s:
        assert s.get(Group, group.group_id).topup_max == Decimal("50000.00")


def test_a_batch_top_up_above_the_maximum_is_refused_before_any_meter(app, group, site):
    from meterhub.modules.batch.models import Batch
    from meterhub.modules.batch.service import create_batch

    with app.app_context(), service_session() as s, pytest.raises(TopupTooLarge, match="at most 50000.00 CNY"):
        create_batch(s, group.group_id, group.property_id, "topup", {"amount": "1000000.00", "channel": "cash"},
                     {}, actor="pytest")
    with app.app_context(), service_session() as s:
        assert s.query(Batch).filter_by(group_id=group.group_id).count() == 0
    assert _balance(app, site.account_id) == Decimal("0.00")
