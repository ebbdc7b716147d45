"""The counter's answer to a top-up outside the group's limits: above the maximum it is refused (422); above
the confirmation threshold the cashier is asked to confirm, with room, tenant and amount named."""

from __future__ import annotations

from typing import Any

from flask import render_template
from sqlalchemy.orm import Session

from ...errors import ValidationError
from ...ledger.money import parse_amount
from ...tenants.models import Building, Property, Room
from .limits import ConfirmationRequired, TopupTooLarge, check_topup
from .models import PrepaidAccount


def place_of(session: Session, account: PrepaidAccount) -> str:
    """Property · building · room of the account ('' when it has no room)."""
    room = session.get(Room, account.room_id) if account.room_id else None
    if room is None:
        return ""
    building, prop = session.get(Building, room.building_id), session.get(Property, room.property_id)
    return " · ".join(part for part in (prop.name if prop else "", building.name if building else "",
                                         f"{room.number} {room.name}".strip()) if part)


def answer_outside_limits(session: Session, account: PrepaidAccount, form: Any) -> Any | None:
    """The confirmation page or the refusal for the posted top-up; None when it may go ahead."""
    try:
        amount = parse_amount(form.get("amount", ""))
    except ValidationError:
        return None  # the top-up itself says what is wrong with the amount
    try:
        check_topup(session, account.group_id, amount, confirmed=form.get("confirm") == "1",
                    what=f" for account {account.number}")
    except TopupTooLarge as err:
        return render_template("errors/error.html", code=422, message=str(err)), 422
    except ConfirmationRequired:
        fields = {k: v for k, v in form.items() if k not in ("confirm", "csrf_token")}
        return render_template("prepaid/confirm_topup.html", acc=account, amount=amount,
                               place=place_of(session, account), fields=fields)
    return None
