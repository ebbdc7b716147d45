"""The sandbox provider: behaves like a real one, served by the app itself.

It has its own RSA signing key (created with the channel), a simulated pay page (``/pay/sandbox/<token>``)
and sends signed asynchronous callbacks from an rq job, retried with back-off until the merchant answers
2xx. Callbacks are signed like WeChat Pay v3 (RSA-SHA256 over ``timestamp\\nnonce\\nbody\\n``) with headers
``X-Sandbox-Timestamp``, ``X-Sandbox-Nonce`` and ``X-Sandbox-Signature``; the body is plain JSON.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import urllib.error
import urllib.request
from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import current_app, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import signing
from .providers import Channel, ForgedNotification, InvalidNotification, Notification, OrderRequest, ProviderOrder
from .providers import ProviderRecord

log = logging.getLogger(__name__)
RETRY_INTERVALS = [5, 30, 120, 600, 1800]
TOKEN_SALT = "sandbox-pay"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=TOKEN_SALT)


def pay_token(channel: Channel, order: OrderRequest) -> str:
    """The signed reference of a sandbox payment (what the provider would keep as its prepay id)."""
    return _serializer().dumps({"g": channel.group_id, "c": channel.id, "o": order.out_trade_no,
                                "a": str(order.amount), "cur": order.currency, "n": channel.notify_url,
                                "r": order.return_url, "d": order.description})


def read_pay_token(token: str, max_age: int = 86400) -> dict[str, Any] | None:
    try:
        return _serializer().loads(token, max_age=max_age)
    except (BadSignature, ValueError, TypeError):
        return None


def sign_callback(private_pem: str, body: bytes, timestamp: int | None = None,
                  nonce: str | None = None) -> dict[str, str]:
    """Headers of a sandbox callback carrying ``body``."""
    ts, nonce = str(timestamp if timestamp is not None else int(time.time())), nonce or secrets.token_hex(16)
    return {"Content-Type": "application/json", "X-Sandbox-Timestamp": ts, "X-Sandbox-Nonce": nonce,
            "X-Sandbox-Signature": signing.rsa_sign(private_pem, signing.signed_message(ts, nonce, body))}


def callback_body(txn_id: str, out_trade_no: str, amount: Decimal, currency: str, paid_at: datetime) -> bytes:
    return json.dumps({"event": "payment.succeeded", "txn_id": txn_id, "out_trade_no": out_trade_no,
                       "amount": f"{amount:.2f}", "currency": currency, "status": "SUCCESS",
                       "paid_at": paid_at.isoformat()}, separators=(",", ":")).encode()


class SandboxProvider:
    """Test payments with real signatures, a pay page and retried callbacks."""

    key, label, test_only = "sandbox", "Sandbox (test payments)", True
    settings_fields: tuple[str, ...] = ("public_key",)
    secret_fields: tuple[str, ...] = ("private_key",)

    def setup(self, settings: dict[str, Any], secrets_: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        if not settings.get("public_key") or not secrets_.get("private_key"):
            private, public = signing.generate_rsa_pem()
            settings, secrets_ = {**settings, "public_key": public}, {**secrets_, "private_key": private}
        return settings, secrets_

    def create_order(self, channel: Channel, order: OrderRequest) -> ProviderOrder:
        return ProviderOrder(pay_url=url_for("payments.sandbox_pay", token=pay_token(channel, order)))

    def parse_notification(self, channel: Channel, headers: Any, body: bytes) -> Notification:
        ts, nonce = headers.get("X-Sandbox-Timestamp", ""), headers.get("X-Sandbox-Nonce", "")
        signature = headers.get("X-Sandbox-Signature", "")
        if not (ts and nonce and signature) or not signing.rsa_verify(
                channel.settings.get("public_key", ""), signing.signed_message(ts, nonce, body), signature):
            raise ForgedNotification("sandbox callback signature does not verify")
        try:
            data = json.loads(body)
            return Notification(str(data["out_trade_no"]), str(data["txn_id"]), Decimal(str(data["amount"])),
                                str(data["currency"]), data.get("status") == "SUCCESS", int(ts), nonce,
                                datetime.fromisoformat(data["paid_at"]) if data.get("paid_at") else None, data)
        except (ValueError, KeyError, TypeError, ArithmeticError) as err:
            raise InvalidNotification(f"sandbox callback body is not understood: {err}") from err

    def acknowledge(self, ok: bool, message: str) -> tuple[str, int, str]:
        body = json.dumps({"code": "SUCCESS" if ok else "FAIL", "message": message})
        return body, 200 if ok else 400, "application/json"

    def records(self, session: Session, channel: Channel, start: datetime, end: datetime) -> list[ProviderRecord]:
        from .models import SandboxTrade

        rows = session.execute(select(SandboxTrade).where(
            SandboxTrade.channel_id == channel.id, SandboxTrade.paid_at >= start, SandboxTrade.paid_at < end)
            .order_by(SandboxTrade.id)).scalars()
        return [ProviderRecord(r.txn_id, r.out_trade_no, r.amount, r.currency, r.paid_at) for r in rows]


def enqueue_callback(trade_id: int, group_id: int, notify_url: str) -> None:
    """Queue the signed callback of a sandbox trade, retried with back-off until answered 2xx."""
    from ..outbox import enqueue_job

    intervals = list(current_app.config.get("SANDBOX_RETRY_INTERVALS", RETRY_INTERVALS))
    enqueue_job("default", "meterhub.payments.sandbox:deliver_callback",
                {"trade_id": trade_id, "group_id": group_id, "notify_url": notify_url,
                 "retry_intervals": intervals or None}, group_id=group_id,
                description=f"sandbox payment callback {trade_id}")  # held in the outbox while Redis is down


def deliver_callback(trade_id: int, group_id: int, notify_url: str) -> int:
    """rq job: sign and POST the callback of a trade; raise on anything but 2xx so rq retries."""
    from ..alarms import secrets as secret_store
    from ..db import service_session
    from .models import PaymentChannel, SandboxTrade

    with service_session() as session:
        trade = session.get(SandboxTrade, trade_id)
        channel = session.get(PaymentChannel, trade.channel_id) if trade else None
        if trade is None or channel is None or trade.group_id != group_id:
            log.warning("sandbox trade %s of group %s vanished; no callback", trade_id, group_id)
            return 0
        private = secret_store.reveal(channel.secrets, f"payment:{channel.group_id}:{channel.id}")["private_key"]
        url = notify_url
        body = callback_body(trade.txn_id, trade.out_trade_no, trade.amount, trade.currency, trade.paid_at)
    request = urllib.request.Request(url, data=body, headers=sign_callback(private, body), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our own notify URL)
            log.info("sandbox callback %s -> %s", trade.txn_id, response.status)
            return response.status
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"merchant answered {err.code} to sandbox callback {trade.txn_id}") from err
    except (urllib.error.URLError, OSError) as err:
        raise RuntimeError(f"sandbox callback {trade.txn_id} to {url} failed: {err}") from err

