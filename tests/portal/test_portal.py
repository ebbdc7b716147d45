"""The tenant portal: sign-in by code and password, account page, isolation, staff invitations, online
top-up through the sandbox provider, the room QR pay page."""

from __future__ import annotations

import uuid
from decimal import Decimal

from meterhub.db import service_session
from tests.api.world import open_site
from tests.payments.conftest import make_channel

from .conftest import sign_in_with_code, token_of


def _topup(app, site, amount="40.00"):
    from meterhub.modules.prepaid import cashier

    with app.app_context(), service_session() as s:
        return cashier.topup(s, site.tenant.group_id, site.account_id, amount, "cash", uuid.uuid4().hex, actor="t")


def test_owner_signs_in_with_a_code_and_sees_the_account(app, client, group, codes):
    site = open_site(app, group)
    result = _topup(app, site)
    response = sign_in_with_code(client, codes, site.phone)
    assert response.status_code == 302 and response.headers["Location"].endswith("/portal/")
    page = client.get("/portal/", follow_redirects=True).get_data(as_text=True)
    assert "¥40.00" in page and site.account_number in page
    assert result.receipt_no in page
    receipt = client.get(f"/portal/a/{site.account_number}/receipts/{result.receipt_no}")
    assert receipt.status_code == 200 and "40.00" in receipt.get_data(as_text=True)
    usage = client.get(f"/portal/a/{site.account_number}/usage.json?bucket=month").get_json()
    assert usage["bucket"] == "month" and usage["unit"] == "kWh"


def test_wrong_code_and_unknown_phone(app, client, group, codes):
    site = open_site(app, group)
    page = client.get("/portal/login").get_data(as_text=True)
    client.post("/portal/code", data={"phone": site.phone, "csrf_token": token_of(page)})
    bad = client.post("/portal/code/verify", data={"code": "000000" if codes[site.phone] != "000000" else "111111",
                                                   "csrf_token": token_of(page)})
    assert bad.status_code == 401
    unknown = client.post("/portal/code", data={"phone": "19900000000", "csrf_token": token_of(page)})
    assert unknown.status_code == 200 and "19900000000" not in codes  # same answer, nothing sent
    assert client.get("/portal/").status_code == 302


def test_password_sign_in_and_rate_limit(app, client, group, codes):
    site = open_site(app, group)
    sign_in_with_code(client, codes, site.phone)
    page = client.get("/portal/password").get_data(as_text=True)
    client.post("/portal/password", data={"password": "long enough 1", "csrf_token": token_of(page)})
    client.post("/portal/logout", data={"csrf_token": token_of(page)})
    login = client.get("/portal/login").get_data(as_text=True)
    wrong = client.post("/portal/login", data={"phone": site.phone, "password": "nope", "csrf_token": token_of(login)})
    assert wrong.status_code == 401
    ok = client.post("/portal/login", data={"phone": site.phone, "password": "long enough 1",
                                            "csrf_token": token_of(login)})
    assert ok.status_code == 302
    client.post("/portal/logout", data={"csrf_token": token_of(login)})
    codes_seen = [client.post("/portal/login", data={"phone": site.phone, "password": "bad",
                                                     "csrf_token": token_of(login)}).status_code for _ in range(7)]
    assert codes_seen[-1] == 429  # locked out (rate limited), with Retry-After


def test_portal_users_see_only_their_accounts(app, client, group, other_group, codes):
    mine = open_site(app, group)
    neighbour = open_site(app, group)
    foreign = open_site(app, other_group)
    other_receipt = _topup(app, neighbour).receipt_no
    sign_in_with_code(client, codes, mine.phone)
    assert client.get(f"/portal/a/{mine.account_number}").status_code == 200
    for number in (neighbour.account_number, foreign.account_number):
        assert client.get(f"/portal/a/{number}").status_code == 404
        assert client.get(f"/portal/a/{number}/usage.json").status_code == 404
    assert client.get(f"/portal/a/{mine.account_number}/receipts/{other_receipt}").status_code == 404
    assert client.get("/rooms").status_code == 302  # a portal user is no operator
    page = client.get("/portal/login").get_data(as_text=True)
    assert client.post(f"/portal/a/{neighbour.account_number}/pay",
                       data={"amount": "5", "csrf_token": token_of(page)}).status_code == 404


def test_operator_session_gives_no_portal_access(app, client, group, operator):
    site = open_site(app, group)
    operator("group_admin")
    assert client.get(f"/portal/a/{site.account_number}").status_code == 302


def test_owner_invites_staff_who_then_sees_the_account(app, group, codes):
    site = open_site(app, group)
    owner, staff = app.test_client(), app.test_client()
    sign_in_with_code(owner, codes, site.phone)
    page = owner.get(f"/portal/a/{site.account_number}/members").get_data(as_text=True)
    staff_phone = "15" + str(uuid.uuid4().int)[:9]
    owner.post(f"/portal/a/{site.account_number}/members", data={"phone": staff_phone, "role": "staff",
                                                                 "csrf_token": token_of(page)})
    sign_in_with_code(staff, codes, staff_phone)
    assert staff.get(f"/portal/a/{site.account_number}").status_code == 200
    assert staff.get(f"/portal/a/{site.account_number}/members").status_code == 404
    members = owner.get(f"/portal/a/{site.account_number}/members").get_data(as_text=True)
    assert staff_phone in members


def test_shop_pays_online_through_the_sandbox(app, client, group, codes):
    from tests.payments.conftest import Shop  # noqa: F401  (same fixtures family)

    site = open_site(app, group)
    make_channel(app, group.group_id)
    sign_in_with_code(client, codes, site.phone)
    page = client.get(f"/portal/a/{site.account_number}").get_data(as_text=True)
    response = client.post(f"/portal/a/{site.account_number}/pay", data={"amount": "66", "csrf_token": token_of(page)})
    assert response.status_code == 302 and "/pay/sandbox/" in response.headers["Location"]
    pay_page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "66.00" in pay_page
    # the order's description (kept by the provider, shown to the payer) in the payer's language (the portal's
    # default is zh_CN; the tests' app defaults to English)
    chinese = client.post(f"/portal/a/{site.account_number}/pay", headers={"Accept-Language": "zh-CN"},
                          data={"amount": "5", "csrf_token": token_of(page)})
    assert f"账户 {site.account_number} 充值" in client.get(chinese.headers["Location"]).get_data(as_text=True)
    english = client.post(f"/portal/a/{site.account_number}/pay", headers={"Accept-Language": "en"},
                          data={"amount": "5", "csrf_token": token_of(page)})
    assert f"Top-up of account {site.account_number}" in client.get(english.headers["Location"]).get_data(as_text=True)


def test_room_qr_label_leads_to_the_room_pay_page(app, client, group):
    from meterhub.devices.labels import room_token

    open_site(app, group)
    make_channel(app, group.group_id)
    token = room_token(app.config["SECRET_KEY"], group.group_id, group.room_id)
    response = client.get(f"/r/{token}")
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/portal/r/{token}")
    page = client.get(f"/portal/r/{token}").get_data(as_text=True)
    assert "¥0.00" in page
    paid = client.post(f"/portal/r/{token}", data={"amount": "10", "csrf_token": token_of(page)})
    assert "/pay/sandbox/" in paid.headers["Location"]
    assert client.get("/portal/r/not-a-token").status_code == 404
    assert Decimal("0") == Decimal("0")
