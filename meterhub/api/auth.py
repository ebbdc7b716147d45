"""Request authentication for the API: bearer token -> group (RLS) -> operator and scopes, rate limits,
and the scope/permission checks every endpoint goes through (outside the scope answers 404, as in the
console)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import redis
from flask import current_app, g, request
from sqlalchemy import Select

from ..db import use_group
from ..extensions import db
from ..models import utcnow
from ..redis_conn import get_redis, redis_key
from ..tenants.models import Operator
from ..tenants.scoping import find_in_scope, has_permission, restrict
from . import tokens
from .errors import ApiError
from .models import ApiToken

M = TypeVar("M")
DEFAULT_RATE = 120  # requests per token per minute
DEFAULT_AUTH_FAILURES = 30  # failed authentications per client address per minute


@dataclass
class Principal:
    """Who is calling: the token, its operator (role and property scope) and the token's scopes."""

    token: ApiToken
    operator: Operator

    @property
    def group_id(self) -> int:
        return self.token.group_id

    @property
    def actor(self) -> str:
        return f"api:{self.token.prefix}:{self.operator.username}"

    def can(self, permission: str) -> bool:
        return has_permission(self.operator, permission) and tokens.scope_allows(self.token.scopes, permission)


_LOCAL_COUNTS: dict[str, int] = {}  # rate-limit buckets of this process while Redis is unreachable


def _count(key: str, window: int = 60) -> tuple[int, int]:
    bucket = int(time.time() // window)
    full = redis_key("api", "rl", key, bucket)
    try:
        pipe = get_redis().pipeline()
        pipe.incr(full)
        pipe.expire(full, window + 5)
        count = int(pipe.execute()[0])
    except redis.RedisError:  # Redis down: limit per process rather than refuse every request (money goes on)
        if len(_LOCAL_COUNTS) > 10000:
            _LOCAL_COUNTS.clear()
        count = _LOCAL_COUNTS[full] = _LOCAL_COUNTS.get(full, 0) + 1
    return count, window - int(time.time()) % window


def _limit(name: str, config_key: str, default: int) -> None:
    limit = int(current_app.config.get(config_key, default))
    count, reset = _count(name)
    g.api_rate = (limit, max(limit - count, 0), reset)
    if count > limit:
        raise ApiError(429, f"Rate limit of {limit} requests per minute exceeded; retry in {reset} s.",
                       headers={"Retry-After": str(reset)})


def authenticate() -> Principal:
    """The caller of this request, or 401 (unknown, revoked or expired token, inactive operator)."""
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    found = tokens.lookup(db.session, secret.strip()) if scheme.lower() == "bearer" else None
    token = operator = None
    if found is not None:
        use_group(found[1])
        token = db.session.get(ApiToken, found[0])
        operator = db.session.get(Operator, token.operator_id) if token is not None else None
    if token is None or operator is None or not token.active or not operator.active:
        _limit(f"ip:{request.remote_addr}", "API_AUTH_FAILURES_PER_MINUTE", DEFAULT_AUTH_FAILURES)
        use_group(None)
        raise ApiError(401, "Send a valid API token: Authorization: Bearer mh_…", headers={
            "WWW-Authenticate": 'Bearer realm="meterhub"'})
    _limit(f"token:{token.id}", "API_RATE_LIMIT_PER_MINUTE", DEFAULT_RATE)
    if token.last_used_at is None or (utcnow() - token.last_used_at).total_seconds() > 60:
        token.last_used_at = utcnow()
        db.session.commit()
    return Principal(token, operator)


def principal() -> Principal:
    return g.api_principal


def requires(permission: str) -> Callable:
    """Authenticate, then require ``permission`` (operator role and token scope); without it 404."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.api_principal = authenticate()
            if not g.api_principal.can(permission):
                scope_hint = [s for s, perms in tokens.SCOPES.items() if permission in perms]
                if has_permission(g.api_principal.operator, permission):
                    raise ApiError(403, f"This token lacks the scope {', '.join(scope_hint)}.", code="insufficient_scope")
                raise ApiError(404, "Not found.")
            g.api_permission = permission
            return view(*args, **kwargs)

        wrapper.api_permission = permission  # type: ignore[attr-defined]
        return wrapper

    return decorator


def scoped(stmt: Select, model: Any, permission: str | None = None) -> Select:
    """``stmt`` limited to the caller's property scope (and RLS)."""
    return restrict(stmt, model, principal().operator, permission or g.api_permission)


def get_in_scope(model: type[M], object_id: int, permission: str | None = None) -> M:
    """One object in the caller's scope or a 404."""
    obj = find_in_scope(model, object_id, principal().operator, permission or g.api_permission)
    if obj is None:
        raise ApiError(404, "Not found.")
    return obj
