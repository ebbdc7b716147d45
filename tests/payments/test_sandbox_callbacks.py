"""Sandbox provider callbacks: valid, duplicate, replay, forged, amount/currency mismatch, late, stale,
unknown order/channel, closed account; the pay page with its rq-delivered callback; reconciliation."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from decimal import Decimal

from meterhub.db import service_session
from meterhub.payments import signing
from meterhub.payments.sandbox import sign_callback

from .conftest import sandbox_body


def _post(client, shop, body: bytes, headers: dict):
    return client.post(f"/payments/notify/{shop.notify_key}", data=body, headers=headers)


def test_valid_callback_tops_up_once_and_duplicates_are_acknowledged(client, shop):
    out_trade_no, pay_url, _ = shop.order("30.00")
    assert pay_url.startswith("/pay/sandbox/")
    body = sandbox_body("SBX-1-" + uuid.uuid4().hex, out_trade_no, "30.00")
    response = _post(client, shop, body, sign_callback(shop.private_key(), body))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert shop.balance() == Decimal("30.00")
    again = _post(client, shop, body, sign_callback(shop.private_key(), body))  # provider retry: new nonce
    assert again.status_code == 200
    assert shop.balance() == Decimal("30.00")
    assert shop.outcomes() == ["accepted", "duplicate"]


def test_replayed_request_is_refused_and_logged(client, shop):
    out_trade_no, _, _ = shop.order("10.00")
    body = sandbox_body("SBX-R-" + uuid.uuid4().hex, out_trade_no, "10.00")
    headers = sign_callback(shop.private_key(), body)
    assert _post(client, shop, body, headers).status_code == 200
    replay = _post(client, shop, body, headers)
    assert replay.status_code == 400 and replay.get_json()["code"] == "FAIL"
    assert shop.outcomes() == ["accepted", "replay"] and shop.balance() == Decimal("10.00")


def test_forged_signatures_are_rejected_and_logged(client, shop):
    out_trade_no, _, _ = shop.order("20.00")
    body = sandbox_body("SBX-F-" + uuid.uuid4().hex, out_trade_no, "20.00")
    other_key, _ = signing.generate_rsa_pem()
    assert _post(client, shop, body, sign_callback(other_key, body)).status_code == 400
    tampered = body.replace(b'"20.00"', b'"2000.00"')
    assert _post(client, shop, tampered, sign_callback(shop.private_key(), body)).status_code == 400
    assert _post(client, shop, body, {"Content-Type": "application/json"}).status_code == 400
    assert shop.outcomes() == ["forged", "forged", "forged"]
    assert shop.balance() == Decimal("0.00")


def test_amount_or_currency_mismatch_is_refused(client, shop):
    out_trade_no, _, _ = shop.order("20.00")
    for amount, currency in (("19.99", "CNY"), ("20.00", "USD")):
        body = sandbox_body("SBX-M-" + uuid.uuid4().hex, out_trade_no, amount, currency)
        assert _post(client, shop, body, sign_callback(shop.private_key(), body)).status_code == 400
    assert shop.outcomes() == ["mismatch", "mismatch"] and shop.balance() == Decimal("0.00")


def test_stale_unknown_and_invalid_callbacks(client, shop):
    out_trade_no, _, _ = shop.order("5.00")
    body = sandbox_body("SBX-S-" + uuid.uuid4().hex, out_trade_no, "5.00")
    old = sign_callback(shop.private_key(), body, timestamp=int(time.time()) - 3600)
    assert _post(client, shop, body, old).status_code == 400
    unknown = sandbox_body("SBX-U-" + uuid.uuid4().hex, "MHNOSUCHORDER", "5.00")
    assert _post(client, shop, unknown, sign_callback(shop.private_key(), unknown)).status_code == 400
    garbage = b"{not json"
    assert _post(client, shop, garbage, sign_callback(shop.private_key(), garbage)).status_code == 400
    assert shop.outcomes() == ["stale", "unknown_order", "invalid"]
    assert client.post("/payments/notify/nope", data=body).status_code == 404


def test_late_callback_after_expiry_still_credits(client, app, shop):
    from meterhub.payments.models import PaymentOrder
    from meterhub.payments.plugin import expire_job

    out_trade_no, _, order_id = shop.order("12.00")
    with app.app_context(), service_session() as s:
        order = s.get(PaymentOrder, order_id)
        order.expires_at = order.expires_at - timedelta(hours=1)
    with app.app_context():
        assert expire_job() >= 1
    body = sandbox_body("SBX-L-" + uuid.uuid4().hex, out_trade_no, "12.00")
    assert _post(client, shop, body, sign_callback(shop.private_key(), body)).status_code == 200
    assert shop.balance() == Decimal("12.00") and shop.outcomes() == ["late"]
    with app.app_context(), service_session() as s:
        assert s.get(PaymentOrder, order_id).state == "paid"


def test_payment_for_a_closed_account_is_kept_unapplied(client, app, shop):
    from meterhub.modules.prepaid import accounts, cashier
    from meterhub.payments.models import PaymentOrder

    out_trade_no, _, order_id = shop.order("8.00")
    with app.app_context(), service_session() as s:
        # (closing needs a non-zero balance to settle at the moment: prepaid close_account with 0 fails)
        cashier.topup(s, shop.site.tenant.group_id, shop.site.account_id, "1.00", "cash", uuid.uuid4().hex,
                      actor="test")
    with app.app_context(), service_session() as s:
        accounts.close_account(s, shop.site.tenant.group_id, shop.site.account_id, "close-" + uuid.uuid4().hex,
                               actor="test")
    body = sandbox_body("SBX-C-" + uuid.uuid4().hex, out_trade_no, "8.00")
    assert _post(client, shop, body, sign_callback(shop.private_key(), body)).status_code == 200
    assert shop.outcomes() == ["unapplied"]
    with app.app_context(), service_session() as s:
        assert s.get(PaymentOrder, order_id).state == "unapplied"


def test_pay_page_queues_a_signed_callback_delivered_by_rq_and_reconciles(app, shop, live_server):
    import requests

    from meterhub.payments.models import PaymentChannel, SandboxTrade
    from meterhub.payments.reconcile import reconcile
    from meterhub.payments.sandbox import SandboxProvider
    from meterhub.payments.orders import channel_view
    from tests.alarms.conftest import run_jobs

    app.config["SANDBOX_RETRY_INTERVALS"] = [0, 0]
    _, pay_url, _ = shop.order("25.00", base_url=live_server)
    browser = requests.Session()
    page = browser.get(live_server + pay_url)
    assert page.status_code == 200 and "25.00" in page.text
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    paid = browser.post(live_server + pay_url, data={"csrf_token": token, "action": "pay"}, allow_redirects=False)
    assert paid.status_code == 302
    assert run_jobs(app) >= 1
    assert shop.balance() == Decimal("25.00")
    with app.app_context(), service_session() as s:
        channel = s.get(PaymentChannel, shop.channel_id)
        s.add(SandboxTrade(group_id=channel.group_id, channel_id=channel.id, txn_id="SBX-ORPHAN-" + uuid.uuid4().hex,
                           out_trade_no="MHORPHAN", amount=Decimal("3.00"), currency="CNY"))
        s.flush()
        start, end = channel.created_at - timedelta(days=1), channel.created_at + timedelta(days=1)
        records = SandboxProvider().records(s, channel_view(channel), start, end)
        statuses = sorted(line.status for line in reconcile(s, channel, records, start, end))
    assert statuses == ["matched", "missing_in_ledger"]
