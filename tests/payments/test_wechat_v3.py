"""WeChat Pay v3 with locally generated keys: notification signature (RSA-SHA256 over
timestamp\\nnonce\\nbody\\n with the platform certificate's key), AES-256-GCM resource decryption with the
APIv3 key, forged/tampered callbacks, signed order requests and the trade-bill parser."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from decimal import Decimal

import pytest

from meterhub.payments import signing, wechat

from .conftest import Shop, make_channel

APIV3_KEY = "0123456789abcdef0123456789ABCDEF"
PLATFORM_PRIVATE, PLATFORM_PUBLIC = signing.generate_rsa_pem()
MERCHANT_PRIVATE, MERCHANT_PUBLIC = signing.generate_rsa_pem()
SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"


def notification(out_trade_no: str, txn_id: str, fen: int, *, key: str = APIV3_KEY,
                 signer: str = PLATFORM_PRIVATE, serial: str = SERIAL, state: str = "SUCCESS",
                 timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """A notification as WeChat Pay sends it: encrypted resource, signed headers."""
    transaction = {"appid": "wx0000", "mchid": "1900000001", "out_trade_no": out_trade_no, "transaction_id": txn_id,
                   "trade_type": "NATIVE", "trade_state": state, "trade_state_desc": "支付成功",
                   "success_time": "2026-11-21T12:00:00+08:00", "payer": {"openid": "o-test"},
                   "amount": {"total": fen, "payer_total": fen, "currency": "CNY", "payer_currency": "CNY"}}
    nonce = secrets.token_hex(6)  # 12 characters, as WeChat Pay uses
    resource = {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM", "associated_data": "transaction",
                "nonce": nonce, "ciphertext": signing.aes_gcm_encrypt(key.encode(), nonce.encode(), b"transaction",
                                                                     json.dumps(transaction).encode())}
    body = json.dumps({"id": str(uuid.uuid4()), "create_time": "2026-11-21T12:00:01+08:00",
                       "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS",
                       "summary": "支付成功", "resource": resource}).encode()
    ts, header_nonce = str(timestamp or int(time.time())), secrets.token_hex(16)
    return body, {"Content-Type": "application/json", "Wechatpay-Timestamp": ts, "Wechatpay-Nonce": header_nonce,
                  "Wechatpay-Serial": serial, "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
                  "Wechatpay-Signature": signing.rsa_sign(signer, signing.signed_message(ts, header_nonce, body))}


@pytest.fixture()
def wx_shop(app, shop, monkeypatch) -> Shop:
    sent = []

    def fake_post(url, body, headers):
        sent.append((url, body, headers))
        return {"code_url": "weixin://wxpay/bizpayurl?pr=test" + uuid.uuid4().hex[:6]}

    monkeypatch.setattr(wechat, "_post_json", fake_post)
    channel_id, key = make_channel(app, shop.site.tenant.group_id, "wechat_v3",
                                   {"mchid": "1900000001", "appid": "wx0000", "merchant_serial_no": "MSERIAL",
                                    "platform_certificates": {SERIAL: PLATFORM_PUBLIC}},
                                   {"apiv3_key": APIV3_KEY, "merchant_private_key": MERCHANT_PRIVATE})
    wx = Shop(app, shop.site, channel_id, key)
    wx.sent = sent
    return wx


def _post(client, shop, body, headers):
    return client.post(f"/payments/notify/{shop.notify_key}", data=body, headers=headers)


def test_order_request_is_signed_with_the_merchant_key(wx_shop):
    out_trade_no, pay_url, _ = wx_shop.order("15.50")
    url, body, headers = wx_shop.sent[0]
    assert url.endswith("/v3/pay/transactions/native") and pay_url == ""
    payload = json.loads(body)
    assert payload["amount"] == {"total": 1550, "currency": "CNY"} and payload["out_trade_no"] == out_trade_no
    assert payload["notify_url"].endswith(f"/payments/notify/{wx_shop.notify_key}")
    fields = dict(part.split("=", 1) for part in headers["Authorization"].split(" ", 1)[1].split(","))
    fields = {k: v.strip('"') for k, v in fields.items()}
    message = f"POST\n/v3/pay/transactions/native\n{fields['timestamp']}\n{fields['nonce_str']}\n{body}\n".encode()
    assert signing.rsa_verify(MERCHANT_PUBLIC, message, fields["signature"])


def test_valid_notification_is_decrypted_and_credited_once(client, wx_shop):
    out_trade_no, _, _ = wx_shop.order("15.50")
    txn = "4200" + uuid.uuid4().hex[:24]
    body, headers = notification(out_trade_no, txn, 1550)
    response = _post(client, wx_shop, body, headers)
    assert response.status_code == 204, response.get_data(as_text=True)
    body2, headers2 = notification(out_trade_no, txn, 1550)  # WeChat Pay retries the same transaction
    assert _post(client, wx_shop, body2, headers2).status_code == 204
    assert wx_shop.balance() == Decimal("15.50")
    assert wx_shop.outcomes() == ["accepted", "duplicate"]


def test_forged_tampered_and_wrongly_encrypted_notifications_are_refused(client, wx_shop):
    out_trade_no, _, _ = wx_shop.order("9.00")
    other_private, _ = signing.generate_rsa_pem()
    forged, headers = notification(out_trade_no, "4200forged", 900, signer=other_private)
    answer = _post(client, wx_shop, forged, headers)
    assert answer.status_code == 400 and answer.get_json()["code"] == "FAIL"
    unknown_serial, headers = notification(out_trade_no, "4200serial", 900, serial="UNKNOWN")
    assert _post(client, wx_shop, unknown_serial, headers).status_code == 400
    body, headers = notification(out_trade_no, "4200tamper", 900)
    assert _post(client, wx_shop, body.replace(b"TRANSACTION.SUCCESS", b"TRANSACTION.SUCCESX"), headers).status_code == 400
    wrong_key, headers = notification(out_trade_no, "4200key", 900, key="X" * 32)
    assert _post(client, wx_shop, wrong_key, headers).status_code == 400
    mismatch, headers = notification(out_trade_no, "4200amount", 1)
    assert _post(client, wx_shop, mismatch, headers).status_code == 400
    assert wx_shop.outcomes() == ["forged", "forged", "forged", "invalid", "mismatch"]
    assert wx_shop.balance() == Decimal("0.00")


def test_replayed_and_stale_notifications_are_refused(client, wx_shop):
    out_trade_no, _, _ = wx_shop.order("3.00")
    body, headers = notification(out_trade_no, "4200replay" + uuid.uuid4().hex[:8], 300)
    assert _post(client, wx_shop, body, headers).status_code == 204
    assert _post(client, wx_shop, body, headers).status_code == 400
    old, headers = notification(out_trade_no, "4200old", 300, timestamp=int(time.time()) - 3600)
    assert _post(client, wx_shop, old, headers).status_code == 400
    assert wx_shop.outcomes() == ["accepted", "replay", "stale"]


def test_apiv3_key_must_be_32_bytes(app, group):
    from meterhub.errors import ValidationError

    with pytest.raises(ValidationError, match="32 characters"):  # a typed value: said beside the key's field
        make_channel(app, group.group_id, "wechat_v3", {}, {"apiv3_key": "short"})


def test_trade_bill_parser_keeps_successful_payments():
    bill = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
            "应结订单金额,代金券金额\n"
            "`2026-11-21 12:00:00,`wx0000,`1900000001,`0,`,`4200001,`MH1,`o1,`NATIVE,`SUCCESS,`CMB,`CNY,`15.50,`0.00\n"
            "`2026-11-21 12:05:00,`wx0000,`1900000001,`0,`,`4200002,`MH2,`o1,`NATIVE,`REFUND,`CMB,`CNY,`1.00,`0.00\n"
            "总交易单数,应结订单总金额\n`2,`16.50\n")
    records = wechat.parse_trade_bill(bill)
    assert [(r.txn_id, r.out_trade_no, r.amount) for r in records] == [("4200001", "MH1", Decimal("15.50"))]
