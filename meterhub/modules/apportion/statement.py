"""Computing an apportioning statement for a period: who pays what, and why (nothing is written).

Rules (also in the console's help text):

* Amount: the parent meter's usage in the period, minus the sum of its sub-meters when the rule says so
  (losses and public consumption), never below 0, priced by the rule's plan (version in force at the
  period start, one interval over the whole period) and rounded half-up to fen.
* Weights: ratio → the member's ratio; area → its room's m²; usage → its own meters' usage in the
  period. Ratio and area weights are multiplied by the fraction of the period the account was open, so an
  account opened or closed mid-period pays for its days only; the others cover the rest. Usage weights
  count usage while the account was open. Preset (never opened) accounts and accounts closed before the
  period do not share.
* Shares are ``amount × weight / total weight`` rounded down to fen; the remainder cents go to the rule's
  named remainder account (when it does not share this period: the largest share, lowest account id on a
  tie), so the shares always sum to the amount exactly.
* A sub-meter offline in the period counts up to its last good reading (see :mod:`.usage`); the statement
  flags it. The parent meter needs a good reading in the period, else the run is refused.
* An account closed by posting time cannot be debited (its wallet was settled): its share is billed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...devices.models import Meter
from ...errors import NotFound, ValidationError
from ...i18n import Joined, _l, joined, stored
from ...ledger.money import CENT, round_money
from ...tariffs import service as tariffs
from ...tariffs.pricing import price_interval
from ...tenants.models import Property, Room
from ..prepaid.models import MeterState, PrepaidAccount
from .models import ApportionMember, ApportionRule, ApportionSubMeter
from ...tenants.lookup import label_of
from .usage import MeterUsage, period_usage, window_usage

ZERO = Decimal(0)


@dataclass
class ShareLine:
    """One account's share of the period's amount and the reason for it."""

    account_id: int
    number: str
    customer: str
    basis: Decimal
    open_fraction: Decimal
    weight: Decimal
    amount: Decimal = ZERO
    remainder: Decimal = ZERO
    disposition: str = "deducted"
    why: Joined = field(default_factory=Joined)  # the reason, a message per step (shown in the reader's language)


@dataclass
class Statement:
    """The apportioning of one rule over one period."""

    rule_id: int
    start: datetime
    end: datetime
    parent: MeterUsage
    subs: list[MeterUsage]
    usage: Decimal
    amount: Decimal
    lines: list[ShareLine] = field(default_factory=list)
    warnings: list[Any] = field(default_factory=list)  # messages (lazy strings)

    def as_json(self) -> dict[str, Any]:
        """The statement as JSON-safe data (stored with the posted run)."""
        def meter(u: MeterUsage) -> dict[str, Any]:
            return {"meter_id": u.meter_id, "usage": str(u.usage), "offline": u.offline,
                    "last_ts": u.last_ts.isoformat() if u.last_ts else None}
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "parent": meter(self.parent),
                "subs": [meter(s) for s in self.subs], "usage": str(self.usage), "amount": str(self.amount),
                "warnings": [stored(w) for w in self.warnings],
                "lines": [{"account_id": ln.account_id, "number": ln.number, "customer": ln.customer,
                           "basis": str(ln.basis), "open_fraction": str(ln.open_fraction), "weight": str(ln.weight),
                           "amount": str(ln.amount), "remainder": str(ln.remainder), "disposition": ln.disposition,
                           "why": stored(ln.why)} for ln in self.lines]}


def period_bounds(tz: str, first_day: date, end_day: date) -> tuple[datetime, datetime]:
    """Local midnights of ``first_day`` and ``end_day`` (exclusive) as aware datetimes."""
    if end_day <= first_day:
        raise ValidationError(_l("The period end %(end)s must be after its start %(start)s.", end=end_day,
                                 start=first_day), {"end": "order"})
    zone = ZoneInfo(tz)
    return datetime.combine(first_day, time(), zone), datetime.combine(end_day, time(), zone)


def month_bounds(tz: str, year: int, month: int) -> tuple[datetime, datetime]:
    """The calendar month as a period."""
    first = date(year, month, 1)
    return period_bounds(tz, first, (first + timedelta(days=32)).replace(day=1))


def open_window(account: PrepaidAccount, start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """The part of the period the account was open, or None."""
    if account.status == "preset" or account.opened_at is None:
        return None
    lo = max(start, account.opened_at)
    hi = min(end, account.closed_at) if account.closed_at else end
    return (lo, hi) if hi > lo else None


def load_rule(session: Session, group_id: int, rule_id: int) -> ApportionRule:
    """The group's rule or NotFound."""
    rule = session.get(ApportionRule, rule_id)
    if rule is None or rule.group_id != group_id:
        raise NotFound(_l("Apportioning rule %(rule)s not found.", rule=rule_id))
    return rule


def _account_usage(session: Session, utility: str, members: list[tuple[ApportionMember, PrepaidAccount]],
                   windows: dict[int, tuple[datetime, datetime]]) -> dict[int, Decimal]:
    meters = session.execute(select(MeterState.account_id, MeterState.meter_id).where(
        MeterState.account_id.in_([a.id for _, a in members]), MeterState.utility == utility)).all()
    asked = [(meter_id, *windows[account_id]) for account_id, meter_id in meters if account_id in windows]
    owner = {meter_id: account_id for account_id, meter_id in meters}
    totals: dict[int, Decimal] = {}
    for u in window_usage(session, asked, utility):
        totals[owner[u.meter_id]] = totals.get(owner[u.meter_id], ZERO) + u.usage
    return totals


def _basis(rule: ApportionRule, session: Session, member: ApportionMember, account: PrepaidAccount,
           usage: dict[int, Decimal]) -> tuple[Decimal, Any]:
    if rule.method == "ratio":
        return Decimal(member.ratio), _l("ratio %(ratio)s", ratio=format(Decimal(member.ratio).normalize(), "f"))
    if rule.method == "area":
        room = session.get(Room, account.room_id) if account.room_id else None
        area = Decimal(room.area_m2) if room else ZERO
        return area, (_l("room %(room)s: %(area)s m²", room=room.label, area=area) if room
                      else _l("no room: 0 m²"))
    value = usage.get(account.id, ZERO)
    return value, _l("own usage %(usage)s", usage=value)


def _meter_name(session: Session, group_id: int, meter_id: int) -> str:
    return label_of(session, group_id, "meter", meter_id) or str(meter_id)


def compute(session: Session, group_id: int, rule_id: int, start: datetime, end: datetime) -> Statement:
    """The statement of ``rule_id`` over ``[start, end)`` (read-only)."""
    rule = load_rule(session, group_id, rule_id)
    parent_meter = session.get(Meter, rule.parent_meter_id)
    utility = parent_meter.utility
    tz = session.get(Property, rule.property_id).timezone
    sub_ids = list(session.execute(select(ApportionSubMeter.meter_id).where(ApportionSubMeter.rule_id == rule.id)
                                   .order_by(ApportionSubMeter.meter_id)).scalars())
    measured = period_usage(session, [rule.parent_meter_id, *sub_ids], start, end, utility)
    parent = measured[rule.parent_meter_id]
    if parent.no_data or parent.last_ts is None or parent.last_ts <= start:
        raise ValidationError(_l("The parent meter %(meter)s has no good reading in the period %(start)s–%(end)s; "
                                 "collect it before apportioning.", meter=_meter_name(session, group_id, rule.parent_meter_id),
                                 start=start.date(), end=(end - timedelta(seconds=1)).date()), {"parent": "no data"})
    subs = [measured[m] for m in sub_ids]
    warnings: list[Any] = [
        _l("Sub-meter %(meter)s offline since %(since)s: counted up to its last good reading.",
           meter=_meter_name(session, group_id, s.meter_id), since=s.last_ts) if s.last_ts else
        _l("Sub-meter %(meter)s never gave a good reading: counted as 0.", meter=_meter_name(session, group_id, s.meter_id))
        for s in subs if s.offline]
    usage = parent.usage - (sum((s.usage for s in subs), ZERO) if rule.subtract_sub_meters else ZERO)
    if usage < 0:
        warnings.append(_l("The sub-meters used %(usage)s more than the parent meter; nothing to share.", usage=-usage))
        usage = ZERO
    version = tariffs.version_at(session, rule.tariff_id, start)
    price = price_interval(tariffs.as_plan(version), start, end, tz, usage) if usage else None
    statement = Statement(rule.id, start, end, parent, subs, usage, round_money(price.cost) if price else ZERO,
                          warnings=warnings)
    members = list(session.execute(select(ApportionMember, PrepaidAccount)
                                   .join(PrepaidAccount, PrepaidAccount.id == ApportionMember.account_id)
                                   .where(ApportionMember.rule_id == rule.id).order_by(PrepaidAccount.id)).tuples())
    windows = {a.id: w for _, a in members if (w := open_window(a, start, end))}
    usage_by_account = _account_usage(session, utility, members, windows) if rule.method == "usage" else {}
    period_seconds = Decimal((end - start).total_seconds())
    for member, account in members:
        window = windows.get(account.id)
        fraction = Decimal((window[1] - window[0]).total_seconds()) / period_seconds if window else ZERO
        basis, reason = _basis(rule, session, member, account, usage_by_account)
        why = joined(reason)
        weight = basis if rule.method == "usage" else basis * fraction
        if window is None:
            why.append(_l("not open in the period"))
        elif fraction < 1 and rule.method != "usage":
            why.append(_l("open %(start)s–%(end)s (%(fraction)s of the period)", start=window[0].date(),
                          end=window[1].date(), fraction=format(fraction, ".4f")))
        statement.lines.append(ShareLine(account.id, account.number, account.customer_name, basis,
                                         fraction, weight if window else ZERO, why=why))
    _distribute(statement, rule.remainder_account_id)
    return statement


def _distribute(statement: Statement, remainder_account_id: int | None) -> None:
    total_weight = sum((ln.weight for ln in statement.lines), ZERO)
    if statement.amount and not total_weight:
        raise ValidationError(_l("No member account shares this period (all weights are 0); add members or check "
                                 "their rooms' areas."), {"members": "no weight"})
    for line in statement.lines:
        exact = statement.amount * line.weight / total_weight if total_weight else ZERO
        line.amount = exact.quantize(CENT, rounding=ROUND_DOWN)
        if line.weight:
            line.why.append(_l("%(weight)s/%(total)s of %(amount)s = %(exact)s", weight=format(line.weight, ".4f"),
                               total=format(total_weight, ".4f"), amount=statement.amount, exact=format(exact, ".6f")))
    remainder = statement.amount - sum((ln.amount for ln in statement.lines), ZERO)
    if remainder:
        sharing = [ln for ln in statement.lines if ln.weight]
        target = next((ln for ln in sharing if ln.account_id == remainder_account_id), None)
        target = target or max(sharing, key=lambda ln: (ln.amount, -ln.account_id))
        target.amount += remainder
        target.remainder = remainder
        target.why.append(_l("+ rounding remainder %(amount)s", amount=remainder))
