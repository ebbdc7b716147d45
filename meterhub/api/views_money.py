"""API resources of money and operations: accounts, balances, top-ups (``Idempotency-Key``), commands,
alarms and reports."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from flask import jsonify, request
from sqlalchemy import select

from ..commands.models import Command
from ..devices.models import Meter
from ..extensions import db
from ..ledger import run_money_transaction
from ..ledger.models import LedgerBalance, Transfer
from ..ledger.post import balance_of
from ..modules.prepaid import cashier, control
from ..modules.prepaid.events import notify_balance
from ..modules.prepaid.models import PrepaidAccount
from ..replica import reads
from ..tenants.models import Building, Group, Property, Room
from . import serialize
from .auth import get_in_scope, principal, requires, scoped
from .errors import ApiError, json_body
from .pagination import date_arg, enum_arg, int_arg, page
from .routes import Routes

routes = Routes()  # attached to the /api/v1 blueprint by meterhub.api.plugin

COMMANDS = ("switch_on", "switch_off", "keep_power", "resume_prepaid", "read_now")
MAX_REPORT_ROWS = 5000
ID_MAX = 2**62


def _account_json(acc: PrepaidAccount) -> dict[str, Any]:
    return serialize.account(acc, balance_of(db.session, acc.wallet_account_id))


@routes.route("/accounts")
@requires("money.view")
def accounts() -> Any:
    # each account's cached balance in the same query (one look-up per account was 95 % of the page's time)
    stmt = scoped(select(PrepaidAccount, LedgerBalance.balance).outerjoin(
        LedgerBalance, LedgerBalance.account_id == PrepaidAccount.wallet_account_id), PrepaidAccount)
    if (room_id := int_arg("room_id", None, 1, ID_MAX)) is not None:
        stmt = stmt.where(PrepaidAccount.room_id == room_id)
    if status := enum_arg("status", ("preset", "open", "closed")):
        stmt = stmt.where(PrepaidAccount.status == status)
    return jsonify(page(stmt, PrepaidAccount.id,
                        lambda row: serialize.account(row[0], row[1] if row[1] is not None else Decimal(0))))


@routes.route("/accounts/<int:account_id>")
@requires("money.view")
def account_detail(account_id: int) -> Any:
    return jsonify(_account_json(get_in_scope(PrepaidAccount, account_id)))


@routes.route("/accounts/<int:account_id>/balance")
@requires("money.view")
def balance(account_id: int) -> Any:
    acc = get_in_scope(PrepaidAccount, account_id)
    return jsonify({"account_id": acc.id, "balance": serialize.money(balance_of(db.session, acc.wallet_account_id)),
                    "currency": "CNY"})


@routes.route("/accounts/<int:account_id>/topups")
@requires("money.view")
def topups(account_id: int) -> Any:
    acc = get_in_scope(PrepaidAccount, account_id)
    stmt = select(Transfer).where(Transfer.wallet_account_id == acc.wallet_account_id,
                                  Transfer.kind.in_(("topup", "refund", "reversal")))
    return jsonify(page(stmt, Transfer.id, serialize.transfer))


@routes.route("/accounts/<int:account_id>/topups", methods=["POST"])
@requires("money.topup")
def create_topup(account_id: int) -> Any:
    acc = get_in_scope(PrepaidAccount, account_id)
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key or len(key) > 150:
        raise ApiError(422, "Send an Idempotency-Key header (1–150 characters) with every top-up.",
                       {"Idempotency-Key": "required"})
    body = json_body()
    amount, channel, confirm = body.get("amount"), body.get("channel", "transfer"), body.get("confirm", False)
    if not isinstance(amount, (str, int)) or isinstance(amount, bool) or not isinstance(channel, str):
        raise ApiError(422, "amount must be a decimal string such as \"50.00\"; channel a string.",
                       {"amount": "invalid"})
    if not isinstance(confirm, bool):
        raise ApiError(422, "confirm must be true or false.", {"confirm": "invalid"})
    who = principal()
    result = run_money_transaction(db.session, lambda s: cashier.topup(
        s, acc.group_id, acc.id, str(amount), channel, f"api:{key}", actor=who.actor,
        operator_id=who.operator.id, confirmed=confirm))
    if result.created:
        notify_balance(acc.group_id, acc.id, result.balance)
    transfer = db.session.get(Transfer, result.transfer_id)
    body = {"transfer": serialize.transfer(transfer), "balance": serialize.money(result.balance),
            "replayed": not result.created}
    return jsonify(body), 201 if result.created else 200


@routes.route("/meters/<int:meter_id>/commands", methods=["POST"])
@requires("device.control")
def create_command(meter_id: int) -> Any:
    meter = get_in_scope(Meter, meter_id)
    kind = json_body().get("kind")
    if kind not in COMMANDS:
        raise ApiError(422, f"kind must be one of {', '.join(COMMANDS)}.", {"kind": "invalid"})
    who = principal()
    actor = {"actor": who.actor, "operator_id": who.operator.id}
    if kind in ("switch_on", "switch_off"):
        command = control.set_desired(db.session, meter, kind == "switch_on", source="operator", force=True, **actor)
    elif kind in ("keep_power", "resume_prepaid"):
        command = control.keep_power(db.session, meter, kind == "keep_power", **actor)
    else:
        from ..commands.service import create_command as queue_command

        command = queue_command(db.session, meter, "read_now", {}, **actor)
    db.session.commit()
    return jsonify(serialize.command(command)), 202


@routes.route("/commands/<int:command_id>")
@requires("device.view")
def command_detail(command_id: int) -> Any:
    return jsonify(serialize.command(get_in_scope(Command, command_id)))


@routes.route("/alarms")
@requires("property.view")
def alarms() -> Any:
    from ..alarms.models import Alarm

    stmt = scoped(select(Alarm), Alarm)
    if state := enum_arg("state", ("active", "acknowledged", "cleared")):
        stmt = stmt.where(Alarm.state == state)
    if (property_id := int_arg("property_id", None, 1, ID_MAX)) is not None:
        stmt = stmt.where(Alarm.property_id == property_id)
    return jsonify(page(stmt, Alarm.id, serialize.alarm))


def _visible_reports() -> dict[str, Any]:
    from ..reports.registry import all_reports

    who = principal()
    return {k: r for k, r in all_reports().items() if who.can(r.permission)}


@routes.route("/reports")
@requires("report.view")
def reports() -> Any:
    data = [{"key": k, "name": str(r.name), "permission": r.permission,
             "columns": [{"key": c.key, "label": str(c.label), "kind": c.kind} for c in r.columns]}
            for k, r in sorted(_visible_reports().items())]
    return jsonify({"data": data})


def _cell(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


@routes.route("/reports/<key>")
@requires("report.view")
def report(key: str) -> Any:
    from ..reports import filters as report_filters
    from ..tenants.scoping import property_ids

    definition = _visible_reports().get(key)
    if definition is None:
        raise ApiError(404, "Not found.")
    for name in ("property_id", "building_id", "room_id", "meter_id"):
        int_arg(name, None, 1, ID_MAX)
    date_arg("start"), date_arg("end")
    who = principal()
    group = db.session.get(Group, who.group_id)
    f = report_filters.parse(request.args, who.group_id, property_ids(who.operator), group.timezone)
    definition.check(f)
    for model, value in ((Property, f.property_id), (Building, f.building_id), (Room, f.room_id),
                         (Meter, f.meter_id)):
        if value is not None:
            get_in_scope(model, value, "report.view")
    rows = []
    reading, fresh = reads()  # the read replica when configured (meterhub.replica)
    for row in definition.rows(reading, f):
        if len(rows) >= MAX_REPORT_ROWS:
            break
        rows.append([_cell(v) for v in row])
    return jsonify({"key": key, "columns": [c.key for c in definition.columns], "rows": rows,
                    "truncated": len(rows) >= MAX_REPORT_ROWS, "source": fresh.source,
                    "data_as_of": fresh.as_of.isoformat() if fresh.replica and fresh.as_of else None})
