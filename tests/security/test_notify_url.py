"""Issue 20, finding 11: payment notify URLs come only from configuration (``PUBLIC_BASE_URL``), never from
a request's Host header; without it no order is placed and no real payment channel can be enabled."""

from __future__ import annotations

import re

from sqlalchemy import select

from meterhub.db import service_session
from meterhub.payments import sandbox
from meterhub.payments.models import PaymentChannel, PaymentOrder
from tests.api.world import open_site
from tests.conftest import csrf_token
from tests.payments.conftest import make_channel
from tests.payments.test_wechat_v3 import MERCHANT_PRIVATE, PLATFORM_PUBLIC
from tests.portal.conftest import codes, sign_in_with_code, token_of  # noqa: F401  (codes: fixture)

FORGED = {"Host": "127.0.0.1:5999"}
WECHAT = {"provider": "wechat_v3", "name": "WeChat", "appid": "wx123", "mchid": "1900000001",
          "merchant_serial_no": "ABC", "apiv3_key": "0123456789abcdef0123456789abcdef",
          "merchant_private_key": MERCHANT_PRIVATE, "platform_serial": "PLAT1",
          "platform_certificate": PLATFORM_PUBLIC}


def _behind_forged_host(client) -> None:
    """Send the signed-in session to the forged host too (the test client picks cookies by the Host header)."""
    client.set_cookie("session", client.get_cookie("session").value, domain="127.0.0.1")


def _queued_callbacks(app) -> list[dict]:
    from meterhub.redis_conn import get_queue

    with app.app_context():
        return [job.kwargs for job in get_queue("default").get_jobs()
                if job.args and job.args[0] == "meterhub.payments.sandbox:deliver_callback"]


def _orders(app, account_id: int) -> list[PaymentOrder]:
    with app.app_context(), service_session() as s:
        return list(s.execute(select(PaymentOrder).where(PaymentOrder.account_id == account_id)).scalars())


def test_a_forged_host_never_becomes_the_notify_url(app, client, group, codes):
    app.config["PUBLIC_BASE_URL"] = "https://pay.meterhub.example"
    site = open_site(app, group)
    _channel_id, notify_key = make_channel(app, group.group_id)
    assert sign_in_with_code(client, codes, site.phone).status_code == 302
    _behind_forged_host(client)
    page = client.get(f"/portal/a/{site.account_number}", headers=FORGED).get_data(as_text=True)
    placed = client.post(f"/portal/a/{site.account_number}/pay", data={"amount": "30", "csrf_token": token_of(page)},
                         headers=FORGED)
    assert placed.status_code == 302
    token = re.search(r"/pay/sandbox/([^/?#]+)", placed.headers["Location"]).group(1)
    with app.test_request_context():
        told = sandbox.read_pay_token(token)["n"]
    assert told == f"https://pay.meterhub.example/payments/notify/{notify_key}"
    before = len(_queued_callbacks(app))
    paid = client.post(f"/pay/sandbox/{token}", data={"action": "pay", "csrf_token": token_of(page)}, headers=FORGED)
    assert paid.status_code == 302
    callbacks = _queued_callbacks(app)[before:]
    assert [c["notify_url"] for c in callbacks] == [told]
    assert "5999" not in str(callbacks)


def test_without_a_public_address_no_order_is_placed(app, client, group, codes):
    app.config["PUBLIC_BASE_URL"] = ""
    site = open_site(app, group)
    make_channel(app, group.group_id)  # the sandbox may exist without it
    assert sign_in_with_code(client, codes, site.phone).status_code == 302
    _behind_forged_host(client)
    page = client.get(f"/portal/a/{site.account_number}", headers=FORGED).get_data(as_text=True)
    refused = client.post(f"/portal/a/{site.account_number}/pay", data={"amount": "30", "csrf_token": token_of(page)},
                          headers=FORGED, follow_redirects=True)
    assert "set PUBLIC_BASE_URL" in refused.get_data(as_text=True)
    assert _orders(app, site.account_id) == []


def test_a_real_channel_cannot_be_created_or_enabled_without_a_public_address(app, client, operator, group):
    operator("group_admin", all_properties=True)
    token = csrf_token(client, "/payment-channels/")
    app.config["PUBLIC_BASE_URL"] = ""
    _behind_forged_host(client)
    page = client.get("/payment-channels/", headers=FORGED).get_data(as_text=True)
    assert 'id="no-public-url"' in page and "127.0.0.1:5999" not in page
    refused = client.post("/payment-channels/", data={"csrf_token": token, **WECHAT}, headers=FORGED)
    assert refused.status_code == 409 and "set PUBLIC_BASE_URL" in refused.get_data(as_text=True)
    with app.app_context(), service_session() as s:
        assert s.execute(select(PaymentChannel).where(PaymentChannel.group_id == group.group_id)).first() is None

    app.config["PUBLIC_BASE_URL"] = "https://pay.meterhub.example"
    created = client.post("/payment-channels/", data={"csrf_token": token, **WECHAT}, follow_redirects=True)
    assert "https://pay.meterhub.example/payments/notify/" in created.get_data(as_text=True)
    with app.app_context(), service_session() as s:
        channel_id = s.execute(select(PaymentChannel.id).where(PaymentChannel.group_id == group.group_id)).scalar_one()
    client.post(f"/payment-channels/{channel_id}/toggle", data={"csrf_token": token})  # disabled
    app.config["PUBLIC_BASE_URL"] = ""
    again = client.post(f"/payment-channels/{channel_id}/toggle", data={"csrf_token": token}, headers=FORGED)
    assert again.status_code == 409 and "set PUBLIC_BASE_URL" in again.get_data(as_text=True)
    with app.app_context(), service_session() as s:
        assert s.get(PaymentChannel, channel_id).enabled is False


def test_the_sandbox_channel_can_be_created_without_a_public_address(app, client, operator, group):
    operator("group_admin", all_properties=True)
    app.config["PUBLIC_BASE_URL"] = ""
    token = csrf_token(client, "/payment-channels/")
    created = client.post("/payment-channels/", data={"csrf_token": token, "provider": "sandbox", "name": "Test"})
    assert created.status_code == 302
