"""The MQTT readings payload (see ``docs/mqtt_payload.md``): parse and validate, never trust."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from meterhub.errors import MeterhubError

TOPIC_PREFIX = "meterhub"
TOPIC_SUFFIX = "readings"
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_ITEMS = 2_000
MAX_SEQ = 2**63 - 1


class InvalidPayload(MeterhubError):
    """A message that cannot be stored; ``reason`` is a short counter key (e.g. ``bad_json``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Item:
    """One channel's values from a message."""

    address: str
    channel: int
    ts: datetime
    values: dict[str, Any]
    quality: int


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed, valid readings message of one gateway."""

    client_id: str
    seq: int
    items: tuple[Item, ...]


def client_id_from_topic(topic: str) -> str:
    """``meterhub/<client id>/readings`` → client id."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != TOPIC_PREFIX or parts[2] != TOPIC_SUFFIX or not parts[1]:
        raise InvalidPayload("bad_topic", f"topic {topic!r} is not {TOPIC_PREFIX}/<client id>/{TOPIC_SUFFIX}")
    return parts[1]


def _timestamp(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidPayload("bad_ts", f"{where}: ts must be an ISO 8601 string with a UTC offset")
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as err:
        raise InvalidPayload("bad_ts", f"{where}: {value!r} is not an ISO 8601 time") from err
    if ts.tzinfo is None:
        raise InvalidPayload("bad_ts", f"{where}: {value!r} has no UTC offset")
    return ts


def _value(value: Any) -> Any:
    """Numbers arrive as JSON numbers (parsed exactly) or strings; states as booleans; others pass to extra."""
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            return value
    return value


def _item(raw: Any, default_ts: datetime | None, index: int) -> Item:
    where = f"readings[{index}]"
    if not isinstance(raw, dict):
        raise InvalidPayload("bad_item", f"{where} must be an object")
    address = raw.get("address")
    if isinstance(address, int) and not isinstance(address, bool):
        address = str(address)
    if not isinstance(address, str) or not address or len(address) > 32:
        raise InvalidPayload("bad_item", f"{where}.address must be a non-empty string")
    channel = raw.get("channel", 1)
    if not isinstance(channel, int) or isinstance(channel, bool) or not 0 <= channel < 1000:
        raise InvalidPayload("bad_item", f"{where}.channel must be an integer 0..999")
    ts = _timestamp(raw["ts"], where) if "ts" in raw else default_ts
    if ts is None:
        raise InvalidPayload("bad_ts", f"{where} has no ts and the message has none")
    values = raw.get("values")
    if not isinstance(values, dict) or not values:
        raise InvalidPayload("bad_item", f"{where}.values must be a non-empty object")
    quality = raw.get("quality", 0)
    if quality not in (0, 1, 2) or isinstance(quality, bool):
        raise InvalidPayload("bad_item", f"{where}.quality must be 0, 1 or 2")
    return Item(address, channel, ts, {str(k): _value(v) for k, v in values.items()}, quality)


def parse(topic: str, payload: bytes) -> Message:
    """Parse one message; raises :class:`InvalidPayload` with a reason for anything unusable."""
    client_id = client_id_from_topic(topic)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidPayload("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        doc = json.loads(payload, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: "[" x 100000
        raise InvalidPayload("bad_json", str(err)[:200]) from err
    if not isinstance(doc, dict):
        raise InvalidPayload("bad_json", "the payload must be a JSON object")
    seq = doc.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise InvalidPayload("bad_seq", "seq must be a non-negative integer")
    default_ts = _timestamp(doc["ts"], "message") if "ts" in doc else None
    items = doc.get("readings")
    if not isinstance(items, list) or not items or len(items) > MAX_ITEMS:
        raise InvalidPayload("bad_readings", f"readings must be a list of 1..{MAX_ITEMS} items")
    return Message(client_id, seq, tuple(_item(raw, default_ts, i) for i, raw in enumerate(items)))
