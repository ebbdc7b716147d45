"""Operator authentication: argon2 hashes, login lookup across groups, login rate limiting."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ..errors import RateLimited, ValidationError
from ..i18n import _l
from . import login_failures

log = logging.getLogger(__name__)
_hasher = PasswordHasher()
# Verified against when the username is unknown, so both paths cost the same time.
_DUMMY_HASH = _hasher.hash("meterhub-dummy-password")
MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` after checking it is long enough."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(_l("Password too short: use at least %(n)d characters.", n=MIN_PASSWORD_LENGTH),
                              {"password": "too short"})
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class LoginTarget:
    operator_id: int
    group_id: int


def lookup(session: Session, username: str) -> LoginTarget | None:
    """Find which group a username belongs to (a SECURITY DEFINER function; RLS hides operators)."""
    row = session.execute(
        text("SELECT operator_id, group_id FROM meterhub_login_lookup(:u)"), {"u": username}
    ).first()
    return LoginTarget(row.operator_id, row.group_id) if row else None


def burn_time(password: str) -> bool:
    """Spend a hash verification for an unknown username (no timing oracle); always False."""
    verify_password(_DUMMY_HASH, password)
    return False


def end_sessions(user: Any) -> None:
    """End every signed-in session of an operator or portal user (their session version moves on)."""
    user.session_version = (user.session_version or 1) + 1


class LoginThrottle:
    """At most ``max_failures`` failed sign-ins per account (username, phone) and four times as many per
    client address in ``window`` seconds.

    Counting uses only commands every supported Redis has (``SET ... NX EX`` then ``INCR``, which keeps the
    expiry): Redis 6.2, which the embedded server is, rejects ``EXPIRE ... NX`` and with it the whole MULTI.

    While Redis cannot be reached, failures are counted in PostgreSQL through ``engine``
    (:mod:`meterhub.tenants.login_failures`), and those counts are added to Redis's until their window ends:
    a Redis outage neither stops sign-in nor opens it to unlimited guessing. Without ``engine`` a Redis error
    is raised as before.
    """

    def __init__(self, client: redis.Redis, max_failures: int, window: int, namespace: str = "meterhub",
                 engine: Engine | None = None) -> None:
        self.client, self.max_failures, self.window = client, max_failures, window
        self.namespace, self.engine = namespace, engine

    def _keys(self, account: str, ip: str) -> list[tuple[str, int]]:
        return [(f"{self.namespace}:login:user:{account.lower()}", self.max_failures),
                (f"{self.namespace}:login:ip:{ip}", self.max_failures * 4)]

    def _redis_counts(self, keys: list[str]) -> dict[str, tuple[int, int]]:
        """``{key: (failures, seconds left)}`` from Redis; {} while it cannot be reached (with an engine)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
                pipe.ttl(key)
            values = pipe.execute()
        except redis.RedisError as err:
            if self.engine is None:
                raise
            log.warning("sign-in throttle: Redis unavailable (%s); counting in PostgreSQL", type(err).__name__)
            return {}
        out = {}
        for key, count, ttl in zip(keys, values[::2], values[1::2]):
            if ttl == -1:  # a counter without expiry (never made by failed()) must not lock out for good
                self.client.expire(key, self.window)
            out[key] = (int(count or 0), int(ttl) if ttl and ttl > 0 else self.window)
        return out

    def check(self, account: str, ip: str) -> None:
        """Raise :class:`RateLimited` (with the seconds to wait) when either counter is exhausted."""
        keys = self._keys(account, ip)
        names = [key for key, _limit in keys]
        in_redis = self._redis_counts(names)
        in_db = login_failures.counts(self.engine, names) if self.engine is not None else {}
        for key, limit in keys:
            parts = [part for part in (in_redis.get(key), in_db.get(key)) if part and part[0]]
            if sum(count for count, _ in parts) >= limit:
                wait = max(left for _, left in parts)
                raise RateLimited(
                    f"Too many failed sign-ins. Try again in {wait_text(wait)} "
                    "or ask your group admin to reset your password.",
                    retry_after=wait,
                )

    def failed(self, account: str, ip: str) -> None:
        """Count one failed sign-in for the account and the address (the window starts at the first)."""
        keys = self._keys(account, ip)
        try:
            pipe = self.client.pipeline()
            for key, _limit in keys:
                pipe.set(key, 0, ex=self.window, nx=True)
                pipe.incr(key)
            pipe.execute()
        except redis.RedisError:
            if self.engine is None:
                raise
            login_failures.count_failure(self.engine, [key for key, _ in keys], self.window)

    def succeeded(self, account: str, ip: str) -> None:
        """Forget the account's failures (the address keeps its count)."""
        key = self._keys(account, ip)[0][0]
        if self.engine is not None:
            login_failures.forget(self.engine, key)
        try:
            self.client.delete(key)
        except redis.RedisError:
            if self.engine is None:
                raise


def wait_text(seconds: int) -> str:
    """``seconds`` as people say it: "45 seconds", "3 minutes"."""
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = -(-seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
