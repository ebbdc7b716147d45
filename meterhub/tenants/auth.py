"""Operator authentication: argon2 hashes, login lookup across groups, login rate limiting."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import text
from sqlalchemy.orm import Session

from ..errors import RateLimited, ValidationError

_hasher = PasswordHasher()
# Verified against when the username is unknown, so both paths cost the same time.
_DUMMY_HASH = _hasher.hash("meterhub-dummy-password")
MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` after checking it is long enough."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            f"Password too short: use at least {MIN_PASSWORD_LENGTH} characters.",
            {"password": "too short"},
        )
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


def burn_time(password: str) -> None:
    """Spend a hash verification for an unknown username (no timing oracle)."""
    verify_password(_DUMMY_HASH, password)


class LoginThrottle:
    """At most ``max_failures`` failed logins per username and per client address in ``window``."""

    def __init__(self, client: redis.Redis, max_failures: int, window: int, namespace: str = "meterhub") -> None:
        self.client, self.max_failures, self.window = client, max_failures, window
        self.namespace = namespace

    def _keys(self, username: str, ip: str) -> list[str]:
        return [f"{self.namespace}:login:user:{username.lower()}", f"{self.namespace}:login:ip:{ip}"]

    def check(self, username: str, ip: str) -> None:
        """Raise :class:`RateLimited` when either counter is exhausted."""
        for key in self._keys(username, ip):
            count = int(self.client.get(key) or 0)
            limit = self.max_failures * (4 if ":ip:" in key else 1)
            if count >= limit:
                ttl = max(int(self.client.ttl(key)), 1)
                raise RateLimited(
                    f"Too many failed sign-ins. Try again in {ttl // 60 + 1} minutes "
                    "or ask your group admin to reset your password.",
                    retry_after=ttl,
                )

    def failed(self, username: str, ip: str) -> None:
        pipe = self.client.pipeline()
        for key in self._keys(username, ip):
            pipe.incr(key)
            pipe.expire(key, self.window, nx=True)
        pipe.execute()

    def succeeded(self, username: str, ip: str) -> None:
        self.client.delete(self._keys(username, ip)[0])
