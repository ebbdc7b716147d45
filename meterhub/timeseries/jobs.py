"""Periodic time-series jobs (registered by the core plugin, run by rq workers as the service role)."""

from __future__ import annotations

from datetime import datetime, timezone

from ..db import service_engine, service_session
from . import freshness, health, policies, rollups


def refresh_rollups_job() -> int:
    """Keep usage up to date: the rollups on plain PostgreSQL; on TimescaleDB, watch its policies and do the
    work of a failing one (:mod:`policies`). Returns meters refreshed, or failing policies."""
    engine = service_engine()
    now = datetime.now(timezone.utc)
    if freshness.uses_timescale(engine):
        return len(policies.watch_policies(engine, now))
    with service_session() as session:
        return rollups.run_rollups(session, now)


def detect_offline_job() -> int:
    """Mark meters/devices/gateways offline or back online, then tell the plugins."""
    with service_session() as session:
        transitions = health.detect_offline(session, datetime.now(timezone.utc))
    health.notify_health(transitions)
    return len(transitions)
