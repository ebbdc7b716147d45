"""Retry, backoff and quarantine rules of the collector (REGISTERS.md §9).

    policy = RetryPolicy(retries=2, backoff_s=0.05)
    policy.should_retry(err, attempt)        # timeouts, CRC/frame errors, Modbus 04/06: yes; 01-03: never
    policy.backoff(attempt)                  # 0.05, 0.1, 0.2 ... seconds (with a little jitter)

    quarantine = Quarantine(base_s=30, max_s=900)
    quarantine.failed(device_id, now) -> float   # seconds the device is now skipped (30, 60, 120 ... 900)
    quarantine.active(device_id, now) -> bool
    quarantine.succeeded(device_id)

    backoff = Backoff(first_s=1, max_s=60)       # gateway reconnects: 1, 2, 4 ... 60 s, jittered
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from meterhub.protocols.errors import DeviceError


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed transaction is tried again, and how long to wait first."""

    retries: int = 2
    backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    jitter: float = 0.2
    retry_writes: bool = False  # commands have their own attempt counting (meterhub.commands)

    def should_retry(self, err: BaseException, attempt: int, write: bool = False) -> bool:
        """True when ``err`` on try number ``attempt`` (0-based) deserves another try."""
        if attempt >= self.retries or (write and not self.retry_writes):
            return False
        return isinstance(err, DeviceError) and bool(err.retryable)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt + 1`` (exponential, jittered)."""
        base = min(self.backoff_s * (2**attempt), self.max_backoff_s)
        return base * (1 + random.uniform(-self.jitter, self.jitter))


@dataclass
class Backoff:
    """Exponential backoff with jitter for reconnecting to a gateway; ``reset()`` after success."""

    first_s: float = 1.0
    max_s: float = 60.0
    jitter: float = 0.2
    failures: int = 0

    def next(self) -> float:
        """Seconds to wait before the next attempt, growing with every call."""
        delay = min(self.first_s * (2**self.failures), self.max_s)
        self.failures += 1
        return delay * (1 + random.uniform(-self.jitter, self.jitter))

    def reset(self) -> None:
        self.failures = 0


@dataclass
class _Entry:
    failures: int = 0
    until: float = 0.0


@dataclass
class Quarantine:
    """Devices skipped after a failed read, for a time that doubles with every consecutive failure."""

    base_s: float = 30.0
    max_s: float = 900.0
    entries: dict[int, _Entry] = field(default_factory=dict)

    def active(self, device_id: int, now: float) -> bool:
        """True while ``device_id`` must be skipped."""
        entry = self.entries.get(device_id)
        return entry is not None and now < entry.until

    def failed(self, device_id: int, now: float) -> float:
        """Record a failed read; returns the seconds the device is skipped from ``now``."""
        entry = self.entries.setdefault(device_id, _Entry())
        entry.failures += 1
        span = min(self.base_s * (2 ** (entry.failures - 1)), self.max_s)
        entry.until = now + span
        return span

    def succeeded(self, device_id: int) -> bool:
        """Forget the device's failures; True if it had been failing (it recovered)."""
        return self.entries.pop(device_id, None) is not None

    def release_all(self) -> None:
        """End every device's skip now (their failure counts stay, so a still dead one backs off again)."""
        for entry in self.entries.values():
            entry.until = 0.0

    def failures(self, device_id: int) -> int:
        entry = self.entries.get(device_id)
        return entry.failures if entry else 0

    def count(self, now: float) -> int:
        """How many devices are skipped right now."""
        return sum(1 for e in self.entries.values() if now < e.until)
