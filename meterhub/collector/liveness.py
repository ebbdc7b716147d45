"""Collector liveness from the process, not the data: per-bus heartbeats and the "collector down" check.

Every few seconds a collector publishes, for each bus whose poller task is alive and making progress, the
time in the Redis hash ``<ns>:collector:alive`` (field = gateway id, value = ``"<epoch>|<owner>"``).
The periodic job :func:`check_job` (every ``CHECK_INTERVAL_S``) copies those times to ``gateways.collector_seen_at`` and sets
``gateways.collector_state``: ``polling`` while a heartbeat is younger than ``STALE_S``, ``down`` after.
A gateway nobody ever polled stays NULL. Transitions go to ``health_events`` (``collector_down`` /
``collector_up``), from which the alarm engine raises and clears a ``collector_down`` alarm. This is apart
from ``gateways.status`` (does the gateway answer?), so a dead collector reads "collector down" within
``STALE_S`` + one check interval (about 30 s), never as "gateway offline" a few intervals later.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from meterhub.timeseries.health import HealthTransition

STALE_S = 20.0
CHECK_INTERVAL_S = 10
KEY_TTL_S = 300
LOCK_WAIT = "5s"  # a gateway row locked longer (by a frozen collector's open transaction) waits for the next check


def alive_key(ns: str) -> str:
    return f"{ns}:collector:alive"


async def publish(client: Any, ns: str, gateway_ids: list[int], owner: str) -> None:
    """Heartbeat these buses now (an asyncio Redis client)."""
    if not gateway_ids:
        return
    stamp = f"{time.time():.3f}|{owner}"
    pipe = client.pipeline()
    pipe.hset(alive_key(ns), mapping={str(gid): stamp for gid in gateway_ids})
    pipe.expire(alive_key(ns), KEY_TTL_S)
    await pipe.execute()


def heartbeats(client: Any, ns: str) -> dict[int, tuple[datetime, str]]:
    """gateway id -> (last heartbeat, owner) from Redis (a synchronous client)."""
    out: dict[int, tuple[datetime, str]] = {}
    for field, value in (client.hgetall(alive_key(ns)) or {}).items():
        stamp, _, owner = value.decode().partition("|")
        out[int(field)] = (datetime.fromtimestamp(float(stamp), UTC), owner)
    return out


_CHECK_SQL = """
WITH beat AS (
  SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:ats AS timestamptz[])) AS b(id, at)
), state AS (
  SELECT g.id, g.collector_state AS old, GREATEST(g.collector_seen_at, b.at) AS seen
  FROM gateways g LEFT JOIN beat b ON b.id = g.id
  WHERE g.enabled AND g.framing = ANY(CAST(:framings AS text[]))
), decided AS (
  SELECT id, old, seen, CASE WHEN seen IS NULL THEN NULL
                        WHEN seen >= CAST(:now AS timestamptz) - make_interval(secs => :stale) THEN 'polling'
                        ELSE 'down' END AS state
  FROM state
), seen AS (
  UPDATE gateways g SET collector_seen_at = d.seen
  FROM decided d WHERE g.id = d.id AND d.state IS NOT DISTINCT FROM g.collector_state
    AND d.seen IS DISTINCT FROM g.collector_seen_at
), changed AS (
  UPDATE gateways g SET collector_state = d.state, collector_seen_at = d.seen
  FROM decided d WHERE g.id = d.id AND d.state IS NOT NULL AND d.state IS DISTINCT FROM g.collector_state
  RETURNING g.group_id, g.id, g.collector_state, g.collector_seen_at, d.old
), ev AS (
  INSERT INTO health_events (group_id, at, object_type, object_id, event, detail)
  SELECT group_id, :now, 'gateway', id,
         CASE collector_state WHEN 'down' THEN 'collector_down' ELSE 'collector_up' END,
         jsonb_build_object('collector_seen_at', collector_seen_at)
  FROM changed WHERE old IS NOT NULL OR collector_state = 'down'
  RETURNING group_id, object_id, event
)
SELECT group_id, object_id, event FROM ev ORDER BY object_id
"""


def check(session: Session, beats: dict[int, tuple[datetime, str]], now: datetime,
          stale_s: float = STALE_S) -> list[HealthTransition]:
    """Mark polled gateways ``polling`` / ``down`` from their heartbeats; record and return the transitions."""
    from meterhub.devices.onboarding import TRANSPORT_FRAMING

    params = {"ids": list(beats), "ats": [at for at, _ in beats.values()], "now": now, "stale": stale_s,
              "framings": list(TRANSPORT_FRAMING)}
    return [HealthTransition(group_id, "gateway", object_id, event, now)
            for group_id, object_id, event in session.execute(text(_CHECK_SQL), params)]


def check_job() -> int:
    """Periodic job: the collector liveness check (service role), then the plugins are told."""
    import logging

    from meterhub.db import service_session
    from meterhub.collector.jobs import namespace
    from meterhub.redis_conn import get_redis
    from meterhub.timeseries.health import notify_health

    from sqlalchemy.exc import OperationalError

    log = logging.getLogger(__name__)
    beats = heartbeats(get_redis(), namespace())
    try:
        with service_session() as session:
            # A collector frozen inside its store transaction holds its gateways' rows until PostgreSQL ends
            # that transaction (``collector.store``: idle-in-transaction timeout): this check must not hang on
            # them and hold up the periodic queue meanwhile (it waited 58 s in the chaos suite).
            session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
            transitions = check(session, beats, datetime.now(UTC))
    except OperationalError as err:
        if getattr(err.orig, "pgcode", None) != "55P03":  # lock_not_available
            raise
        log.warning("collector liveness: gateway rows are locked (a stuck collector's transaction?); "
                    "checked again in %s s", CHECK_INTERVAL_S)
        return 0
    for t in transitions:
        (log.warning if t.event == "collector_down" else log.info)(
            "gateway %s of group %s: %s", t.object_id, t.group_id, t.event.replace("_", " "))
    notify_health(transitions)
    return len(transitions)
