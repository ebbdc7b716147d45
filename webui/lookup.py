"""One search endpoint for every picker: rooms, meters, accounts, tenants, buildings, floors by the keys people
use, in the operator's scope (RLS for the group, the operator's properties, optionally one property)."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, request
from flask_login import current_user, login_required

from meterhub.extensions import db
from meterhub.tenants.lookup import KINDS, search
from meterhub.tenants.scoping import property_ids
from meterhub.tenants.models import Property
from meterhub.tenants.scoping import find_in_scope

bp = Blueprint("lookup", __name__)


@bp.route("/lookup")
@login_required
def lookup():
    """``?kind=room&q=A-3[&property_id=1]`` → ``[{"key": "A-310", "label": "A-310 · 张三 · 万达广场"}, ...]``."""
    kind = request.args.get("kind", "")
    if kind not in KINDS:
        abort(404)
    prop_id = request.args.get("property_id", type=int)
    if prop_id is not None and find_in_scope(Property, prop_id) is None:
        abort(404)
    found = search(db.session, current_user.group_id, kind, request.args.get("q", "")[:100],
                   property_ids=property_ids(current_user), property_id=prop_id)
    return jsonify([{"key": f.key, "label": f.label} for f in found])
