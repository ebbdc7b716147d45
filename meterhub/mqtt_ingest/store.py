"""Store a batch of parsed MQTT messages in one transaction, deduplicated on (gateway, sequence)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from meterhub.timeseries.freshness import database_now, refresh_after_ingest
from meterhub.timeseries.ingest import IngestResult, Reading, run_transaction, store_batch

from .payload import InvalidPayload, Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayInfo:
    """A push gateway known by its MQTT client id, with its meters by (device address, channel)."""

    gateway_id: int
    group_id: int
    meters: dict[tuple[str, int], int]


class GatewayDirectory:
    """Gateways and meters by MQTT client id, cached for ``ttl`` seconds (new devices appear after that)."""

    def __init__(self, engine: Engine, ttl: float = 60.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self._cache: dict[str, tuple[float, GatewayInfo | None]] = {}

    def _load(self, client_id: str) -> GatewayInfo | None:
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT g.id, g.group_id, d.address, m.channel, m.id FROM gateways g "
                "LEFT JOIN devices d ON d.gateway_id = g.id LEFT JOIN meters m ON m.device_id = d.id AND m.active "
                "WHERE g.mqtt_client_id = :c AND g.enabled ORDER BY g.id"
            ), {"c": client_id}).all()
        if not rows:
            return None
        gateway_id, group_id = rows[0][0], rows[0][1]
        meters = {(r[2], r[3]): r[4] for r in rows if r[0] == gateway_id and r[4] is not None}
        return GatewayInfo(gateway_id, group_id, meters)

    def get(self, client_id: str) -> GatewayInfo | None:
        """The gateway of ``client_id`` (``None`` if unknown or disabled)."""
        now = time.monotonic()
        hit = self._cache.get(client_id)
        if hit is None or now - hit[0] > self.ttl:
            hit = (now, self._load(client_id))
            self._cache[client_id] = hit
        return hit[1]

    def forget(self, client_id: str) -> None:
        """Drop a cached entry (e.g. after a miss on a device address)."""
        self._cache.pop(client_id, None)


@dataclass
class BatchOutcome:
    """What a batch of messages did."""

    messages: int = 0
    stored_messages: int = 0
    duplicate_messages: int = 0
    unknown_meters: int = 0
    readings: IngestResult = field(default_factory=IngestResult)
    rejected: list[tuple[Message, InvalidPayload]] = field(default_factory=list)


def _readings(message: Message, gateway: GatewayInfo) -> tuple[list[Reading], int]:
    out, unknown = [], 0
    for item in message.items:
        meter_id = gateway.meters.get((item.address, item.channel))
        if meter_id is None:
            unknown += 1
            continue
        out.append(Reading(gateway.group_id, meter_id, item.ts, item.values, item.quality, "mqtt"))
    return out, unknown


_SEQUENCES = (
    "INSERT INTO mqtt_sequences (group_id, gateway_id, seq) "
    "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) ON CONFLICT DO NOTHING "
    "RETURNING gateway_id, seq"
)
_SEEN = (
    "UPDATE gateways g SET last_seen_at = now() FROM unnest(%s::bigint[]) AS s(id) "
    "WHERE g.id = s.id AND (g.last_seen_at IS NULL OR g.last_seen_at < now())"
)


def store_messages(engine: Engine, directory: GatewayDirectory, messages: list[Message]) -> BatchOutcome:
    """Store ``messages`` in one transaction (retried on a lost connection); returns after the commit."""
    outcome = BatchOutcome(messages=len(messages))
    unique: dict[tuple[int, int], tuple[Message, GatewayInfo]] = {}
    for message in messages:
        gateway = directory.get(message.client_id)
        if gateway is None:
            outcome.rejected.append((message, InvalidPayload(
                "unknown_gateway", f"no enabled gateway has MQTT client id {message.client_id!r}")))
            continue
        unique.setdefault((gateway.gateway_id, message.seq), (message, gateway))
    if not unique:
        return outcome
    since = database_now(engine)
    times: list[datetime] = []  # the oldest and newest reading stored

    def work(cursor: Any) -> IngestResult:
        keys = list(unique)
        cursor.execute(_SEQUENCES, ([unique[k][1].group_id for k in keys], [k[0] for k in keys],
                                    [k[1] for k in keys]))
        new = {(row[0], row[1]) for row in cursor.fetchall()}
        readings: list[Reading] = []
        unknown = 0
        for key in keys:
            if key in new:
                rows, missing = _readings(*unique[key])
                readings.extend(rows)
                unknown += missing
        result = store_batch(cursor, readings)
        times[:] = [min((r.ts for r in readings), default=since), max((r.ts for r in readings), default=since)]
        cursor.execute(_SEEN, (sorted({k[0] for k in keys}),))
        outcome.stored_messages = len(new)
        outcome.unknown_meters = unknown
        return result

    outcome.readings = run_transaction(engine, work)
    if outcome.readings.stored:  # usage fresh before the worker sends reading_stored
        refresh_after_ingest(engine, since, {m for ms in outcome.readings.meter_ids_by_group.values() for m in ms},
                             *(times or (None, None)))
    outcome.duplicate_messages = len(messages) - len(outcome.rejected) - outcome.stored_messages
    if outcome.unknown_meters:
        log.warning("%d MQTT readings name a device address/channel with no meter", outcome.unknown_meters)
        for message, _ in unique.values():
            directory.forget(message.client_id)
    return outcome
