"""Alarms in the console: the list, one alarm with its history, acknowledge; notifier settings and log."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select

from meterhub.alarms import secrets as secret_store
from meterhub.alarms.engine import acknowledge
from meterhub.alarms.kinds import KINDS, STATES
from meterhub.alarms.models import Alarm, AlarmEvent, NotificationLog, NotifierConfig
from meterhub.alarms.notes import level_name
from meterhub.alarms.registry import notifiers
from meterhub.alarms.texts import details, value_text
from meterhub.errors import ValidationError
from meterhub.extensions import db
from meterhub.tenants.scoping import get_or_404, has_permission, restrict

from .forms import refused
from .names import prefetch
from .util import local_path, permission_required, record

bp = Blueprint("alarms", __name__, url_prefix="/alarms")
bp.add_app_template_global(level_name, "alarm_level_name")  # a balance level as "Alarm level 1" (一级报警)
bp.add_app_template_global(value_text, "alarm_value")  # a detail value in words of the reader's language


@bp.app_template_global("alarm_detail_rows")
def detail_rows(alarm: Alarm) -> list[tuple[str, Any]]:
    """The rows of an alarm's detail (key, value), without the codes kept for machines."""
    return list(details(alarm.kind, alarm.detail).items())


@bp.app_template_global("notifier_label")
def notifier_label(key: str) -> Any:
    """A notifier's name in the reader's language (an uninstalled one by its key)."""
    notifier = notifiers().get(key)
    return notifier.label if notifier is not None else key


VIEW_PERMISSIONS = ("device.view", "money.view")


def alarm_view_required(view: Callable) -> Callable:
    """Alarms are seen by whoever sees devices or money (404 otherwise)."""

    @wraps(view)
    @login_required
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not any(has_permission(current_user, p) for p in VIEW_PERMISSIONS):
            abort(404)
        return view(*args, **kwargs)

    return wrapper


@bp.route("/")
@alarm_view_required
def index():
    args = request.args
    stmt = restrict(select(Alarm), Alarm).order_by(Alarm.raised_at.desc())
    state = args.get("state", "open")
    if state == "open":
        stmt = stmt.where(Alarm.state != "cleared")
    elif state in STATES:
        stmt = stmt.where(Alarm.state == state)
    if args.get("kind") in KINDS:
        stmt = stmt.where(Alarm.kind == args["kind"])
    if args.get("property_id", "").isdecimal():  # not isdigit(): "²" is a digit int() refuses
        stmt = stmt.where(Alarm.property_id == int(args["property_id"]))
    alarms = db.session.execute(stmt.limit(500)).scalars().all()
    prefetch(a.subject_key for a in alarms)
    return render_template("alarms/index.html", alarms=alarms, kinds=KINDS, state=state)


@bp.route("/<int:alarm_id>")
@alarm_view_required
def detail(alarm_id: int):
    alarm = get_or_404(Alarm, alarm_id)
    events = db.session.execute(select(AlarmEvent).where(AlarmEvent.alarm_id == alarm.id)
                                .order_by(AlarmEvent.id)).scalars().all()
    log_rows = db.session.execute(select(NotificationLog).where(NotificationLog.alarm_id == alarm.id)
                                  .order_by(NotificationLog.id)).scalars().all()
    return render_template("alarms/detail.html", alarm=alarm, kind=KINDS[alarm.kind], events=events,
                           log_rows=log_rows)


@bp.route("/<int:alarm_id>/ack", methods=["POST"])
@permission_required("alarm.ack")
def ack(alarm_id: int):
    alarm = get_or_404(Alarm, alarm_id)
    try:
        acknowledge(db.session, current_user.group_id, alarm.id, operator_id=current_user.id,
                    actor=current_user.username, note=request.form.get("note", ""))
    except ValidationError as err:
        db.session.rollback()
        flash(str(err), "error")
        return redirect(url_for("alarms.detail", alarm_id=alarm_id))
    record("alarm.acknowledge", alarm, {"kind": alarm.kind, "subject": alarm.subject_key})
    db.session.commit()
    flash(_("Alarm acknowledged."), "ok")
    return redirect(local_path(request.form.get("next")) or url_for("alarms.index"))


@bp.route("/notifications")
@permission_required("group.manage")
def notifications():
    rows = db.session.execute(select(NotificationLog).order_by(NotificationLog.id.desc()).limit(500)).scalars().all()
    prefetch(r.subject_key for r in rows)
    return render_template("alarms/notifications.html", rows=rows)


@bp.route("/notifiers", methods=["GET", "POST"])
@permission_required("group.manage")
def notifier_list():
    registry = notifiers()
    if request.method == "POST":
        key = request.form.get("notifier", "")
        if key not in registry:
            abort(404)
        config = NotifierConfig(group_id=current_user.group_id, notifier=key,
                                name=(request.form.get("name") or str(registry[key].label))[:100])
        _apply_form(config, registry[key])
        db.session.add(config)
        db.session.flush()
        record("notifier.create", config, {"notifier": key})
        db.session.commit()
        return redirect(url_for("alarms.notifier_edit", notifier_id=config.id))
    configs = db.session.execute(select(NotifierConfig).order_by(NotifierConfig.id)).scalars().all()
    return render_template("alarms/notifiers.html", configs=configs, registry=registry)


@bp.route("/notifiers/<int:notifier_id>", methods=["GET", "POST"])
@permission_required("group.manage")
def notifier_edit(notifier_id: int):
    config = get_or_404(NotifierConfig, notifier_id)
    notifier = notifiers().get(config.notifier)
    if notifier is None:
        abort(404)
    errors = None
    if request.method == "POST":
        try:
            _apply_form(config, notifier)
        except ValidationError as err:
            db.session.rollback()
            fields = ("name", "enabled", "recipients", *NOTIFIER_RULES, *notifier.settings_fields,
                      *notifier.secret_fields, *(f"template_{k}" for k in KINDS))
            errors = refused(err, fields)  # the form again as typed, the problem beside its field
        else:
            record("notifier.update", config, {"notifier": config.notifier, "settings": config.settings})
            db.session.commit()
            flash(_("Saved."), "ok")
            return redirect(url_for("alarms.notifier_edit", notifier_id=notifier_id))
    page = render_template("alarms/notifier.html", config=config, notifier=notifier, kinds=KINDS,
                           secrets=secret_store.masked(config.secrets, notifier.secret_fields), errors=errors or {},
                           form=request.form if errors is not None else {})
    return (page, 400) if errors is not None else page


#: The notifier form's sending rules besides its channel's own settings.
NOTIFIER_RULES = ("throttle_minutes", "max_per_hour", "quiet_start", "quiet_end")


def _apply_form(config: NotifierConfig, notifier: Any) -> None:
    """Settings, rules and secrets from the posted form (the mask keeps a stored secret)."""
    form = request.form
    config.name = (form.get("name") or config.name)[:100]
    config.enabled = form.get("enabled", "1") == "1"
    config.settings = {**(config.settings or {}),
                       **{f: form.get(f, "").strip() for f in notifier.settings_fields if f in form}}
    if "templates" in form or any(k.startswith("template_") for k in form):
        config.settings["templates"] = {k: form[f"template_{k}"] for k in KINDS if form.get(f"template_{k}")}
    config.kinds = [k for k in form.getlist("kinds") if k in KINDS]
    config.recipients = [r.strip() for r in form.get("recipients", "").replace(",", "\n").splitlines() if r.strip()]
    for name, low, high in (("throttle_minutes", 0, 1440), ("max_per_hour", 1, 1000)):
        value = form.get(name, "")
        if value:
            if not value.isdecimal() or not low <= int(value) <= high:
                raise ValidationError(_("Enter a whole number from %(low)d to %(high)d.", low=low, high=high),
                                      {name: "invalid"})
            setattr(config, name, int(value))
    for name in ("quiet_start", "quiet_end"):
        value = form.get(name, "").strip()
        if value and (len(value) != 5 or value[2] != ":" or not (value[:2] + value[3:]).isdecimal()):
            raise ValidationError(_("Enter a time of day such as 22:00."), {name: "invalid"})
        setattr(config, name, value or None)
    if config.id is None:
        db.session.add(config)
        db.session.flush()
    config.secrets = secret_store.merge(config.secrets or {}, {f: form.get(f) for f in notifier.secret_fields},
                                        f"{config.group_id}:{config.id}")
