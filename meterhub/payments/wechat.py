"""WeChat Pay API v3 (Native payment, QR code) following its published notification scheme.

Callbacks: headers ``Wechatpay-Timestamp``, ``Wechatpay-Nonce``, ``Wechatpay-Signature`` (base64
RSA-SHA256 over ``timestamp\\nnonce\\nbody\\n``) and ``Wechatpay-Serial`` (which platform certificate signed);
the JSON body's ``resource`` is AEAD_AES_256_GCM-encrypted with the merchant's APIv3 key, its ``nonce`` and
``associated_data``. Requests to the API are signed with the merchant private key (``Authorization:
WECHATPAY2-SHA256-RSA2048 …``). Settings: ``mchid``, ``appid``, ``merchant_serial_no``, ``api_base``,
``platform_certificates`` ({serial: PEM of the certificate or its public key}); secrets: ``apiv3_key``
(32 characters) and ``merchant_private_key`` (PEM).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from ..errors import ValidationError
from ..i18n import _l
from . import signing
from .providers import (Channel, ForgedNotification, InvalidNotification, Notification, OrderRequest, PaymentError,
                        ProviderOrder, ProviderRecord)

log = logging.getLogger(__name__)
API_BASE = "https://api.mch.weixin.qq.com"
NATIVE_PATH = "/v3/pay/transactions/native"


def authorization(mchid: str, serial_no: str, private_pem: str, method: str, url_path: str, body: str,
                  timestamp: int | None = None, nonce: str | None = None) -> str:
    """The ``Authorization`` header of an API request (signature over method, path, time, nonce, body)."""
    ts, nonce = str(timestamp if timestamp is not None else int(time.time())), nonce or secrets.token_hex(16)
    message = f"{method}\n{url_path}\n{ts}\n{nonce}\n{body}\n".encode()
    signature = signing.rsa_sign(private_pem, message)
    return (f'WECHATPAY2-SHA256-RSA2048 mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{ts}",serial_no="{serial_no}"')


def _post_json(url: str, body: str, headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (configured https endpoint)
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        detail = err.read()[:300].decode(errors="replace")
        raise PaymentError(f"WeChat Pay refused the order ({err.code}): {detail}") from err
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise PaymentError(f"WeChat Pay is unreachable: {err}; try again later") from err


class WechatPayV3Provider:
    """WeChat Pay v3 Native (scan the QR code with WeChat)."""

    key, label = "wechat_v3", "WeChat Pay (API v3, Native)"
    settings_fields: tuple[str, ...] = ("mchid", "appid", "merchant_serial_no", "api_base", "platform_certificates")
    secret_fields: tuple[str, ...] = ("apiv3_key", "merchant_private_key")

    def setup(self, settings: dict[str, Any], secrets_: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        key = secrets_.get("apiv3_key", "")
        if key and len(key.encode()) != 32:
            raise ValidationError(_l("The WeChat Pay APIv3 key must be exactly 32 characters."), {"apiv3_key": "length"})
        return {"api_base": API_BASE, "platform_certificates": {}, **settings}, secrets_

    def create_order(self, channel: Channel, order: OrderRequest) -> ProviderOrder:
        s = channel.settings
        payload = json.dumps({
            "appid": s.get("appid", ""), "mchid": s.get("mchid", ""), "description": order.description[:127],
            "out_trade_no": order.out_trade_no, "time_expire": order.expires_at.isoformat(timespec="seconds"),
            "notify_url": channel.notify_url,
            "amount": {"total": signing.to_fen(order.amount), "currency": order.currency}}, ensure_ascii=False)
        url = s.get("api_base", API_BASE).rstrip("/") + NATIVE_PATH
        auth = authorization(s.get("mchid", ""), s.get("merchant_serial_no", ""),
                             channel.secrets.get("merchant_private_key", ""), "POST", urlsplit(url).path, payload)
        answer = _post_json(url, payload, {"Content-Type": "application/json", "Accept": "application/json",
                                           "Authorization": auth})
        if not answer.get("code_url"):
            raise PaymentError(f"WeChat Pay answered without code_url: {str(answer)[:200]}")
        return ProviderOrder(qr_payload=answer["code_url"])

    def parse_notification(self, channel: Channel, headers: Any, body: bytes) -> Notification:
        ts, nonce = headers.get("Wechatpay-Timestamp", ""), headers.get("Wechatpay-Nonce", "")
        signature, serial = headers.get("Wechatpay-Signature", ""), headers.get("Wechatpay-Serial", "")
        certificate = (channel.settings.get("platform_certificates") or {}).get(serial)
        if not (ts and nonce and signature and certificate) or not signing.rsa_verify(
                certificate, signing.signed_message(ts, nonce, body), signature):
            raise ForgedNotification(f"WeChat Pay callback signature does not verify (serial {serial[:40]!r})")
        try:
            envelope = json.loads(body)
            resource = envelope["resource"]
            if resource.get("algorithm") != "AEAD_AES_256_GCM":
                raise ValueError(f"unsupported algorithm {resource.get('algorithm')!r}")
            plain = signing.aes_gcm_decrypt(channel.secrets["apiv3_key"].encode(), resource["nonce"].encode(),
                                            (resource.get("associated_data") or "").encode(), resource["ciphertext"])
            txn = json.loads(plain)
            amount = txn["amount"]
            return Notification(
                str(txn["out_trade_no"]), str(txn["transaction_id"]), signing.from_fen(int(amount["total"])),
                str(amount.get("currency", "CNY")),
                envelope.get("event_type") == "TRANSACTION.SUCCESS" and txn.get("trade_state") == "SUCCESS",
                int(ts), nonce, datetime.fromisoformat(txn["success_time"]) if txn.get("success_time") else None, txn)
        except (ValueError, KeyError, TypeError, InvalidOperation, AttributeError) as err:
            raise InvalidNotification(f"WeChat Pay callback cannot be decoded: {err}") from err

    def acknowledge(self, ok: bool, message: str) -> tuple[str, int, str]:
        if ok:
            return "", 204, "application/json"
        return json.dumps({"code": "FAIL", "message": message[:200]}), 400, "application/json"

    def records(self, session: Session, channel: Channel, start: datetime, end: datetime) -> list[ProviderRecord]:
        """The trade bill must be downloaded from WeChat Pay (``/v3/bill/tradebill``) and given to
        :func:`parse_trade_bill`; without network access nothing is fetched here."""
        bill = channel.settings.get("trade_bill_csv")
        return parse_trade_bill(bill) if bill else []


def parse_trade_bill(text: str) -> list[ProviderRecord]:
    """Successful payments of a WeChat Pay trade bill (CSV with backtick-prefixed cells, summary at the end)."""
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    if not rows:
        return []
    header = [h.strip() for h in rows[0]]
    index = {name: header.index(name) for name in ("交易时间", "微信订单号", "商户订单号", "交易状态", "应结订单金额")
             if name in header}
    out = []
    for row in rows[1:]:
        cells = [c.strip().lstrip("`") for c in row]
        if len(cells) < len(header) or len(index) < 5 or cells[index["交易状态"]] != "SUCCESS":
            continue
        try:
            paid_at = datetime.fromisoformat(cells[index["交易时间"]])
            amount = Decimal(cells[index["应结订单金额"]]).quantize(Decimal("0.01"))
        except (ValueError, InvalidOperation):
            log.warning("skipping unreadable trade bill line %r", row[:3])
            continue
        out.append(ProviderRecord(cells[index["微信订单号"]], cells[index["商户订单号"]], amount, "CNY", paid_at))
    return out
