"""Counter operations: top-up (售电), refund (退费) and reversal (冲正), idempotent and audited.

Each function runs inside the caller's transaction (wrap it in ``ledger.run_money_transaction``) and
returns a :class:`MoneyResult`; the caller fires ``balance_changed`` after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...i18n import _l
from ...commands.service import create_command
from ...devices.models import Device, Meter
from ...errors import NotFound, ValidationError
from ...ledger import post as ledger
from ...ledger.errors import AlreadyReversed, InsufficientBalance, LedgerError
from ...ledger.models import CHANNEL_ACCOUNT, Entry, Transfer
from ...ledger.money import parse_amount
from ...tenants import audit
from .control import evaluate_accounts
from .limits import check_topup
from .models import MeterState, PrepaidAccount

REFUND_ACCOUNT = {"cash": "cash_drawer", "card": "refunds_payable", "transfer": "refunds_payable",
                  "online": "refunds_payable"}


@dataclass(frozen=True)
class MoneyResult:
    """The outcome of a money request (also when replayed from its idempotency key)."""

    transfer_id: int
    account_id: int
    amount: Decimal
    balance: Decimal
    receipt_no: str | None
    created: bool


def load_account(session: Session, group_id: int, account_id: int) -> PrepaidAccount:
    """The group's account or NotFound."""
    account = session.get(PrepaidAccount, account_id)
    if account is None or account.group_id != group_id:
        raise NotFound(_l("prepaid account %(account_id)s not found", account_id=account_id))
    return account


def _channel(channel: str, table: dict[str, str]) -> str:
    if channel not in table:
        raise ValidationError(_l("payment channel %(channel)r must be one of %(join)s",
                                 channel=channel, join=', '.join(table)), {"channel": "invalid"})
    return table[channel]


def _result(session: Session, account: PrepaidAccount, transfer: Transfer, created: bool) -> MoneyResult:
    return MoneyResult(transfer.id, account.id, transfer.amount, ledger.balance_of(session, account.wallet_account_id),
                       transfer.receipt_no, created)


def _replay(session: Session, account: PrepaidAccount, key: str, request: dict) -> MoneyResult | None:
    existing = ledger.find_transfer(session, account.group_id, key)
    if existing is None:
        return None
    return _result(session, account, ledger.check_replay(existing, ledger.request_hash(request), key), False)


def topup(session: Session, group_id: int, account_id: int, amount: object, channel: str, key: str, *,
          actor: str, operator_id: int | None = None, confirmed: bool = True,
          enforce_limits: bool = True) -> MoneyResult:
    """Money into the account from a payment channel (cash, card, transfer, online), within the group's
    top-up limits; above the confirmation threshold only when ``confirmed`` (the counter and the API pass
    what the person confirmed). A paid online order passes ``enforce_limits=False``: it was checked when
    placed, and the customer's money has arrived."""
    value = parse_amount(amount)
    funding_kind = _channel(channel, CHANNEL_ACCOUNT)
    account = load_account(session, group_id, account_id)
    ledger.lock_accounts(session, [account.wallet_account_id])
    request = {"op": "topup", "account": account.id, "amount": str(value), "channel": channel}
    if (replayed := _replay(session, account, key, request)) is not None:
        return replayed
    if enforce_limits:
        check_topup(session, group_id, value, confirmed=confirmed, what=f" for account {account.number}")
    if account.status != "open":
        raise LedgerError(_l("account %(number)s is %(status)s; open it before topping up",
                             number=account.number, status=account.status))
    funding = ledger.ensure_account(session, group_id, funding_kind, f"{funding_kind}:{account.property_id}",
                                    property_id=account.property_id)
    transfer, _ = ledger.post_transfer(
        session, group_id, kind="topup", key=key, request=request,
        legs=[(account.wallet_account_id, value), (funding, -value)], wallet_account_id=account.wallet_account_id,
        amount=value, channel=channel, receipt_no=ledger.next_receipt_no(session, group_id), actor=actor,
        operator_id=operator_id,
    )
    account.purchase_count += 1
    audit.record(session, group_id, "prepaid.topup", actor=actor, operator_id=operator_id, object_type="transfer",
                 object_id=transfer.id, detail={"account": account.number, "amount": str(value), "channel": channel,
                                                "receipt_no": transfer.receipt_no})
    _write_to_meters(session, account, value, actor, operator_id)
    evaluate_accounts(session, [account.id], actor=actor)
    return _result(session, account, transfer, True)


def _write_to_meters(session: Session, account: PrepaidAccount, amount: Decimal, actor: str,
                     operator_id: int | None) -> None:
    """Meter-side prepaid: queue the top-up write with our purchase counter for capable meters."""
    from ...plugins import driver_registry

    rows = session.execute(select(Meter, Device).join(MeterState, MeterState.meter_id == Meter.id)
                           .join(Device, Device.id == Meter.device_id)
                           .where(MeterState.account_id == account.id, MeterState.active)).all()
    if not rows:
        return
    try:
        drivers = driver_registry()
    except Exception:  # no plugins in this process: nothing is known to be meter-side
        return
    for meter, device in rows:
        driver = drivers.get(device.driver_key)
        if driver is not None and "meter_side_prepaid" in driver.capabilities_for(device.config):
            create_command(session, meter, "write_topup",
                           {"amount": str(amount), "purchase_count": account.purchase_count},
                           source="prepaid", actor=actor, operator_id=operator_id)


def refund(session: Session, group_id: int, account_id: int, amount: object, channel: str, key: str, *,
           actor: str, operator_id: int | None = None, reason: str = "") -> MoneyResult:
    """Money out of the account back to the customer; never more than the balance."""
    value = parse_amount(amount)
    payout_kind = _channel(channel, REFUND_ACCOUNT)
    account = load_account(session, group_id, account_id)
    ledger.lock_accounts(session, [account.wallet_account_id])
    request = {"op": "refund", "account": account.id, "amount": str(value), "channel": channel}
    if (replayed := _replay(session, account, key, request)) is not None:
        return replayed
    balance = ledger.balance_of(session, account.wallet_account_id)
    if value > balance:
        raise InsufficientBalance(_l("account %(number)s holds %(balance)s; cannot refund %(value)s",
                                     number=account.number, balance=balance, value=value))
    payout = ledger.ensure_account(session, group_id, payout_kind, f"{payout_kind}:{account.property_id}",
                                   property_id=account.property_id)
    transfer, _ = ledger.post_transfer(
        session, group_id, kind="refund", key=key, request=request,
        legs=[(account.wallet_account_id, -value), (payout, value)], wallet_account_id=account.wallet_account_id,
        amount=-value, channel=channel, receipt_no=ledger.next_receipt_no(session, group_id), actor=actor,
        operator_id=operator_id, reason=reason[:300],
    )
    audit.record(session, group_id, "prepaid.refund", actor=actor, operator_id=operator_id, object_type="transfer",
                 object_id=transfer.id, detail={"account": account.number, "amount": str(value), "channel": channel})
    evaluate_accounts(session, [account.id], actor=actor)
    return _result(session, account, transfer, True)


def reverse(session: Session, group_id: int, transfer_id: int, reason: str, key: str, *, actor: str,
            operator_id: int | None = None) -> MoneyResult:
    """Undo a wrong top-up with the opposite transfer (the original stays; at most one reversal)."""
    if not reason.strip():
        raise ValidationError(_l("a reversal needs a reason"), {"reason": "required"})
    original = session.get(Transfer, transfer_id)
    if original is None or original.group_id != group_id or original.kind != "topup":
        raise NotFound(_l("top-up %(transfer_id)s not found", transfer_id=transfer_id))
    account = session.execute(select(PrepaidAccount).where(
        PrepaidAccount.wallet_account_id == original.wallet_account_id)).scalar_one()
    ledger.lock_accounts(session, [account.wallet_account_id])
    request = {"op": "reversal", "transfer": original.id, "reason": reason.strip()}
    if (replayed := _replay(session, account, key, request)) is not None:
        return replayed
    if session.execute(select(Transfer.id).where(Transfer.reverses_transfer_id == original.id)).scalar():
        raise AlreadyReversed(f"top-up {original.id} ({original.receipt_no}) was already reversed")
    legs = [(e.account_id, -e.amount) for e in session.execute(
        select(Entry).where(Entry.transfer_id == original.id).order_by(Entry.id)).scalars()]
    transfer, _ = ledger.post_transfer(
        session, group_id, kind="reversal", key=key, request=request, legs=legs,
        wallet_account_id=account.wallet_account_id, amount=-original.amount, channel=original.channel,
        reverses_transfer_id=original.id, reason=reason.strip()[:300], actor=actor, operator_id=operator_id,
        receipt_no=ledger.next_receipt_no(session, group_id),
    )
    audit.record(session, group_id, "prepaid.reversal", actor=actor, operator_id=operator_id, object_type="transfer",
                 object_id=transfer.id, detail={"reverses": original.id, "amount": str(original.amount),
                                                "reason": reason.strip()})
    evaluate_accounts(session, [account.id], actor=actor)
    return _result(session, account, transfer, True)
