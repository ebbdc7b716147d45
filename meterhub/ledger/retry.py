"""Running a money transaction with retries on serialization failures, deadlocks and lost connections.

Every money request is idempotent (keyed), so re-running the whole transaction is always safe: if the
first attempt committed before the connection died, the retry finds its transfer and returns it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def is_retryable(err: BaseException) -> bool:
    """True for errors after which the same transaction may simply be run again."""
    if isinstance(err, DBAPIError):
        if err.connection_invalidated:
            return True
        code = getattr(err.orig, "pgcode", None)
        if code in RETRY_SQLSTATES:
            return True
        if isinstance(err, IntegrityError) and code == "23505":
            return True  # a concurrent request with the same idempotency key won; the retry replays it
        if code is None or str(code).startswith("08") or code in ("57P01", "57P02", "57P03"):
            return True  # connection lost or backend terminated (pg_terminate_backend)
    return False


def run_money_transaction(
    session: Session,
    work: Callable[[Session], T],
    *,
    attempts: int = 15,
    isolation: str | None = None,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Run ``work(session)`` and commit; on a retryable error roll back and run it again."""
    for attempt in range(1, attempts + 1):
        try:
            if isolation:
                session.connection(execution_options={"isolation_level": isolation})
            result = work(session)
            session.commit()
            return result
        except Exception as err:
            try:
                session.rollback()
            except Exception:  # the connection may be gone; the session recovers on next use
                log.debug("rollback after %s failed", type(err).__name__, exc_info=True)
            if attempt == attempts or not is_retryable(err):
                raise
            if on_retry:
                on_retry(err)
            log.info("money transaction retry %d after %s", attempt, type(err).__name__)
            time.sleep(min(0.5, 0.005 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")
