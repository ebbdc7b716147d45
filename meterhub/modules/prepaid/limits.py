"""Top-up limits of a group: the largest single top-up (counter, API, batch and online alike) and the amount
above which a top-up must be confirmed (the console asks, naming room, tenant and amount; the API wants
``"confirm": true``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...i18n import _l
from ...errors import NotFound, ValidationError
from ...ledger.money import MAX_AMOUNT, parse_amount
from ...tenants import audit
from ...tenants.models import Group


class TopupTooLarge(ValidationError):
    """A top-up is above the group's largest single top-up."""


class ConfirmationRequired(ValidationError):
    """A top-up is above the group's confirmation threshold and was not confirmed."""


@dataclass(frozen=True)
class TopupLimits:
    maximum: Decimal
    confirm_above: Decimal


def limits_of(session: Session, group_id: int) -> TopupLimits:
    """The group's top-up limits."""
    row = session.execute(select(Group.topup_max, Group.topup_confirm_above).where(Group.id == group_id)).first()
    if row is None:
        raise NotFound(_l("group %(group_id)s not found", group_id=group_id))
    return TopupLimits(row.topup_max, row.topup_confirm_above)


def check_topup(session: Session, group_id: int, amount: Decimal, *, confirmed: bool, what: str = "") -> None:
    """Refuse ``amount`` above the group's maximum, or above its threshold unless ``confirmed``."""
    limits = limits_of(session, group_id)
    if amount > limits.maximum:
        raise TopupTooLarge(f"A single top-up is at most {limits.maximum} CNY in this group; {amount} CNY{what} "
                            "was refused. Split it, or ask a group admin to raise the limit in Settings.",
                            {"amount": "above the group's maximum"},
                            messages={"amount": _l("A single top-up is at most %(maximum)s CNY.", maximum=limits.maximum)})
    if amount > limits.confirm_above and not confirmed:
        raise ConfirmationRequired(f"{amount} CNY{what} is above {limits.confirm_above} CNY: confirm the amount "
                                   "to top up (API: send \"confirm\": true).", {"confirm": "required"})


def set_limits(session: Session, group: Group, maximum: object, confirm_above: object, *, actor: str,
               operator_id: int | None = None) -> TopupLimits:
    """Change the group's limits (validated, audited)."""
    new_max = parse_amount(maximum, "topup_max")
    new_confirm = parse_amount(confirm_above, "topup_confirm_above", positive=False)
    if new_confirm < 0 or new_confirm > new_max:
        raise ValidationError(_l("The confirmation threshold must be between 0 and the maximum "
                                 "(%(new_max)s CNY).",
                                 new_max=new_max),
                              {"topup_confirm_above": "out of range"})
    if new_max > MAX_AMOUNT:
        raise ValidationError(_l("The maximum top-up can be at most %(MAX_AMOUNT)s CNY.",
                                 MAX_AMOUNT=MAX_AMOUNT), {"topup_max": "too large"})
    before = {"topup_max": str(group.topup_max), "topup_confirm_above": str(group.topup_confirm_above)}
    group.topup_max, group.topup_confirm_above = new_max, new_confirm
    audit.record(session, group.id, "group.topup_limits", actor=actor, operator_id=operator_id, object_type="group",
                 object_id=group.id, detail={"before": before, "after": {"topup_max": str(new_max),
                                                                          "topup_confirm_above": str(new_confirm)}})
    return TopupLimits(new_max, new_confirm)
