"""Failed sign-ins counted in PostgreSQL: the sign-in throttle's counter while Redis cannot be reached.

Redis counts failures in normal operation (:class:`meterhub.tenants.auth.LoginThrottle`). When a Redis call
fails, the throttle counts here instead, in a transaction of its own (the failed sign-in's request is not
committed), so a Redis outage never opens sign-in to unlimited guessing. The counts stay for their window
after Redis is back and are added to Redis's. Keys are stored as SHA-256 hashes (no user name or phone).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import DateTime, Integer, String, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class LoginFailure(db.Model):
    """Failures counted for one throttle key until ``window_ends``."""

    __tablename__ = "login_failures"
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, nullable=False)
    window_ends: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def counts(engine: Engine, keys: list[str]) -> dict[str, tuple[int, int]]:
    """``{key: (failures, seconds left in its window)}`` of the keys with a live window."""
    hashed = {key_hash(k): k for k in keys}
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT key_hash, failures, ceil(extract(epoch FROM window_ends - now()))::int AS left_s "
            "FROM login_failures WHERE key_hash = ANY(:keys) AND window_ends > now()"), {"keys": list(hashed)})
        return {hashed[r.key_hash]: (r.failures, max(1, r.left_s)) for r in rows}


def count_failure(engine: Engine, keys: list[str], window_s: int) -> None:
    """One more failure for each key (a window starts at the first failure); expired rows are dropped."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM login_failures WHERE window_ends < now() - interval '1 hour'"))
        for key in keys:
            conn.execute(text(
                "INSERT INTO login_failures (key_hash, failures, window_ends) "
                "VALUES (:k, 1, now() + make_interval(secs => :w)) ON CONFLICT (key_hash) DO UPDATE SET "
                "failures = CASE WHEN login_failures.window_ends <= now() THEN 1 "
                "ELSE login_failures.failures + 1 END, "
                "window_ends = CASE WHEN login_failures.window_ends <= now() THEN excluded.window_ends "
                "ELSE login_failures.window_ends END"), {"k": key_hash(key), "w": window_s})


def forget(engine: Engine, key: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM login_failures WHERE key_hash = :k"), {"k": key_hash(key)})
