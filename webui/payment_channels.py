"""Group admins configure the online payment channels of the tenant portal (sandbox, WeChat Pay v3)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select

from meterhub.driver.base import SECRET_MASK
from meterhub.errors import ValidationError
from meterhub.extensions import db
from meterhub.payments.models import PaymentChannel
from meterhub.payments.orders import channel_view, check_can_enable, create_channel
from meterhub.payments.providers import PaymentError, providers
from meterhub.public_url import public_base_url
from meterhub.tenants.scoping import get_or_404

from .forms import refused
from .util import permission_required, record

bp = Blueprint("payment_channels", __name__, url_prefix="/payment-channels")
#: Form fields per provider: (name, label, secret?, multi-line?)
FIELDS = {
    "wechat_v3": (("appid", "AppID", False, False), ("mchid", _l("Merchant id (mchid)"), False, False),
                  ("merchant_serial_no", _l("Merchant certificate serial"), False, False),
                  ("apiv3_key", _l("APIv3 key"), True, False),
                  ("merchant_private_key", _l("Merchant private key (PEM)"), True, True),
                  ("platform_serial", _l("Platform certificate serial"), False, False),
                  ("platform_certificate", _l("Platform certificate or public key (PEM)"), False, True)),
}
SECRETS = {"apiv3_key", "merchant_private_key"}


@bp.route("/", methods=["GET", "POST"])
@permission_required("group.manage")
def index():
    if request.method == "POST":
        return _create()
    return _page()


def _page(error: str = "", status: int = 200):
    channels = db.session.execute(select(PaymentChannel).order_by(PaymentChannel.id)).scalars().all()
    notify = {c.id: channel_view(c).notify_url for c in channels}
    if error:
        flash(error, "error")
    return render_template("payment_channels/index.html", channels=channels, notify=notify, public_url=public_base_url(),
                           providers=sorted(providers()), fields=FIELDS, mask=SECRET_MASK), status


def _create():
    form = request.form
    provider = form.get("provider", "")
    if provider not in providers():
        abort(404)  # the form names its provider: only a crafted post names another
    settings, secrets = {}, {}
    for name, _label, secret, _multi in FIELDS.get(provider, ()):
        value = form.get(name, "").strip()
        if secret:
            secrets[name] = value
        elif value:
            settings[name] = value
    if settings.get("platform_serial") and settings.get("platform_certificate"):
        settings["platform_certificates"] = {settings.pop("platform_serial"): settings.pop("platform_certificate")}
    try:
        channel = create_channel(db.session, current_user.group_id, provider, form.get("name", "").strip() or provider,
                                 settings, secrets, actor=current_user.username)
    except (PaymentError, ValidationError) as err:
        db.session.rollback()
        refused(err, ("name", *(f[0] for f in FIELDS.get(provider, ()))), form=provider)  # beside its field
        return _page(status=400 if isinstance(err, ValidationError) else 409)
    db.session.commit()
    flash(_("Payment channel created."), "ok")
    return redirect(url_for("payment_channels.index", _anchor=f"channel-{channel.id}"))


@bp.route("/<int:channel_id>/toggle", methods=["POST"])
@permission_required("group.manage")
def toggle(channel_id: int):
    channel = get_or_404(PaymentChannel, channel_id)
    if not channel.enabled:
        try:
            check_can_enable(channel.provider)
        except PaymentError as err:
            return _page(str(err), 409)
    channel.enabled = not channel.enabled
    record("payment.channel_" + ("enabled" if channel.enabled else "disabled"), channel, {"name": channel.name})
    db.session.commit()
    return redirect(url_for("payment_channels.index"))
