"""Collector liveness: heartbeats per bus make a gateway "polling"; their absence "collector down" (an event,
apart from the gateway's own status); a heartbeat again makes it "polling" with a collector_up event."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from sqlalchemy import text

from meterhub.collector import liveness
from meterhub.db import service_session
from meterhub.redis_conn import get_redis
from tests.alarms.helpers import make_site


def _state(session, gateway_id):
    return session.execute(text("SELECT collector_state, status FROM gateways WHERE id = :g"),
                           {"g": gateway_id}).one()


def _events(session, gateway_id):
    return session.execute(text("SELECT event FROM health_events WHERE object_type = 'gateway' AND object_id = :g "
                                "AND event LIKE 'collector%' ORDER BY id"), {"g": gateway_id}).scalars().all()


def test_missing_heartbeats_mark_collector_down_and_new_ones_polling(app, group):
    site = make_site(app, group, account=False)
    gw = site.gateway_id
    now = datetime.now(UTC)
    with app.app_context(), service_session() as s:
        assert liveness.check(s, {gw: (now, "collector:test")}, now) == []  # first poll: no event
        assert _state(s, gw) == ("polling", "unknown")
        assert liveness.check(s, {}, now + timedelta(seconds=liveness.STALE_S - 1)) == []
        went = liveness.check(s, {}, now + timedelta(seconds=liveness.STALE_S + 1))
        assert [(t.object_id, t.event) for t in went if t.object_id == gw] == [(gw, "collector_down")]
        assert _state(s, gw) == ("down", "unknown")  # the gateway's own status is not touched
        later = now + timedelta(seconds=60)
        back = liveness.check(s, {gw: (later, "collector:test")}, later)
        assert [(t.object_id, t.event) for t in back if t.object_id == gw] == [(gw, "collector_up")]
        assert _events(s, gw) == ["collector_down", "collector_up"]


def test_published_heartbeats_are_read_back_per_bus(app):
    with app.app_context():
        client, ns = get_redis(), "liveness-test"
        client.delete(liveness.alive_key(ns))

        async def publish() -> None:
            async_client = aioredis.from_url(app.config["REDIS_URL"])
            await liveness.publish(async_client, ns, [7, 8], "collector:h:1:0/1")
            await async_client.aclose()

        asyncio.run(publish())
        beats = liveness.heartbeats(client, ns)
        assert set(beats) == {7, 8} and beats[7][1] == "collector:h:1:0/1"
        assert abs((datetime.now(UTC) - beats[8][0]).total_seconds()) < 5
        client.delete(liveness.alive_key(ns))
