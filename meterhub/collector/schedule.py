"""Polling intervals, staggered bus starts and sharding of gateways across collector processes.

    Shard.parse("1/4").owns(gateway_id)          # gateway_id % 4 == 1
    interval_seconds(property.reading_interval_min)   # clamped to 1 min .. 1 day
    stagger(index, count, interval_s, window_s)   # first-cycle offset of bus ``index`` of ``count``
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_INTERVAL_MIN = 1
MAX_INTERVAL_MIN = 24 * 60
DEFAULT_INTERVAL_MIN = 30
DEFAULT_STAGGER_S = 60.0


@dataclass(frozen=True)
class Shard:
    """This process polls the gateways whose id modulo ``count`` equals ``index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= index < count and count >= 1")

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        """``"i/n"`` (e.g. ``"0/4"``); empty or None means the only shard."""
        if not text:
            return cls()
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError as err:
            raise ValueError(f"shard {text!r} must look like 0/4 (index/count)") from err
        return cls(index, count)

    def owns(self, gateway_id: int) -> bool:
        return gateway_id % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def interval_seconds(reading_interval_min: int | None) -> float:
    """A property's polling interval in seconds, clamped to the supported range."""
    minutes = reading_interval_min or DEFAULT_INTERVAL_MIN
    return 60.0 * min(max(int(minutes), MIN_INTERVAL_MIN), MAX_INTERVAL_MIN)


def stagger(index: int, count: int, interval_s: float, window_s: float = DEFAULT_STAGGER_S) -> float:
    """Offset of the first cycle of bus ``index`` of ``count``: spread evenly over the stagger window.

    Starting every bus at once makes every gateway, the database and the CPU peak together; spreading the
    starts over ``min(window, interval)`` keeps the load flat (thingsboard-gateway#799).
    """
    if count <= 1:
        return 0.0
    return (index % count) * min(window_s, interval_s) / count


def next_due(previous_due: float, interval_s: float, now: float) -> float:
    """When the next cycle is due: one interval later, or now if the bus fell behind (no pile-up)."""
    due = previous_due + interval_s
    return due if due > now else now
