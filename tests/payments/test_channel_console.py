"""Group admins configure payment channels in the console; secrets are encrypted and never shown."""

from __future__ import annotations

from sqlalchemy import select

from meterhub.db import service_session
from meterhub.payments.models import PaymentChannel
from tests.conftest import csrf_token

KEY = "0123456789abcdef0123456789abcdef"


def test_admin_creates_a_wechat_channel_and_disables_it(app, client, operator, group):
    operator("group_admin")
    token = csrf_token(client, "/payment-channels/")
    response = client.post("/payment-channels/", data={
        "csrf_token": token, "provider": "wechat_v3", "name": "WeChat mall", "appid": "wx123", "mchid": "1900000001",
        "merchant_serial_no": "ABC", "apiv3_key": KEY, "merchant_private_key": "-----BEGIN PRIVATE KEY-----x",
        "platform_serial": "PLAT1", "platform_certificate": "-----BEGIN PUBLIC KEY-----y"}, follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "WeChat mall" in page and "/payments/notify/" in page
    assert KEY not in page and "BEGIN PRIVATE KEY" not in page and "apiv3_key=--------" in page
    with app.app_context(), service_session() as s:
        channel = s.execute(select(PaymentChannel).where(PaymentChannel.group_id == group.group_id)).scalar_one()
        assert channel.settings["mchid"] == "1900000001"
        assert channel.settings["platform_certificates"] == {"PLAT1": "-----BEGIN PUBLIC KEY-----y"}
        assert KEY not in str(channel.secrets)  # encrypted at rest
        channel_id = channel.id
    client.post(f"/payment-channels/{channel_id}/toggle", data={"csrf_token": token})
    with app.app_context(), service_session() as s:
        assert s.get(PaymentChannel, channel_id).enabled is False


def test_a_short_apiv3_key_is_refused_and_nothing_is_stored(app, client, operator, group):
    operator("group_admin")
    token = csrf_token(client, "/payment-channels/")
    page = client.post("/payment-channels/", data={"csrf_token": token, "provider": "wechat_v3", "name": "x",
                                                   "apiv3_key": "short"}, follow_redirects=True).get_data(as_text=True)
    assert "exactly 32 characters" in page
    with app.app_context(), service_session() as s:
        assert s.execute(select(PaymentChannel).where(PaymentChannel.group_id == group.group_id)).first() is None


def test_cashier_cannot_see_payment_channels(client, operator):
    operator("cashier")
    assert client.get("/payment-channels/").status_code == 404
