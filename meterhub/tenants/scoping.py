"""App-level scoping on top of RLS: what an operator may see inside their group.

Every console view goes through :func:`restrict` or :func:`get_or_404`; anything outside the operator's
scope answers 404, never 403, so its existence is not revealed.
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask import abort
from flask_login import current_user
from sqlalchemy import Select, select

from ..extensions import db
from .models import Operator, Property
from .permissions import GROUP_WIDE_ROLES, role_permissions

M = TypeVar("M")


def has_permission(operator: Operator, permission: str) -> bool:
    return permission in role_permissions(operator.role)


def whole_group(operator: Operator) -> bool:
    """True when the operator's role applies to every property of the group."""
    return operator.role in GROUP_WIDE_ROLES or operator.all_properties


def property_ids(operator: Operator) -> set[int] | None:
    """The properties in scope, or None for the whole group."""
    return None if whole_group(operator) else operator.property_ids


def restrict(stmt: Select, model: Any, operator: Operator | None = None, permission: str | None = None) -> Select:
    """Limit ``stmt`` over ``model`` to the operator's scope (and to nothing without ``permission``)."""
    operator = operator or current_user
    if permission and not has_permission(operator, permission):
        return stmt.where(False)
    scope = property_ids(operator)
    if scope is None:
        return stmt
    column = model.id if model is Property else getattr(model, "property_id", None)
    if column is None:
        return stmt
    return stmt.where(column.in_(scope or {-1}))


def get_or_404(model: type[M], object_id: int, permission: str | None = None) -> M:
    """Load one object in scope or abort with 404."""
    obj = db.session.execute(restrict(select(model).where(model.id == object_id), model, None, permission)).scalar()  # type: ignore[attr-defined]
    if obj is None:
        abort(404)
    return obj


def visible_properties(operator: Operator | None = None) -> list[Property]:
    """Properties the operator may see, ordered by name."""
    stmt = restrict(select(Property).order_by(Property.name), Property, operator, "property.view")
    return list(db.session.execute(stmt).scalars())
