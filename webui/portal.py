"""The tenant portal (mobile first): sign-in by phone + password or one-time code, the account page
(balance, status, usage chart, charges, top-ups with receipts, bills, messages), online top-up through a
payment provider, staff invitations, and the room QR label's pay page (``portal.room_pay``)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from flask import (Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, session,
                   url_for)
from flask_babel import gettext as _
from markupsafe import Markup
from sqlalchemy import select

from meterhub.db import use_group
from meterhub.devices import labels
from meterhub.errors import MeterhubError, RateLimited, ValidationError
from meterhub.extensions import db
from meterhub.ledger.models import Transfer
from meterhub.models import utcnow
from meterhub.modules.prepaid.models import PrepaidAccount
from meterhub.payments import orders
from meterhub.payments.models import PaymentOrder
from meterhub.portal import access, auth, dashboard, service
from meterhub.portal.models import PortalUser
from meterhub.tenants.auth import burn_time, verify_password
from meterhub.tenants.models import Room

from .auth import too_many_attempts
from .forms import refused
from meterhub.tenants.scoping import requested_id

bp = Blueprint("portal", __name__, url_prefix="/portal")
AMOUNTS = ("20", "50", "100", "200", "500", "1000")


@bp.context_processor
def _portal_user() -> dict:
    return {"portal_user": access.current()}


def _next() -> str:
    target = request.values.get("next", "")
    if target.startswith("/portal/") and not urlsplit(target).netloc and not target.startswith("//"):
        return target
    return url_for("portal.home")


def _ip() -> str:
    return request.remote_addr or ""


def _too_many(err: RateLimited, template: str, **context: object):
    """429 with ``Retry-After`` and the wait in words, the same for known and unknown phones."""
    return too_many_attempts(err, template, next=_next(), **context)


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method != "POST":
        return render_template("portal/login.html", next=_next())
    db.session.rollback()  # nothing read so far is kept: the throttle may use a connection of its own
    throttle = auth.throttle()
    try:
        phone = auth.normalize_phone(request.form.get("phone", ""))
        throttle.check(phone, _ip())
    except ValidationError as err:
        return render_template("portal/login.html", error=str(err), next=_next()), 400
    except RateLimited as err:
        return _too_many(err, "portal/login.html")
    password = request.form.get("password", "")
    verified = 0  # a known and an unknown phone each cost (at least) one hash verification
    for user_id, group_id in auth.portal_users(db.session, phone):
        use_group(group_id)
        user = db.session.get(PortalUser, user_id)
        if user is not None and user.password_hash:
            verified += 1
            if verify_password(user.password_hash, password):
                response = _signed_in(user)
                throttle.succeeded(phone, _ip())  # after the commit: one database connection at a time
                return response
    if not verified:
        burn_time(password)
    db.session.rollback()  # nothing to keep; the throttle may use a connection of its own
    throttle.failed(phone, _ip())
    return render_template("portal/login.html", error=_("Wrong phone number or password."), phone=phone,
                           next=_next()), 401


def _signed_in(user: PortalUser):
    user.last_login_at = utcnow()
    db.session.commit()
    access.sign_in(user)
    return redirect(_next())


@bp.route("/code", methods=["POST"])
def send_code():
    """Send a one-time sign-in code to a phone known to some group (same answer whether known or not)."""
    db.session.rollback()  # the throttle may use a connection of its own: never two at once
    try:
        phone = auth.normalize_phone(request.form.get("phone", ""))
        auth.throttle().check(phone, _ip())
        auth.request_code(phone, _ip())  # a job sends it, to known phones only
    except ValidationError as err:
        return render_template("portal/login.html", error=str(err), next=_next()), 400
    except RateLimited as err:
        return _too_many(err, "portal/login.html")
    session["portal_pending"] = {"phone": phone}
    return render_template("portal/code.html", phone=phone, next=_next())


@bp.route("/code/verify", methods=["POST"])
def verify_code():
    pending = session.get("portal_pending") or {}
    phone = pending.get("phone", "")
    db.session.rollback()  # the throttle may use a connection of its own: never two at once
    throttle = auth.throttle()
    try:
        throttle.check(phone, _ip())
    except RateLimited as err:
        return _too_many(err, "portal/code.html", phone=phone)
    if not phone or not auth.check_code(phone, request.form.get("code", "")):
        db.session.rollback()  # nothing to keep; the throttle may use a connection of its own
        throttle.failed(phone or "-", _ip())
        return render_template("portal/code.html", phone=phone, error=_("Wrong or expired code."), next=_next()), 401
    db.session.rollback()
    throttle.succeeded(phone, _ip())
    groups = auth.candidate_groups(db.session, phone)
    if len(groups) > 1 and request.form.get("group_id", type=int) not in groups:
        session["portal_pending"] = {"phone": phone, "groups": groups, "verified_at": utcnow().timestamp()}
        return render_template("portal/choose.html", groups=groups, next=_next())
    return _claim(phone, request.form.get("group_id", type=int) or groups[0]) if groups else abort(404)


@bp.route("/code/choose", methods=["POST"])
def choose_group():
    pending = session.get("portal_pending") or {}
    group_id = request.form.get("group_id", type=int)
    fresh = utcnow().timestamp() - float(pending.get("verified_at", 0)) < 300
    if not fresh or group_id not in pending.get("groups", []):
        return redirect(url_for("portal.login"))
    return _claim(pending["phone"], group_id)


def _claim(phone: str, group_id: int):
    use_group(group_id)
    user = service.claim(db.session, group_id, phone)
    session.pop("portal_pending", None)
    return _signed_in(user)


@bp.route("/logout", methods=["POST"])
def logout():
    access.sign_out()
    return redirect(url_for("portal.login"))


@bp.route("/")
@access.portal_login_required
def home():
    mine = service.memberships(db.session, access.current())
    if len(mine) == 1:
        return redirect(url_for("portal.account", number=mine[0][0].number))
    return render_template("portal/home.html", accounts=[(a, r, dashboard.status_of(a)) for a, r in mine])


@bp.route("/a/<number>")
@access.portal_login_required
def account(number: str):
    acc, role, figures = access.account_page_for(number)
    from meterhub.portal.history import history

    return render_template("portal/account.html", s=dashboard.summary(db.session, acc, figures=figures), role=role,
                           amounts=AMOUNTS, channels=orders.enabled_channels(db.session),
                           history=history(db.session, acc))


@bp.route("/a/<number>/usage.json")
@access.portal_login_required
def usage(number: str):
    acc, _role = access.account_for(number)
    return jsonify(dashboard.usage_series(db.session, acc, request.args.get("bucket", "day")))


@bp.route("/a/<number>/receipts/<receipt_no>")
@access.portal_login_required
def receipt(number: str, receipt_no: str):
    acc, _role = access.account_for(number)
    transfer = db.session.execute(select(Transfer).where(Transfer.receipt_no == receipt_no[:40],
                                                         Transfer.wallet_account_id == acc.wallet_account_id)).scalar()
    if transfer is None:
        abort(404)
    return render_template("portal/receipt.html", t=transfer, acc=acc)


@bp.route("/a/<number>/bills/<bill_no>.pdf")
@access.portal_login_required
def bill_pdf(number: str, bill_no: str):
    acc, _role = access.account_for(number)
    bill = next((b for b in dashboard.bills(db.session, acc) if b.number == bill_no), None)
    if bill is None:
        abort(404)
    from meterhub.modules.postpaid.documents import bill_pdf as render_pdf

    return current_app.response_class(render_pdf(db.session, bill), mimetype="application/pdf",
                                      headers={"Content-Disposition": f'inline; filename="{bill.number}.pdf"'})


def _pay(acc: PrepaidAccount, back: str, user_id: int | None,
         page: Callable[[], str]) -> tuple[object, PaymentOrder | None]:
    """Create an order for the posted amount and send the payer to the provider (or to the order's QR); a bad
    amount: ``page()`` again with the problem beside the amount."""
    channels = orders.enabled_channels(db.session)
    channel_id = requested_id("channel_id")
    channel = channels[0] if channels and channel_id is None else None
    if channel_id is not None:  # a named channel must be one of the account's group's enabled channels
        channel = next((c for c in channels if c.id == channel_id), None) or abort(404)
    if channel is None:
        flash(_("Online payment is not set up for this property yet."), "error")
        return redirect(back), None
    try:
        order = orders.create_order(db.session, acc, channel, request.form.get("amount", ""),
                                    url_for("portal.order", out_trade_no="OUT_TRADE_NO"), user_id)
        db.session.commit()
    except MeterhubError as err:
        db.session.rollback()
        if refused(err, ("amount",)):
            return (page(), 400), None
        return redirect(back), None  # a problem of the account or the channel: said at the top
    return redirect(order.pay_url or url_for("portal.order", out_trade_no=order.out_trade_no)), order


@bp.route("/a/<number>/pay", methods=["POST"])
@access.portal_login_required
def pay(number: str):
    acc, _role = access.account_for(number)
    return _pay(acc, url_for("portal.account", number=acc.number), access.current().id, lambda: account(number))[0]


@bp.route("/orders/<out_trade_no>")
def order(out_trade_no: str):
    """Where the payer lands after paying: the order's state (refreshes until the callback arrived)."""
    token = session.get("portal_orders", {}).get(out_trade_no)
    user = access.current()
    if user is None and token is None:
        abort(404)
    if token is not None:
        use_group(token)
    row = db.session.execute(select(PaymentOrder).where(PaymentOrder.out_trade_no == out_trade_no[:32])).scalar()
    if row is None or (user is not None and token is None and row.portal_user_id != user.id):
        abort(404)
    acc = db.session.get(PrepaidAccount, row.account_id)
    qr = Markup(labels.qr_svg(row.detail["qr"], scale=5)) if row.detail.get("qr") and row.state == "created" else None
    return render_template("portal/order.html", order=row, acc=acc, qr=qr,
                           s=dashboard.summary(db.session, acc, full=False))


@bp.route("/a/<number>/members", methods=["GET", "POST"])
@access.portal_login_required
def members(number: str):
    acc, role = access.account_for(number)
    if role != "owner":
        abort(404)
    user = access.current()
    if request.method == "POST":
        try:
            if request.form.get("remove"):
                service.remove_member(db.session, acc, request.form.get("remove", type=int) or 0, actor=f"portal:{user.phone}")
            else:
                service.invite(db.session, acc, request.form.get("phone", ""), request.form.get("role", "staff"),
                               invited_by=f"portal:{user.phone}")
            db.session.commit()
            flash(_("Saved."), "ok")
        except MeterhubError as err:
            db.session.rollback()
            if refused(err, ("phone", "role")):  # the invitation again as typed, the problem beside its field
                return _members_page(acc), 400
        return redirect(url_for("portal.members", number=acc.number))
    return _members_page(acc)


def _members_page(acc: PrepaidAccount) -> str:
    return render_template("portal/members.html", acc=acc, members=service.members(db.session, acc),
                           invitations=service.pending_invitations(db.session, acc))


@bp.route("/password", methods=["GET", "POST"])
@access.portal_login_required
def password():
    if request.method == "POST":
        try:
            user = access.current()
            service.set_password(db.session, user, request.form.get("password", ""))
            db.session.commit()
            access.sign_in(user)  # other sessions ended; this one goes on
            flash(_("Password saved."), "ok")
            return redirect(url_for("portal.home"))
        except MeterhubError as err:
            db.session.rollback()
            refused(err, ("password",))  # beside the field (a password is never sent back)
            return render_template("portal/password.html"), 400
    return render_template("portal/password.html")


@bp.route("/r/<token>", methods=["GET", "POST"])
def room_pay(token: str):
    """The room QR label's page: the room's balance and status, and paying without signing in."""
    target = labels.parse_room_token(current_app.config["SECRET_KEY"], token)
    if target is None:
        abort(404)
    use_group(target[0])
    room = db.session.get(Room, target[1])
    acc = db.session.execute(select(PrepaidAccount).where(PrepaidAccount.room_id == target[1],
                                                          PrepaidAccount.status == "open")
                             .order_by(PrepaidAccount.id.desc()).limit(1)).scalar() if room else None
    if room is None:
        abort(404)
    if request.method == "POST" and acc is not None:
        response, placed = _pay(acc, url_for("portal.room_pay", token=token), None,
                                lambda: _room_page(room, acc))
        if placed is not None:  # this browser may follow its anonymous order
            session["portal_orders"] = {**session.get("portal_orders", {}), placed.out_trade_no: target[0]}
        return response
    return _room_page(room, acc)


def _room_page(room: Room, acc: PrepaidAccount | None) -> str:
    return render_template("portal/room_pay.html", room=room, s=dashboard.summary(db.session, acc, full=False)
                           if acc else None, amounts=AMOUNTS, channels=orders.enabled_channels(db.session))
