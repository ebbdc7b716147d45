"""Creating apportioning rules: parent meter, sub-meters, member accounts, method, plan."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...i18n import _l, joined
from ...devices.models import Meter
from ...errors import ValidationError
from ...tariffs.models import Tariff
from ...tenants import audit
from ..prepaid.models import PrepaidAccount
from .models import METHODS, POST_MODES, ApportionMember, ApportionRule, ApportionSubMeter


def _ratio(raw: object) -> Decimal:
    try:
        value = Decimal(str(raw))
    except InvalidOperation as err:
        raise ValidationError(_l("ratio %(raw)r is not a number", raw=raw), {"ratio": "number"}) from err
    if not value.is_finite() or value < 0:
        raise ValidationError(_l("ratio %(raw)s must be ≥ 0", raw=raw), {"ratio": "negative"})
    return value


def create_rule(session: Session, group_id: int, property_id: int, *, name: str, parent_meter_id: int,
                sub_meter_ids: Sequence[int], method: str, tariff_id: int, members: Sequence[tuple[int, object]],
                remainder_account_id: int | None = None, subtract_sub_meters: bool = True,
                post_mode: str = "deduct", actor: str, operator_id: int | None = None) -> ApportionRule:
    """A new rule; every meter and account must belong to ``property_id`` of the group."""
    errors: dict[str, str] = {}
    messages: dict[str, object] = {}  # what to fix beside each field, in the reader's language
    problems = joined()  # the same, all in one message

    def refuse(field: str, code: str, message: object) -> None:
        errors[field] = code
        messages.setdefault(field, message)
        problems.append(message)

    if not name.strip():
        refuse("name", "required", _l("Give the rule a name."))
    if method not in METHODS:
        refuse("method", "unknown", _l("Choose a method: by fixed ratio, by floor area or by usage."))
    if post_mode not in POST_MODES:
        refuse("post_mode", "unknown", _l("Choose whether shares are deducted from balances or billed."))
    meter_ids = [parent_meter_id, *sub_meter_ids]
    meters = {m.id: m for m in session.execute(select(Meter).where(
        Meter.id.in_(meter_ids), Meter.group_id == group_id, Meter.property_id == property_id)).scalars()}
    if len(meters) != len(set(meter_ids)) or parent_meter_id in sub_meter_ids:
        refuse("meters", "invalid", _l("The parent meter and the sub-meters must be different meters of this property."))
    tariff = session.get(Tariff, tariff_id)
    parent = meters.get(parent_meter_id)
    if tariff is None or tariff.group_id != group_id or (parent and tariff.utility != parent.utility):
        refuse("tariff", "invalid", _l("Choose a price plan for the parent meter's utility (electricity or water)."))
    account_ids = [int(a) for a, _ in members]
    accounts = set(session.execute(select(PrepaidAccount.id).where(
        PrepaidAccount.id.in_(account_ids), PrepaidAccount.group_id == group_id,
        PrepaidAccount.property_id == property_id)).scalars())
    if not account_ids or len(accounts) != len(set(account_ids)) or len(account_ids) != len(set(account_ids)):
        refuse("members", "invalid", _l("Add one or more different accounts of this property as members."))
    if remainder_account_id is not None and remainder_account_id not in accounts:
        refuse("remainder_account", "invalid", _l("The remainder account must be one of the member accounts."))
    if errors:
        raise ValidationError(joined(_l("The apportioning rule cannot be saved:"), problems, sep=" "),
                              errors, messages)
    rule = ApportionRule(group_id=group_id, property_id=property_id, name=name.strip(), parent_meter_id=parent_meter_id,
                         subtract_sub_meters=subtract_sub_meters, method=method, tariff_id=tariff_id,
                         post_mode=post_mode, remainder_account_id=remainder_account_id)
    session.add(rule)
    session.flush()
    session.add_all(ApportionSubMeter(group_id=group_id, rule_id=rule.id, meter_id=m) for m in sub_meter_ids)
    session.add_all(ApportionMember(group_id=group_id, rule_id=rule.id, account_id=int(a), ratio=_ratio(r))
                    for a, r in members)
    session.flush()
    audit.record(session, group_id, "apportion.rule.create", actor=actor, operator_id=operator_id,
                 object_type="apportion_rule", object_id=rule.id,
                 detail={"name": rule.name, "method": method, "parent": parent_meter_id, "subs": list(sub_meter_ids),
                         "members": [[int(a), str(r)] for a, r in members]})
    return rule
