"""One search endpoint for every picker: rooms, meters, accounts, tenants, buildings, floors by the keys people
use, in the operator's scope (RLS for the group, the operator's properties, optionally one property)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, request
from flask_login import current_user, login_required

from meterhub.extensions import db
from meterhub.tenants.lookup import KINDS, resolve, search, split_keys
from meterhub.tenants.models import Property
from meterhub.tenants.scoping import find_in_scope, get_or_404, property_ids, requested, requested_all

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


def picked(model: Any, kind: str, key_field: str, id_field: str, permission: str, *,
           property_id: int | None = None) -> Any:
    """The object a form names: by its key in ``key_field`` (a picker; unknown or out of scope: ValidationError
    naming it) or, from a client that sends ids, by ``id_field`` (resolved in scope like every id: 404)."""
    if key_field in request.form or id_field not in request.form:
        found = resolve(db.session, current_user.group_id, kind, request.form.get(key_field, ""),
                        property_ids=property_ids(current_user), property_id=property_id)
        return get_or_404(model, found.id, permission)
    return requested(model, id_field, permission)


def picked_all(model: Any, kind: str, key_field: str, id_field: str, permission: str, *,
               property_id: int | None = None) -> list[Any]:
    """Several objects by their keys (one per line) or, from a client that sends ids, ``id_field``."""
    if key_field in request.form or id_field not in request.form:
        keys = split_keys(request.form.get(key_field, ""))
        found = [resolve(db.session, current_user.group_id, kind, k, property_ids=property_ids(current_user),
                         property_id=property_id) for k in keys]
        return [get_or_404(model, f.id, permission) for f in found]
    return requested_all(model, id_field, permission)
