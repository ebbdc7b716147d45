"""Prepaid console: room monitor, account detail, cashier counter, receipts, open/close, swap, commands."""

from __future__ import annotations

import uuid
from decimal import Decimal

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import or_, select

from ...commands.models import Command
from ...commands.service import create_command
from ...devices.models import Meter
from ...errors import MeterhubError, ValidationError
from ...extensions import db
from ...i18n import _l
from ...ledger import run_money_transaction
from ...ledger.models import Transfer
from ...ledger.post import balance_of
from ...tenants.models import Room
from ...tenants import lookup
from ...tenants.scoping import get_or_404, property_ids, requested, requested_all, restrict
from webui.confirm import confirmation_page
from webui.format import money, room_path
from webui.forms import refused
from webui.util import permission_required
from . import accounts, cashier, control
from .events import notify_balance
from .models import LEVELS, Charge, MeterState, PrepaidAccount
from .topup_confirm import answer_outside_limits

bp = Blueprint("prepaid", __name__, url_prefix="/prepaid")
OPEN_FIELDS = ("customer_name", "phone", "meter_id", "alarm1", "alarm2", "overdraft_limit", "preset")
SWAP_FIELDS = ("final_reading", "new_meter", "new_initial_reading")
def _scope_props() -> list[int] | None:
    from ...tenants.scoping import property_ids

    scope = property_ids(current_user)
    chosen = session.get("property_id")  # the console's property switcher
    if chosen is not None and (scope is None or chosen in scope):
        return [chosen]
    return None if scope is None else sorted(scope) or [-1]


def _account(account_id: int) -> PrepaidAccount:
    return get_or_404(PrepaidAccount, account_id, "money.view")


@bp.route("/accounts/<int:account_id>")
@permission_required("money.view")
def account(account_id: int):
    from ...commands.outlook import outlook
    from ...devices.models import Device
    from ...tenants.scoping import ID_MAX
    from .account_page import context, figures_of, with_figures

    if not 0 < account_id <= ID_MAX:
        abort(404)
    row = db.session.execute(restrict(with_figures(select(PrepaidAccount).where(PrepaidAccount.id == account_id)),
                                      PrepaidAccount, None, "money.view")).first()
    if row is None:
        abort(404)
    acc, figures = row[0], figures_of(row)
    rows = db.session.execute(select(Meter, MeterState, Device).join(MeterState, MeterState.meter_id == Meter.id)
                              .outerjoin(Device, Device.id == Meter.device_id)
                              .where(MeterState.account_id == acc.id)).all()
    meters = [(m, st) for m, st, _ in rows]
    devices = {d.id: d for _, _, d in rows if d is not None}
    charges = db.session.execute(select(Charge).where(Charge.account_id == acc.id,  # intervals that used something
                                                      or_(Charge.usage != 0, Charge.amount != 0))
                                 .order_by(Charge.interval_end.desc()).limit(50)).scalars().all()
    transfers = db.session.execute(select(Transfer).where(Transfer.wallet_account_id == acc.wallet_account_id)
                                   .order_by(Transfer.id.desc()).limit(50)).scalars().all()
    commands = db.session.execute(select(Command).where(Command.meter_id.in_([m.id for m, _ in meters] or [-1]))
                                  .order_by(Command.id.desc()).limit(30)).scalars().all()
    return render_template("prepaid/account.html", acc=acc, meters=meters, charges=charges, transfers=transfers,
                           commands=commands, balance=figures.balance, levels=LEVELS,
                           **context(db.session, acc, [m for m, _ in meters], figures, devices),
                           key=uuid.uuid4().hex, notes=outlook(db.session, commands))


@bp.route("/accounts/<int:account_id>/usage.json")
@permission_required("money.view")
def account_usage(account_id: int):
    """The account page's usage chart: per day (31 days) or per month (12 months)."""
    from ...portal.dashboard import usage_series

    return jsonify(usage_series(db.session, _account(account_id), request.args.get("bucket", "day")))


@bp.route("/counter")
@permission_required("money.view")
def counter():
    q = request.args.get("q", "").strip()
    found = []
    if q:
        like = f"%{q}%"
        stmt = (select(PrepaidAccount, Room).outerjoin(Room, Room.id == PrepaidAccount.room_id)
                .where(or_(PrepaidAccount.customer_name.ilike(like), PrepaidAccount.phone.ilike(like),
                           PrepaidAccount.number.ilike(like), Room.number.ilike(like))).limit(50))
        found = db.session.execute(restrict(stmt, PrepaidAccount, None, "money.view")).all()
    from webui.format import display_zone
    from webui.names import prefetch

    from . import counter_page

    scope = _scope_props()
    receipts = counter_page.recent_receipts(db.session, scope)
    prefetch([("account", acc.id) for acc, _ in found] + [("account", r.account_id) for r in receipts])
    return render_template("prepaid/counter.html", q=q, found=found, receipts=receipts,
                           balances=counter_page.balances(db.session, [acc.wallet_account_id for acc, _ in found]),
                           takings=counter_page.takings_today(db.session, display_zone(), scope, current_user.id))


def _money(action, permission: str, account_id: int, form_name: str, fields: tuple[str, ...]):
    acc = _account(account_id)
    from ...tenants.scoping import has_permission

    if not has_permission(current_user, permission):
        abort(404)
    form = request.form
    try:
        result = run_money_transaction(db.session, lambda s: action(s, acc, form))
    except MeterhubError as err:
        db.session.rollback()
        refused(err, fields, form=form_name)  # the account page again, the problem beside its field
        return account(acc.id), 400
    notify_balance(acc.group_id, acc.id, result.balance)
    flash(_("Done. Balance: %(balance)s", balance=result.balance), "ok")
    return redirect(url_for("prepaid.receipt", transfer_id=result.transfer_id))


def _confirm(title: str, acc: PrepaidAccount, *facts: tuple) -> str | None:
    """The confirmation page of a dangerous action on ``acc`` (room, tenant, account, then ``facts``), or None once
    the operator confirmed it (webui.confirm)."""
    room = db.session.get(Room, acc.room_id) if acc.room_id else None
    return confirmation_page(title, [(_("Room"), room_path(room) if room else None),
                                     (_("Tenant"), acc.customer_name), (_("Account"), acc.number), *facts])


def _who() -> dict:
    return {"actor": current_user.username, "operator_id": current_user.id}


@bp.route("/accounts/<int:account_id>/topup", methods=["POST"])
@permission_required("money.topup")
def topup(account_id: int):
    outside_limits = answer_outside_limits(db.session, _account(account_id), request.form)
    if outside_limits is not None:  # above the group's maximum, or above its threshold and not yet confirmed
        return outside_limits
    confirmed = request.form.get("confirm") == "1"
    return _money(lambda s, acc, f: cashier.topup(s, acc.group_id, acc.id, f.get("amount", ""), f.get("channel", "cash"),
                                                  f.get("key", ""), confirmed=confirmed, **_who()),
                  "money.topup", account_id, "topup", ("amount", "channel"))


@bp.route("/accounts/<int:account_id>/refund", methods=["POST"])
@permission_required("money.refund")
def refund(account_id: int):
    page = _confirm(_("Refund"), _account(account_id), (_("Amount"), money(request.form.get("amount"))),
                    (_("Reason"), request.form.get("reason")))
    if page is not None:
        return page
    return _money(lambda s, acc, f: cashier.refund(s, acc.group_id, acc.id, f.get("amount", ""), f.get("channel", "cash"),
                                                   f.get("key", ""), reason=f.get("reason", ""), **_who()),
                  "money.refund", account_id, "refund", ("amount", "reason"))


@bp.route("/accounts/<int:account_id>/reverse", methods=["POST"])
@permission_required("money.reverse")
def reverse(account_id: int):
    acc = _account(account_id)
    original = requested(Transfer, "transfer_id", "money.reverse")
    if original.wallet_account_id != acc.wallet_account_id:
        abort(404)  # a top-up of another account, even one in scope, is not this account's to reverse
    page = _confirm(_("Reverse"), acc, (_("Receipt"), original.receipt_no), (_("Amount"), money(original.amount)),
                    (_("Reason"), request.form.get("reason")))
    if page is not None:
        return page
    return _money(lambda s, acc, f: cashier.reverse(s, acc.group_id, original.id, f.get("reason", ""),
                                                    f.get("key", ""), **_who()),
                  "money.reverse", account_id, f"reverse-{original.id}", ("reason",))


@bp.route("/receipts/<int:transfer_id>")
@permission_required("money.view")
def receipt(transfer_id: int):
    transfer = get_or_404(Transfer, transfer_id, "money.view")  # in scope through its wallet's property
    acc = db.session.execute(select(PrepaidAccount).where(
        PrepaidAccount.wallet_account_id == transfer.wallet_account_id)).scalar()
    if acc is None:
        abort(404)
    _account(acc.id)
    return render_template("prepaid/receipt.html", t=transfer, acc=acc)


@bp.route("/accounts/open", methods=["GET", "POST"])
@permission_required("account.manage")
def open_account():
    if request.method == "POST":
        f = request.form
        room = requested(Room, "room_id", "property.view")
        meter_ids = [m.id for m in requested_all(Meter, "meter_id", "account.manage")]
        try:
            acc = accounts.create_account(db.session, room.group_id, room.property_id, meter_ids, room_id=room.id,
                                          customer_name=f.get("customer_name", ""), phone=f.get("phone", ""),
                                          preset=bool(f.get("preset")), alarm1=f.get("alarm1", "20.00"),
                                          alarm2=f.get("alarm2", "5.00"),
                                          overdraft_limit=f.get("overdraft_limit", "0.00"), **_who())
            db.session.commit()
        except MeterhubError as err:
            db.session.rollback()
            refused(err, OPEN_FIELDS, {"meters": "meter_id"})  # the form again as typed, the problem beside it
            return _open_page(room), 400
        return redirect(url_for("prepaid.account", account_id=acc.id))
    return _open_page(get_or_404(Room, request.args.get("room_id", 0, type=int), "property.view"))


def _open_page(room: Room) -> str:
    meters = db.session.execute(select(Meter).where(Meter.room_id == room.id)).scalars().all()
    return render_template("prepaid/open.html", room=room, meters=meters)


@bp.route("/accounts/<int:account_id>/activate", methods=["POST"])
@permission_required("account.manage")
def activate(account_id: int):
    acc = _account(account_id)
    return _manage(lambda: accounts.open_account(db.session, acc.group_id, acc.id, customer_name=request.form.get(
        "customer_name", ""), phone=request.form.get("phone", ""), **_who()), acc, ("customer_name", "phone"),
        "activate")


@bp.route("/accounts/<int:account_id>/close", methods=["POST"])
@permission_required("account.manage")
def close(account_id: int):
    acc = _account(account_id)
    page = _confirm(_("Close account and settle"), acc,
                    (_("Balance"), money(balance_of(db.session, acc.wallet_account_id))))
    if page is not None:
        return page
    return _manage(lambda: accounts.close_account(db.session, acc.group_id, acc.id, request.form.get("key", ""),
                                                  **_who()), acc)


@bp.route("/accounts/<int:account_id>/swap", methods=["POST"])
@permission_required("account.manage")
def swap(account_id: int):
    acc, f = _account(account_id), request.form
    old = requested(Meter, "old_meter_id", "account.manage")
    bound = db.session.execute(select(MeterState.meter_id).where(
        MeterState.meter_id == old.id, MeterState.account_id == acc.id, MeterState.active)).scalar()
    if bound is None:
        abort(404)  # the old meter must be this account's
    if "new_meter" in f or "new_meter_id" not in f:
        try:  # the new meter by its serial (the form's picker), in the operator's scope and the account's property
            found = lookup.resolve(db.session, acc.group_id, "meter", f.get("new_meter", ""),
                                   property_ids=property_ids(current_user), property_id=acc.property_id)
        except ValidationError as err:
            refused(err, SWAP_FIELDS, {"meter": "new_meter"}, form=f"swap-{old.id}")  # beside the new meter
            return account(acc.id), 400
        new = get_or_404(Meter, found.id, "account.manage")
    else:  # a client that names it by id: resolved in scope like every id
        new = requested(Meter, "new_meter_id", "account.manage")
        if new.property_id != acc.property_id:
            abort(404)
    try:  # the readings are checked before the confirmation, and refused beside their fields
        final, initial = (_reading(f.get(name, "0") or "0", name) for name in ("final_reading", "new_initial_reading"))
    except ValidationError as err:
        refused(err, SWAP_FIELDS, form=f"swap-{old.id}")
        return account(acc.id), 400
    page = _confirm(_("Swap meter"), acc, (_("Old meter"), old.name or f"#{old.id}"), (_("Final reading"), f.get("final_reading")),
                    (_("New meter"), new.name or f"#{new.id}"), (_("New meter reading"), f.get("new_initial_reading")))
    if page is not None:
        return page
    return _manage(lambda: accounts.swap_meter(
        db.session, acc.group_id, old.id, new.id,
        final_reading=final, new_initial_reading=initial, **_who()), acc, SWAP_FIELDS, f"swap-{old.id}")


@bp.route("/meters/<int:meter_id>/command", methods=["POST"])
@permission_required("device.control")
def command(meter_id: int):
    meter = get_or_404(Meter, meter_id, "device.control")
    kind = request.form.get("kind", "")
    back = requested(PrepaidAccount, "account_id", "money.view", required=False)
    account_id = back.id if back is not None else None
    if kind == "off":  # cuts a tenant's power or water: named and confirmed first
        page = confirmation_page(_("Switch off"), _meter_facts(meter))
        if page is not None:
            return page

    def run():
        if kind == "keep_power":
            return control.keep_power(db.session, meter, True, **_who())
        if kind == "resume_prepaid":
            return control.keep_power(db.session, meter, False, **_who())
        if kind in ("on", "off"):
            return control.set_desired(db.session, meter, kind == "on", source="operator", force=True, **_who())
        return create_command(db.session, meter, "read_now", {}, **_who())

    try:
        command = run()
        db.session.commit()
    except MeterhubError as err:
        db.session.rollback()
        flash(str(err), "error")
    else:
        flash(action_message(meter, kind, command), "ok")
    return redirect(url_for("prepaid.account", account_id=account_id) if account_id else url_for("prepaid.rooms"))


def _meter_facts(meter: Meter) -> list[tuple]:
    """Room, tenant and meter of ``meter`` for a confirmation."""
    room = db.session.get(Room, meter.room_id) if meter.room_id else None
    acc = db.session.execute(select(PrepaidAccount).join(MeterState, MeterState.account_id == PrepaidAccount.id)
                             .where(MeterState.meter_id == meter.id, MeterState.active)).scalars().first()
    return [(_("Room"), room_path(room) if room else None), (_("Tenant"), acc.customer_name if acc else None),
            (_("Meter"), meter.name or f"#{meter.id}")]


def action_message(meter: Meter, kind: str, command: Command | None) -> str:
    """What was done to which room, and what happens next (the answer to every relay button)."""
    from ...names import name_of, subject_names

    names = subject_names(db.session, meter.group_id, [("meter", meter.id)])
    where = name_of(names, ("meter", meter.id))
    if command is None:
        return _("%(where)s: nothing to send, the meter is already set that way.", where=where)
    if kind == "read_now":
        return _("%(where)s: reading requested; the reading is shown in the command list below as soon as the meter "
                 "answers.", where=where)
    what = {"off": _("Switch-off"), "on": _("Switch-on"), "keep_power": _("Keep-power"),
            "resume_prepaid": _("Resume prepaid")}.get(kind, kind)
    return _("%(what)s sent to %(where)s; the command list below shows when the meter confirms it (an offline "
             "meter gets it when it comes back).", what=what, where=where)


def _manage(action, acc: PrepaidAccount, fields: tuple[str, ...] = (), form: str | None = None):
    """Run ``action`` on ``acc``; refused: the account page again with the problem beside the field of ``form``."""
    try:
        action()
        db.session.commit()
        flash(_("Saved."), "ok")
    except (MeterhubError, ValueError) as err:
        db.session.rollback()
        if not fields:
            flash(str(err), "error")
            return redirect(url_for("prepaid.account", account_id=acc.id))
        refused(err, fields, form=form)
        return account(acc.id), 400
    return redirect(url_for("prepaid.account", account_id=acc.id))


def _reading(raw: str, field: str) -> str:
    """A meter reading typed into ``field``: a number ≥ 0 (kept as typed), else refused beside the field."""
    try:
        value = Decimal(raw.strip())
    except ArithmeticError as err:
        raise ValidationError(_l("Enter a reading as a number, e.g. 1234.5."), {field: "number"}) from err
    if not value.is_finite() or value < 0:
        raise ValidationError(_l("Enter a reading as a number, e.g. 1234.5."), {field: "range"})
    return raw.strip()



