"""Physical behaviour of simulated meters: clock, TOU periods, load profile, relay, prepaid, valve.

Everything is deterministic for a given seed and clock. ``SimClock.acceleration`` makes simulated time
run faster than wall time (3600 = one simulated hour per second); ``SimClock.advance(s)`` jumps ahead.
"""

from __future__ import annotations

from collections.abc import Iterator

import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

SHARP, PEAK, FLAT, VALLEY = 1, 2, 3, 4
RATE_NAMES = {SHARP: "sharp", PEAK: "peak", FLAT: "flat", VALLEY: "valley"}
#: Default daily tariff table: (start hh:mm, rate), up to 14 periods as on Acrel meters.
DEFAULT_TOU = ((0, 0, VALLEY), (8, 0, FLAT), (10, 0, PEAK), (11, 0, SHARP), (12, 0, PEAK), (15, 0, FLAT),
               (18, 0, PEAK), (19, 0, SHARP), (21, 0, PEAK), (22, 0, FLAT), (23, 0, VALLEY))
MAX_STEPS = 2000
STEP_SECONDS = 60.0


class SimClock:
    """Device-local wall clock (naive), optionally accelerated, with manual jumps."""

    def __init__(self, start: datetime | None = None, acceleration: float = 1.0) -> None:
        self.start = (start or datetime.now()).replace(tzinfo=None, microsecond=0)
        self.acceleration = acceleration
        self._t0 = time.monotonic()
        self._offset = 0.0

    def elapsed(self) -> float:
        """Simulated seconds since ``start``."""
        return (time.monotonic() - self._t0) * self.acceleration + self._offset

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed())

    def advance(self, seconds: float) -> None:
        """Jump the simulated clock ahead."""
        self._offset += seconds


def tou_rate(when: datetime, table: tuple[tuple[int, int, int], ...] = DEFAULT_TOU) -> int:
    """The TOU rate (1 sharp … 4 valley) in force at ``when`` by the device clock."""
    minute = when.hour * 60 + when.minute
    rate = table[-1][2]
    for hh, mm, r in table:
        if hh * 60 + mm <= minute:
            rate = r
    return rate


def day_curve(when: datetime) -> float:
    """0..1 load shape: a morning and an evening peak."""
    h = when.hour + when.minute / 60
    return max(math.exp(-((h - 10.5) ** 2) / 8), math.exp(-((h - 19.5) ** 2) / 4.5))


def integration_steps(last: datetime | None, now: datetime) -> Iterator[tuple[datetime, float]]:
    """(time, seconds) steps from ``last`` to ``now`` (none on the first call or when time did not move)."""
    if last is None or now <= last:
        return
    total = (now - last).total_seconds()
    steps = min(MAX_STEPS, max(1, math.ceil(total / STEP_SECONDS)))
    dt = total / steps
    for i in range(1, steps + 1):
        yield last + timedelta(seconds=dt * i), dt


@dataclass
class ElectricChannel:
    """One metering channel: energy by TOU rate, relay, meter-side prepaid money."""

    rng: random.Random
    base_kw: float = 3.0
    phases: int = 3
    prepaid: bool = False
    prices: list[Decimal] = field(default_factory=lambda: [Decimal("1.20"), Decimal("1.00"),
                                                           Decimal("0.70"), Decimal("0.40")])
    remaining_money: Decimal = Decimal("100.00")
    purchase_count: int = 0
    alarm1: Decimal = Decimal("20.00")
    alarm2: Decimal = Decimal("10.00")
    overdraft: Decimal = Decimal("0.00")
    pmax_kw: Decimal = Decimal("0")
    forced: bool | None = None  # None automatic, True forced closed (keep-power), False forced trip
    energy: dict[int, Decimal] = field(default_factory=lambda: {r: Decimal("0") for r in RATE_NAMES})
    export_kwh: Decimal = Decimal("0")
    power_kw: float = 0.0
    noise: float = 0.05
    _last: datetime | None = None

    @property
    def relay_closed(self) -> bool:
        if self.forced is not None:
            return self.forced
        return not self.prepaid or self.remaining_money > -self.overdraft

    @property
    def total_kwh(self) -> Decimal:
        return sum(self.energy.values(), Decimal("0"))

    def demand_kw(self, when: datetime) -> float:
        if not self.relay_closed:
            return 0.0
        return self.base_kw * (0.3 + 0.7 * day_curve(when)) * (1 + self.rng.uniform(-self.noise, self.noise))

    def advance(self, now: datetime) -> None:
        """Integrate consumption from the last call up to ``now``."""
        for t, dt in integration_steps(self._last, now):
            kw = self.demand_kw(t)
            kwh = Decimal(repr(kw * dt / 3600)).quantize(Decimal("0.000001"))
            rate = tou_rate(t)
            self.energy[rate] += kwh
            if self.prepaid and kwh:
                self.remaining_money -= kwh * self.prices[rate - 1]
        self._last = max(now, self._last or now)
        self.power_kw = self.demand_kw(now)

    def money(self) -> Decimal:
        return self.remaining_money.quantize(Decimal("0.01"), ROUND_HALF_EVEN)

    def topup(self, amount: Decimal, purchase_count: int) -> bool:
        """Apply a top-up if ``purchase_count`` is the next one; False when the counter is wrong."""
        if purchase_count != self.purchase_count + 1 or amount <= 0:
            return False
        self.purchase_count = purchase_count
        self.remaining_money += amount
        return True


@dataclass
class WaterChannel:
    """Cumulative water volume with a valve."""

    rng: random.Random
    base_m3h: float = 0.15
    valve_open: bool = True
    volume_m3: Decimal = Decimal("0")
    settlement_m3: Decimal = Decimal("0")
    flow_m3h: float = 0.0
    _last: datetime | None = None

    def rate(self, when: datetime) -> float:
        if not self.valve_open:
            return 0.0
        return self.base_m3h * (0.1 + 0.9 * day_curve(when)) * (1 + self.rng.uniform(-0.1, 0.1))

    def advance(self, now: datetime) -> None:
        """Integrate the flow from the last call up to ``now``."""
        for t, dt in integration_steps(self._last, now):
            self.volume_m3 += Decimal(repr(self.rate(t) * dt / 3600)).quantize(Decimal("0.000001"))
        self._last = max(now, self._last or now)
        self.flow_m3h = self.rate(now)
