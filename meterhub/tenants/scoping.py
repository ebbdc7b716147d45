"""App-level scoping on top of RLS: what an operator may see and change inside their group.

Every object id a request names -- in the URL, the form, the JSON body or the query string -- is resolved
through :func:`restrict` (NetBox's ``RestrictedQuerySet.restrict``): by :func:`get_or_404` for an id in hand,
by :func:`requested` / :func:`requested_all` for ids read from the request. Anything outside the operator's
scope answers 404, never 403, so its existence is not revealed; an id from a form is never trusted because
the URL's object was in scope.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import abort, request
from flask_login import current_user
from sqlalchemy import ColumnElement, Select, false, or_, select

from ..extensions import db
from .models import Operator, Property
from .permissions import GROUP_WIDE_ROLES, role_permissions

M = TypeVar("M")
#: Largest id a request may name (bigint); a larger number is simply not found.
ID_MAX = 2**63 - 1


def has_permission(operator: Operator, permission: str) -> bool:
    return permission in role_permissions(operator.role)


def whole_group(operator: Operator) -> bool:
    """True when the operator's role applies to every property of the group."""
    return operator.role in GROUP_WIDE_ROLES or operator.all_properties


def property_ids(operator: Operator) -> set[int] | None:
    """The properties in scope, or None for the whole group."""
    return None if whole_group(operator) else operator.property_ids


# --- how each model reaches a property --------------------------------------------------------------------------

def _transfer_clause(model: Any, scope: set[int], write: bool) -> ColumnElement:
    """A ledger transfer belongs to the property of its customer wallet; one without a wallet to no property."""
    from ..ledger.models import LedgerAccount

    wallets = select(LedgerAccount.id).where(LedgerAccount.property_id.in_(scope))
    return model.wallet_account_id.in_(wallets)


def _group_or_property_clause(model: Any, scope: set[int], write: bool) -> ColumnElement:
    """Objects of a property or of the whole group (``property_id`` NULL): a scoped operator sees the
    group-wide ones but changes only those of their properties."""
    if write:
        return model.property_id.in_(scope)
    return or_(model.property_id.is_(None), model.property_id.in_(scope))


def _scope_rules() -> dict[str, Callable[[Any, set[int], bool], ColumnElement]]:
    return {"Transfer": _transfer_clause, "Tariff": _group_or_property_clause}


def restrict(stmt: Select, model: Any, operator: Operator | None = None, permission: str | None = None, *,
             write: bool = False) -> Select:
    """Limit ``stmt`` over ``model`` to the operator's scope (and to nothing without ``permission``).

    ``write`` asks for the objects the operator may change, which for group-wide objects (a price plan of the
    whole group) is narrower than what they may see. Models without any way to a property (operators,
    notifier settings, payment channels) are group-level settings: RLS keeps them in the group.
    """
    operator = operator or current_user
    if permission and not has_permission(operator, permission):
        return stmt.where(false())
    scope = property_ids(operator)
    if scope is None:
        return stmt
    scope = scope or {-1}
    rule = _scope_rules().get(model.__name__)
    if rule is not None:
        return stmt.where(rule(model, scope, write))
    column = model.id if model is Property else getattr(model, "property_id", None)
    if column is None:
        return stmt
    return stmt.where(column.in_(scope))


def find_in_scope(model: type[M], object_id: int | None, operator: Operator | None = None,
                  permission: str | None = None, *, write: bool = False) -> M | None:
    """The object with ``object_id`` if the operator may see it (or change it, with ``write``), else None."""
    if object_id is None or not 0 < object_id <= ID_MAX:
        return None
    stmt = restrict(select(model).where(model.id == object_id), model, operator, permission, write=write)  # type: ignore[attr-defined]
    return db.session.execute(stmt).scalar()


def get_or_404(model: type[M], object_id: int | None, permission: str | None = None, *, write: bool = False) -> M:
    """Load one object in scope or abort with 404."""
    obj = find_in_scope(model, object_id, None, permission, write=write)
    if obj is None:
        abort(404)
    return obj


# --- ids named by the request ----------------------------------------------------------------------------------

_SEPARATORS = re.compile(r"[\s,]+")


def _raw_values(field: str) -> list[str]:
    """Every value of ``field`` in the form, the JSON body, then the query string (first that has it)."""
    if field in request.form:
        return request.form.getlist(field)
    body = request.get_json(silent=True) if request.is_json else None
    if isinstance(body, dict) and field in body:
        value = body[field]
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return request.args.getlist(field)


def _parse_ids(field: str, values: list[str]) -> list[int]:
    ids = []
    for raw in values:
        for part in _SEPARATORS.split(raw.strip()):
            if not part:
                continue
            if not part.isdecimal():
                abort(400, description=f"{field} must be a list of object numbers, not {part[:30]!r}.")
            ids.append(int(part))
    return ids


def requested_id(field: str) -> int | None:
    """The single id the request names in ``field`` (None when absent or empty; 400 when not a number)."""
    ids = _parse_ids(field, _raw_values(field))
    if len(ids) > 1:
        abort(400, description=f"{field} takes one object number.")
    return ids[0] if ids else None


def requested(model: type[M], field: str, permission: str | None = None, *, write: bool = False,
              required: bool = True) -> M | None:
    """The object the request names in ``field``, in the operator's scope, else 404 (None if absent and optional)."""
    object_id = requested_id(field)
    if object_id is None and not required:
        return None
    return get_or_404(model, object_id, permission, write=write)


def requested_all(model: type[M], field: str, permission: str | None = None, *, write: bool = False) -> list[M]:
    """Every object the request names in ``field`` (repeated and/or separated by commas or spaces), in the
    order named; 404 when any of them is outside the operator's scope."""
    return objects_or_404(model, _parse_ids(field, _raw_values(field)), permission, write=write)


def objects_or_404(model: type[M], object_ids: list[int], permission: str | None = None, *,
                   write: bool = False) -> list[M]:
    """Load every object of ``object_ids`` in scope (in that order), or abort with 404 if one is not."""
    wanted = set(object_ids)
    if any(not 0 < i <= ID_MAX for i in wanted):
        abort(404)
    if not wanted:
        return []
    stmt = restrict(select(model).where(model.id.in_(wanted)), model, None, permission, write=write)  # type: ignore[attr-defined]
    found = {obj.id: obj for obj in db.session.execute(stmt).scalars()}  # type: ignore[attr-defined]
    if len(found) != len(wanted):
        abort(404)
    return [found[i] for i in object_ids]


def visible_properties(operator: Operator | None = None) -> list[Property]:
    """Properties the operator may see, ordered by name."""
    stmt = restrict(select(Property).order_by(Property.name), Property, operator, "property.view")
    return list(db.session.execute(stmt).scalars())
