"""Orders and callbacks: create a channel, create an order, and apply a provider's signed callback as an
idempotent ledger top-up (key: the provider's transaction id) after checking amount and currency.

Callback outcomes (each logged in ``payment_notifications``):

- ``accepted``: first valid payment; the account is topped up.
- ``duplicate``: the same transaction again (a provider retry); nothing changes; answered OK.
- ``late``: paid after the order expired; still credited (the customer's money arrived).
- ``unapplied``: valid but the account cannot take it (closed); the order waits for a refund.
- ``forged`` / ``replay`` / ``stale`` / ``mismatch`` / ``unknown_order`` / ``invalid``: refused, logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..alarms import secrets as secret_store
from ..i18n import _l
from ..ledger import run_money_transaction
from ..ledger.errors import LedgerError
from ..ledger.money import parse_amount
from ..models import utcnow
from ..public_url import public_base_url, public_url
from ..modules.prepaid import cashier
from ..modules.prepaid.limits import check_topup
from ..modules.prepaid.models import PrepaidAccount
from ..redis_conn import get_redis, redis_key
from ..tenants import audit
from .models import PaymentChannel, PaymentNotification, PaymentOrder
from .providers import (Channel, ForgedNotification, InvalidNotification, OrderRequest, PaymentError,
                        get_provider)

log = logging.getLogger(__name__)
ORDER_TTL = timedelta(minutes=30)
CLOCK_SKEW = 300  # seconds a callback's timestamp may differ from our clock


def owner(channel: PaymentChannel) -> str:
    """The context binding a channel's encrypted secrets to it."""
    return f"payment:{channel.group_id}:{channel.id}"


def create_channel(session: Session, group_id: int, provider: str, name: str, settings: dict[str, Any] | None = None,
                   secrets_: dict[str, str] | None = None, *, actor: str) -> PaymentChannel:
    """Configure a provider for the group (the provider fills its defaults, e.g. sandbox keys)."""
    check_can_enable(provider)
    settings, plain = get_provider(provider).setup(dict(settings or {}), dict(secrets_ or {}))
    channel = PaymentChannel(group_id=group_id, provider=provider, name=name, notify_key=secrets.token_urlsafe(24),
                             settings=settings, secrets={})
    session.add(channel)
    session.flush()
    channel.secrets = secret_store.merge({}, plain, owner(channel))
    audit.record(session, group_id, "payment.channel_created", actor=actor, object_type="payment_channel",
                 object_id=channel.id, detail={"provider": provider, "name": name})
    return channel


def channel_view(channel: PaymentChannel) -> Channel:
    """The provider's view of a channel: secrets decrypted, and the notify URL under the configured
    ``PUBLIC_BASE_URL`` ('' without one): never built from a request's Host, which the payer chooses."""
    return Channel(channel.id, channel.group_id, channel.provider, dict(channel.settings),
                   secret_store.reveal(channel.secrets, owner(channel)),
                   public_url(f"/payments/notify/{channel.notify_key}"))


def require_public_url(provider: str, action: str) -> None:
    """PaymentError unless callbacks have a configured address: every order needs one, and a real (not
    test-only) channel cannot even be enabled without it."""
    if not public_base_url():
        raise PaymentError(f"Cannot {action}: set PUBLIC_BASE_URL (METERHUB_PUBLIC_BASE_URL, e.g. "
                           f"https://meterhub.example.com) to the address the provider {provider!r} calls back; "
                           "notify URLs are never taken from a request.")


def check_can_enable(provider: str) -> None:
    """PaymentError when a real payment channel of ``provider`` would be enabled without PUBLIC_BASE_URL."""
    if not getattr(get_provider(provider), "test_only", False):
        require_public_url(provider, "enable a real payment channel")


def enabled_channels(session: Session) -> list[PaymentChannel]:
    """The current group's enabled channels (RLS applies)."""
    return list(session.execute(select(PaymentChannel).where(PaymentChannel.enabled)
                                .order_by(PaymentChannel.id)).scalars())


def create_order(session: Session, account: PrepaidAccount, channel: PaymentChannel, amount: object,
                 return_url: str, portal_user_id: int | None = None) -> PaymentOrder:
    """An order to top up ``account``; the provider tells where to pay (pay URL or QR code). The payer
    returns to ``return_url`` (``OUT_TRADE_NO`` in it is replaced by the order's number)."""
    value = parse_amount(amount)
    check_topup(session, account.group_id, value, confirmed=True)
    if account.status != "open":
        raise PaymentError(f"account {account.number} is {account.status}; it cannot be topped up")
    if not channel.enabled:
        raise PaymentError(f"payment channel {channel.name} is disabled")
    require_public_url(channel.provider, "take online payments")
    order = PaymentOrder(group_id=account.group_id, property_id=account.property_id, account_id=account.id,
                         channel_id=channel.id, out_trade_no=f"MH{utcnow():%y%m%d}{secrets.token_hex(8).upper()}",
                         amount=value, currency="CNY", state="created", portal_user_id=portal_user_id,
                         expires_at=utcnow() + ORDER_TTL, detail={})
    # What the provider shows the payer (a plain string it keeps): in the language of the request placing the order,
    # the payer's (the portal's, zh_CN by default).
    description = str(_l("Top-up of account %(number)s", number=account.number))
    request = OrderRequest(order.out_trade_no, value, "CNY", description, order.expires_at,
                           return_url.replace("OUT_TRADE_NO", order.out_trade_no))
    placed = get_provider(channel.provider).create_order(channel_view(channel), request)
    order.pay_url, order.detail = placed.pay_url, {"qr": placed.qr_payload} if placed.qr_payload else {}
    session.add(order)
    session.flush()
    return order


@dataclass(frozen=True)
class CallbackResult:
    outcome: str
    message: str
    body: str
    status: int
    content_type: str
    balance: tuple[int, int, Decimal] | None = None  # (group, account, balance) to announce after commit


def _log(session: Session, channel: PaymentChannel, outcome: str, message: str, body: bytes, remote: str,
         order_id: int | None = None, txn_id: str = "") -> None:
    session.add(PaymentNotification(group_id=channel.group_id, channel_id=channel.id, order_id=order_id,
                                    outcome=outcome, provider_txn_id=txn_id[:64], message=message[:500],
                                    body_sha256=hashlib.sha256(body).hexdigest(), remote_addr=remote[:64]))
    level = logging.INFO if outcome in ("accepted", "duplicate", "late") else logging.WARNING
    log.log(level, "payment callback on channel %s: %s (%s) %s", channel.id, outcome, txn_id, message)


def _first_use_of_nonce(channel_id: int, nonce: str) -> bool:
    key = redis_key("pay", "nonce", channel_id, hashlib.sha256(nonce.encode()).hexdigest())
    try:
        return bool(get_redis().set(key, "1", nx=True, ex=CLOCK_SKEW * 2 + 60))
    except redis.RedisError as err:  # the order's own state still applies a payment once: take the money
        log.warning("payment callback nonce not checked (Redis unreachable: %s); the order applies it once", err)
        return True


def handle_callback(session: Session, channel: PaymentChannel, headers: Any, body: bytes, remote: str) -> CallbackResult:
    """Verify, decode and apply one callback; commits; returns what to answer the provider."""
    provider = get_provider(channel.provider)

    def answer(outcome: str, message: str, order_id: int | None = None, txn: str = "",
               balance: tuple[int, int, Decimal] | None = None) -> CallbackResult:
        ok = outcome in ("accepted", "duplicate", "late", "unapplied")
        _log(session, channel, outcome, message, body, remote, order_id, txn)
        session.commit()
        return CallbackResult(outcome, message, *provider.acknowledge(ok, message), balance)

    try:
        note = provider.parse_notification(channel_view(channel), headers, body)
    except ForgedNotification as err:
        session.rollback()
        return answer("forged", str(err))
    except InvalidNotification as err:
        session.rollback()
        return answer("invalid", str(err))
    if abs(time.time() - note.timestamp) > CLOCK_SKEW:
        return answer("stale", f"timestamp {note.timestamp} is outside ±{CLOCK_SKEW} s", txn=note.txn_id)
    if not _first_use_of_nonce(channel.id, note.nonce):
        return answer("replay", "this signed callback was already received", txn=note.txn_id)
    try:
        return _check_and_apply(session, channel, note, answer, body, remote)
    except Exception:
        # Let the provider's retry of this very request through: nothing was applied.
        with contextlib.suppress(redis.RedisError):
            get_redis().delete(redis_key("pay", "nonce", channel.id, hashlib.sha256(note.nonce.encode()).hexdigest()))
        raise


def _check_and_apply(session: Session, channel: PaymentChannel, note: Any, answer: Any, body: bytes,
                     remote: str) -> CallbackResult:
    order = session.execute(select(PaymentOrder).where(
        PaymentOrder.out_trade_no == note.out_trade_no, PaymentOrder.channel_id == channel.id)
        .with_for_update()).scalar()
    if order is None:
        return answer("unknown_order", f"no order {note.out_trade_no[:40]} on this channel", txn=note.txn_id)
    if not note.succeeded:
        return answer("invalid", "not a successful payment; ignored", order.id, note.txn_id)
    if note.amount != order.amount or note.currency != order.currency:
        return answer("mismatch", f"paid {note.amount} {note.currency}, order is {order.amount} {order.currency}",
                      order.id, note.txn_id)
    if order.state in ("paid", "unapplied"):
        if order.provider_txn_id == note.txn_id:
            return answer("duplicate", "already applied", order.id, note.txn_id)
        return answer("mismatch", f"order already paid by transaction {order.provider_txn_id}", order.id, note.txn_id)
    return _apply(session, channel, order, note, answer, body, remote)


def _apply(session: Session, channel: PaymentChannel, order: PaymentOrder, note: Any, answer: Any, body: bytes,
           remote: str) -> CallbackResult:
    late = order.state == "expired" or utcnow() > order.expires_at
    order_id, group_id, account_id = order.id, order.group_id, order.account_id
    key = f"online:{channel.provider}:{note.txn_id}"

    def work(s: Session) -> Any:
        locked = s.execute(select(PaymentOrder).where(PaymentOrder.id == order_id).with_for_update()).scalar_one()
        result = cashier.topup(s, group_id, account_id, locked.amount, "online", key,
                               actor=f"payment:{channel.provider}", enforce_limits=False)
        locked.state, locked.provider_txn_id, locked.transfer_id = "paid", note.txn_id, result.transfer_id
        locked.paid_at = note.paid_at or utcnow()
        _log(s, channel, "late" if late else "accepted", f"top-up {result.receipt_no}", body, remote, order_id,
             note.txn_id)
        return result

    try:
        result = run_money_transaction(session, work)
    except LedgerError as err:
        session.rollback()
        locked = session.execute(select(PaymentOrder).where(PaymentOrder.id == order_id).with_for_update()).scalar_one()
        locked.state, locked.provider_txn_id, locked.paid_at = "unapplied", note.txn_id, note.paid_at or utcnow()
        return answer("unapplied", f"{err}; refund the customer", order_id, note.txn_id)
    provider = get_provider(channel.provider)
    outcome = "late" if late else "accepted"
    return CallbackResult(outcome, "", *provider.acknowledge(True, "OK"), (group_id, account_id, result.balance))


def expire_orders(session: Session) -> int:
    """Mark unpaid orders past their expiry as expired (a late callback still credits them)."""
    rows = session.execute(select(PaymentOrder).where(PaymentOrder.state == "created",
                                                      PaymentOrder.expires_at < utcnow())).scalars().all()
    for order in rows:
        order.state = "expired"
    return len(rows)
