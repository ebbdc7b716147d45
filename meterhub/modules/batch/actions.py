"""What a batch does to one meter: each action returns a command to follow, or an immediate result.

Device actions go through the command layer (audited, bus-locked, retried by the worker); price-plan
assignment and top-ups are immediate database/ledger operations with their own audit entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...i18n import _l, is_message
from ...commands.models import Command
from ...commands.service import create_command
from ...devices.models import Device, Meter
from ...errors import MeterhubError, ValidationError
from ...ledger.money import parse_amount
from ...tariffs import service as tariffs
from ...tariffs.models import RATES, Tariff
from ...labels import label
from ...models import utcnow
from ..prepaid import cashier
from ..prepaid.control import keep_power, set_desired
from ..prepaid.limits import check_topup
from ..prepaid.models import MeterState, PrepaidAccount

ACTIONS = ("set_tariff", "push_price", "switch_off", "switch_on", "keep_power", "resume_prepaid",
           "set_thresholds", "set_overload_limit", "topup", "read_now")
#: The driver command each device action needs (checked against the driver's capabilities).
NEEDS = {"push_price": "set_prices", "switch_off": "switch", "switch_on": "switch", "keep_power": "keep_power",
         "resume_prepaid": "keep_power", "set_thresholds": "set_thresholds", "set_overload_limit": "set_overload_limit"}


@dataclass
class Outcome:
    """``status`` running (follow ``command``), ok or skipped, with a reason (a message, stored with
    ``meterhub.i18n.stored`` and shown in the reader's language)."""

    status: str
    reason: Any = ""
    command: Command | None = None


def _why(err: MeterhubError) -> Any:
    """An error's message as raised (a lazy message stays translatable)."""
    return err.args[0] if err.args and is_message(err.args[0]) else str(err)


def validate_params(session: Session, group_id: int, action: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise an action's parameters before any meter is touched."""
    if action not in ACTIONS:
        raise ValidationError(_l("unknown batch action %(action)r; one of %(join)s",
                                 action=action, join=', '.join(ACTIONS)), {"action": "unknown"})
    if action == "set_tariff":
        tariff = session.get(Tariff, int(params.get("tariff_id") or 0))
        if tariff is None or tariff.group_id != group_id:
            raise ValidationError(_l("choose a price plan of the group"), {"tariff_id": "required"})
        return {"tariff_id": tariff.id}
    if action == "set_thresholds":
        return {k: str(parse_amount(params.get(k, ""), k, positive=False)) for k in ("alarm1", "alarm2", "overdraft")}
    if action == "set_overload_limit":
        limit = Decimal(str(params.get("limit_kw", "")).strip() or "0")
        if not limit.is_finite() or limit <= 0 or limit > 10000:
            raise ValidationError(_l("the overload limit must be 0–10000 kW"), {"limit_kw": "range"})
        return {"limit_kw": str(limit)}
    if action == "topup":
        channel = str(params.get("channel") or "cash")
        amount = parse_amount(params.get("amount", ""))
        check_topup(session, group_id, amount, confirmed=True, what=" per account")  # above the maximum: refused now
        return {"amount": str(amount), "channel": channel}
    return {}


def _driver_supports(registry: dict[str, Any] | None, device: Device, command: str) -> bool:
    driver = registry.get(device.driver_key) if registry is not None else None
    return driver is None or driver.supports(command, device.config)


def apply(session: Session, batch: Any, meter: Meter, registry: dict[str, Any] | None, done_accounts: dict[int, int]
          ) -> Outcome:
    """Run ``batch.action`` on one meter inside the caller's transaction."""
    action, params, actor, operator_id = batch.action, batch.params, batch.actor, batch.operator_id
    device = session.get(Device, meter.device_id)
    needed = "valve" if meter.utility == "water" and action in ("switch_off", "switch_on") else NEEDS.get(action)
    if needed and not _driver_supports(registry, device, needed):
        return Outcome("skipped", _l("the driver %(driver)s cannot carry out “%(command)s”", driver=device.driver_key,
                                     command=label(needed, "command_kind")))
    if action == "set_tariff":
        tariff = session.get(Tariff, params["tariff_id"])
        if tariff.utility != meter.utility:
            return Outcome("skipped", _l("the plan %(plan)s is for %(plan_utility)s, the meter is for %(utility)s",
                                         plan=tariff.name, plan_utility=label(tariff.utility, "utility"),
                                         utility=label(meter.utility, "utility")))
        tariffs.assign(session, batch.group_id, "meter", meter.id, tariff)
        return Outcome("ok", _l("price plan %(plan)s", plan=tariff.name))
    if action == "push_price":
        tariff = tariffs.resolve_tariff(session, meter)
        if tariff is None:
            return Outcome("skipped", _l("the meter has no price plan"))
        try:
            version = tariffs.version_at(session, tariff.id, utcnow())
        except MeterhubError as err:
            return Outcome("skipped", _why(err))
        prices = [str(getattr(version, f"price_{r}")) for r in RATES]
        return _command(session, meter, "set_prices", {"prices": prices}, actor, operator_id)
    if action in ("switch_off", "switch_on"):
        if action == "switch_off" and meter.keep_power:
            return Outcome("skipped", _l("keep-power is on; resume prepaid first"))
        command = set_desired(session, meter, action == "switch_on", actor=actor, operator_id=operator_id,
                              source="batch", force=True)
        return Outcome("running", command=command)
    if action in ("keep_power", "resume_prepaid"):
        command = keep_power(session, meter, action == "keep_power", actor=actor, operator_id=operator_id)
        command.source = "batch"
        return Outcome("running", command=command)
    if action == "set_thresholds":
        return _command(session, meter, "set_thresholds", dict(params), actor, operator_id)
    if action == "set_overload_limit":
        meter.overload_limit_kw = Decimal(params["limit_kw"])
        return _command(session, meter, "set_overload_limit", dict(params), actor, operator_id)
    if action == "read_now":
        return _command(session, meter, "read_now", {}, actor, operator_id)
    return _topup(session, batch, meter, done_accounts)


def _command(session: Session, meter: Meter, kind: str, params: dict[str, Any], actor: str,
             operator_id: int | None) -> Outcome:
    command = create_command(session, meter, kind, params, source="batch", actor=actor, operator_id=operator_id)
    return Outcome("running", command=command)


def _topup(session: Session, batch: Any, meter: Meter, done_accounts: dict[int, int]) -> Outcome:
    account = session.execute(select(PrepaidAccount).join(MeterState, MeterState.account_id == PrepaidAccount.id)
                              .where(MeterState.meter_id == meter.id, MeterState.active,
                                     PrepaidAccount.status == "open")).scalar()
    if account is None:
        return Outcome("skipped", _l("the meter is not on an open account"))
    if account.id in done_accounts:
        return Outcome("skipped", _l("account %(account)s is already topped up through another of its meters",
                                     account=account.number))
    done_accounts[account.id] = meter.id
    try:
        with session.begin_nested():
            result = cashier.topup(session, batch.group_id, account.id, batch.params["amount"], batch.params["channel"],
                                   f"batch:{batch.id}:{account.id}", actor=batch.actor, operator_id=batch.operator_id)
    except MeterhubError as err:
        return Outcome("failed", _why(err))
    return Outcome("ok", _l("account %(account)s +%(amount)s, receipt %(receipt)s", account=account.number,
                            amount=result.amount, receipt=result.receipt_no))
