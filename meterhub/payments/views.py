"""Web endpoints of payments: the providers' asynchronous callbacks (CSRF-exempt, verified by signature)
and the sandbox provider's simulated pay page."""

from __future__ import annotations

import logging
import secrets
from decimal import Decimal

from flask import Blueprint, Response, abort, jsonify, redirect, render_template, request
from sqlalchemy import select, text

from ..db import use_group
from ..extensions import csrf, db
from ..models import utcnow
from ..modules.prepaid.events import notify_balance
from . import orders, sandbox
from .models import PaymentChannel, SandboxTrade

log = logging.getLogger(__name__)
bp = Blueprint("payments", __name__)
MAX_CALLBACK_BYTES = 64 * 1024


def _channel_for(notify_key: str) -> PaymentChannel | None:
    row = db.session.execute(text("SELECT channel_id, group_id FROM meterhub_payment_channel_lookup(:k)"),
                             {"k": notify_key[:64]}).first()
    if row is None:
        return None
    use_group(row.group_id)
    return db.session.get(PaymentChannel, row.channel_id)


@bp.route("/payments/notify/<notify_key>", methods=["POST"])
@csrf.exempt
def notify(notify_key: str) -> Response:
    """A provider's signed callback: verified, applied idempotently, answered as the provider expects."""
    channel = _channel_for(notify_key)
    if channel is None:
        log.warning("payment callback for unknown channel key from %s", request.remote_addr)
        return jsonify({"code": "FAIL", "message": "unknown channel"}), 404
    if (request.content_length or 0) > MAX_CALLBACK_BYTES:
        return jsonify({"code": "FAIL", "message": "body too large"}), 413
    body = request.get_data(cache=False)[:MAX_CALLBACK_BYTES + 1]
    result = orders.handle_callback(db.session, channel, request.headers, body, request.remote_addr or "")
    if result.balance is not None:
        notify_balance(*result.balance)
    return Response(result.body, status=result.status, content_type=result.content_type)


def _safe_return(url: str) -> str:
    return url if url.startswith("/") and not url.startswith("//") else "/"


@bp.route("/pay/sandbox/<token>", methods=["GET", "POST"])
def sandbox_pay(token: str):
    """The sandbox provider's pay page: shows the order; paying records the provider-side trade and queues
    its signed callback (retried until the merchant answers)."""
    data = sandbox.read_pay_token(token)
    if data is None:
        abort(404)
    use_group(int(data["g"]))
    channel = db.session.get(PaymentChannel, int(data["c"]))
    if channel is None or channel.provider != "sandbox":
        abort(404)
    amount = Decimal(data["a"])
    if request.method == "GET":
        return render_template("portal/sandbox_pay.html", amount=amount, currency=data["cur"],
                               description=data.get("d", ""), out_trade_no=data["o"], channel=channel)
    back = _safe_return(data.get("r") or "/")
    if request.form.get("action") != "pay":
        return redirect(back)
    trade = db.session.execute(select(SandboxTrade).where(SandboxTrade.channel_id == channel.id,
                                                          SandboxTrade.out_trade_no == data["o"])).scalar()
    if trade is None:
        trade = SandboxTrade(group_id=channel.group_id, channel_id=channel.id, out_trade_no=data["o"],
                             txn_id=f"SBX{utcnow():%Y%m%d}{secrets.token_hex(10).upper()}", amount=amount,
                             currency=data["cur"], state="SUCCESS", paid_at=utcnow())
        db.session.add(trade)
        db.session.commit()
    sandbox.enqueue_callback(trade.id, channel.group_id, data["n"])
    return redirect(back)
