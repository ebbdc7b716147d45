"""Small helpers shared by the console views."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import abort, request
from flask_login import current_user, login_required

from meterhub.extensions import db
from meterhub.tenants import audit
from meterhub.tenants.scoping import has_permission


def client_ip() -> str:
    return request.remote_addr or ""


def record(action: str, obj: Any = None, detail: dict[str, Any] | None = None, *, group_id: int | None = None,
           actor: str | None = None, operator_id: int | None = None) -> None:
    """Append an audit entry for the signed-in operator's action (in the current transaction)."""
    user = current_user if current_user and current_user.is_authenticated else None
    audit.record(
        db.session,
        group_id if group_id is not None else user.group_id,
        action,
        actor=actor or (user.username if user else "anonymous"),
        operator_id=operator_id if operator_id is not None else (user.id if user else None),
        object_type=type(obj).__name__.lower() if obj is not None else "",
        object_id=getattr(obj, "id", "") if obj is not None else "",
        detail=detail,
        ip=client_ip(),
    )


def permission_required(permission: str) -> Callable:
    """Sign-in plus ``permission``; without it the page is hidden (404), as if it did not exist."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not has_permission(current_user, permission):
                abort(404)
            return view(*args, **kwargs)

        wrapper.permission = permission  # type: ignore[attr-defined]
        return wrapper

    return decorator


def local_path(target: str | None) -> str | None:
    """``target`` when it is a path on this site (an open redirect otherwise: other hosts, ``//host``, ``/\\host``,
    control characters); None when it is not."""
    from urllib.parse import urlsplit

    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or "\\" in target:
        return None
    if any(ord(ch) < 0x20 for ch in target) or urlsplit(target).netloc:
        return None
    return target
