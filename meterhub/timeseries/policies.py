"""TimescaleDB's background policies, watched: reports must never go silently stale.

The compression, retention and continuous-aggregate refresh policies run as TimescaleDB background jobs. The
scheduler's time-series job reads ``timescaledb_information.job_stats`` every run; for a policy whose last run
failed it records a ``policy_failed`` health event in every group (once per failure, with TimescaleDB's error
message) and does the policy's work itself (``CALL refresh_continuous_aggregate``, ``compress_chunk``,
``drop_chunks``), run after run, until TimescaleDB's own job succeeds again (then ``policy_ok``).
``meterhub timeseries-jobs`` shows the same states, and the console shows a banner on the dashboard and the
report pages while a policy fails (:func:`failing_policies`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from .timescale import CAGGS

log = logging.getLogger(__name__)

OBJECT_TYPE = "ts_policy"
FAILED, RECOVERED = "policy_failed", "policy_ok"
_STATE_KEY = "policy_failing:{job_id}"
_RELATIONS = ("readings", *CAGGS.values())
_STATES = """
SELECT j.job_id, j.proc_name, j.hypertable_name, j.config, s.last_run_status, s.last_successful_finish,
       s.last_run_started_at, s.total_failures,
       (SELECT e.err_message FROM timescaledb_information.job_errors e WHERE e.job_id = j.job_id
        ORDER BY e.start_time DESC LIMIT 1) AS error
FROM timescaledb_information.jobs j JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
WHERE j.hypertable_name = ANY(:relations) ORDER BY j.job_id
"""


@dataclass(frozen=True)
class PolicyState:
    """One policy job of ``readings`` or an aggregate, as TimescaleDB last ran it."""

    job_id: int
    proc: str
    relation: str
    config: dict[str, Any]
    last_status: str | None
    last_success: datetime | None
    last_started: datetime | None
    failures: int
    error: str | None

    @property
    def failing(self) -> bool:
        """The last run failed."""
        return self.last_status == "Failed"


def policy_states(conn: Connection) -> list[PolicyState]:
    """The policies of ``readings`` and the aggregates with their last run."""
    return [PolicyState(r.job_id, r.proc_name, r.hypertable_name, dict(r.config or {}), r.last_run_status,
                        r.last_successful_finish, r.last_run_started_at, int(r.total_failures or 0), r.error)
            for r in conn.execute(text(_STATES), {"relations": list(_RELATIONS)})]


def do_policy_work(conn: Connection, state: PolicyState) -> None:
    """Do what the failing policy should have done (``conn`` in autocommit)."""
    config = state.config
    if state.proc == "policy_refresh_continuous_aggregate":
        start = config.get("start_offset")
        conn.execute(text(
            f"CALL refresh_continuous_aggregate('{state.relation}', "
            f"{'now() - CAST(:start AS interval)' if start else 'NULL'}, NULL)"), {"start": start})
    elif state.proc == "policy_compression":
        conn.execute(text(
            "SELECT count(compress_chunk(c, if_not_compressed => true)) "
            "FROM show_chunks(CAST(:rel AS regclass), older_than => CAST(:after AS interval)) c"),
            {"rel": state.relation, "after": config.get("compress_after", "30 days")})
    elif state.proc == "policy_retention" and config.get("drop_after"):
        conn.execute(text("SELECT drop_chunks(CAST(:rel AS regclass), older_than => CAST(:after AS interval))"),
                     {"rel": state.relation, "after": config["drop_after"]})


def _record(conn: Connection, state: PolicyState, event: str) -> None:
    """A health event of ``state``'s job in every group (each group's reports depend on it)."""
    detail = {"job_id": state.job_id, "policy": state.proc, "relation": state.relation, "error": state.error,
              "last_success": state.last_success.isoformat() if state.last_success else None}
    conn.execute(text(
        "INSERT INTO health_events (group_id, object_type, object_id, event, detail) "
        "SELECT id, :t, :job, :event, CAST(:detail AS jsonb) FROM groups"),
        {"t": OBJECT_TYPE, "job": state.job_id, "event": event, "detail": json.dumps(detail)})


def watch_policies(engine: Engine, now: datetime) -> list[PolicyState]:
    """One watch round: health events on a policy's failure and recovery, its work done while it fails.

    Returns the failing policies. Runs as the service role, which owns ``readings`` and the aggregates."""
    with engine.begin() as conn:
        states = policy_states(conn)
        known = set(conn.execute(text("SELECT key FROM timeseries_state WHERE key LIKE 'policy_failing:%'"))
                    .scalars())
        for state in states:
            key = _STATE_KEY.format(job_id=state.job_id)
            if state.failing and key not in known:
                log.error("TimescaleDB policy %s of %s failed: %s; the scheduler does its work until it succeeds",
                          state.proc, state.relation, state.error)
                _record(conn, state, FAILED)
                conn.execute(text("INSERT INTO timeseries_state (key, at) VALUES (:k, :at)"), {"k": key, "at": now})
            elif not state.failing and key in known and state.last_status is not None:
                log.info("TimescaleDB policy %s of %s succeeds again", state.proc, state.relation)
                _record(conn, state, RECOVERED)
                conn.execute(text("DELETE FROM timeseries_state WHERE key = :k"), {"k": key})
    failing = [s for s in states if s.failing]
    if failing:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for state in sorted(failing, key=lambda s: list(CAGGS.values()).index(s.relation)
                                if s.relation in CAGGS.values() else -1):
                try:
                    do_policy_work(conn, state)
                except Exception:
                    log.exception("could not do the work of failing policy %s of %s", state.proc, state.relation)
    return failing


_LATEST = """
SELECT DISTINCT ON (object_id) object_id, event, detail, at FROM health_events
WHERE object_type = :t ORDER BY object_id, id DESC
"""


def failing_policies(session: Session) -> list[dict[str, Any]]:
    """The policies failing for the session's group (its latest event of the job is ``policy_failed``), read under
    row-level security: each ``{"job_id", "policy", "relation", "error", "since"}``."""
    return [{"job_id": r.object_id, "policy": r.detail.get("policy"), "relation": r.detail.get("relation"),
             "error": r.detail.get("error"), "since": r.at}
            for r in session.execute(text(_LATEST), {"t": OBJECT_TYPE}) if r.event == FAILED]
