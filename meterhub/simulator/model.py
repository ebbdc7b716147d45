"""Physical behaviour of simulated meters: clock, TOU periods, load profile, relay, prepaid, valve.

Everything is deterministic for a given seed and clock. ``SimClock.acceleration`` makes simulated time
run faster than wall time (3600 = one simulated hour per second); ``SimClock.advance(s)`` jumps ahead.
"""

from __future__ import annotations

from collections.abc import Iterator

import functools
import math
import random
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
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


#: A meter started with ``installed`` counters has run on its noise-free load profile since this device time.
PROFILE_EPOCH = datetime(2024, 1, 1)


def electric_shape(when: datetime) -> float:
    """Demand as a share of a channel's ``base_kw`` before the day's factor and noise (base load + day curve)."""
    return 0.3 + 0.7 * day_curve(when)


def water_shape(when: datetime) -> float:
    """Flow as a share of a channel's ``base_m3h`` before the day's factor and noise."""
    return 0.1 + 0.9 * day_curve(when)


def day_factor(day: date, key: float) -> float:
    """How much a channel (``key``: its base load) uses on ``day`` relative to its base: more in summer (air
    conditioning), more at weekends, and a deterministic jitter of its own of ±10 %."""
    season = 1 + 0.3 * math.cos(2 * math.pi * (day.timetuple().tm_yday - 205) / 365.25)
    weekend = 1.12 if day.weekday() >= 5 else 1.0
    jitter = math.sin(key * 12.9898 + day.toordinal() * 78.233) * 43758.5453
    return season * weekend * (0.9 + 0.2 * (jitter - math.floor(jitter)))


@functools.cache
def _day_table(shape: str, tou: tuple[tuple[int, int, int], ...]) -> tuple[tuple[float, ...], ...]:
    """Per rate (index 0 all, 1..4 the TOU rates): the integral of the shape (hours) from midnight to each
    minute of a day, 1441 points."""
    curve = electric_shape if shape == "electric" else water_shape
    table = [[0.0] * 1441 for _ in range(5)]
    for minute in range(1440):
        mid = datetime(2024, 1, 1, minute // 60, minute % 60, 30)
        share, rate = curve(mid) / 60, tou_rate(mid, tou) if shape == "electric" else 0
        for r in range(5):
            table[r][minute + 1] = table[r][minute] + (share if r in (0, rate) else 0.0)
    return tuple(tuple(row) for row in table)


_FACTOR_SUMS: dict[float, list[float]] = {}


def _factor_sum(key: float, days: int) -> float:
    """The sum of :func:`day_factor` over the first ``days`` days from :data:`PROFILE_EPOCH` (cached prefix)."""
    sums = _FACTOR_SUMS.setdefault(key, [0.0])
    epoch = PROFILE_EPOCH.date().toordinal()
    while len(sums) <= days:
        sums.append(sums[-1] + day_factor(date.fromordinal(epoch + len(sums) - 1), key))
    return sums[days]


def _profile_hours(shape: str, key: float, when: datetime, rate: int, tou: tuple[tuple[int, int, int], ...]
                   ) -> float:
    """Hours at full base from :data:`PROFILE_EPOCH` (a midnight) to ``when`` at ``rate`` (0: all), in closed
    form: the day's integral times the sum of the past days' factors, plus the part of today."""
    if when <= PROFILE_EPOCH:
        return 0.0
    table = _day_table(shape, tou)[rate]
    minute, fraction = divmod(when.hour * 60 + when.minute + when.second / 60 + when.microsecond / 6e7, 1)
    today = table[int(minute)] + (table[int(minute) + 1] - table[int(minute)]) * fraction
    days = (when.date() - PROFILE_EPOCH.date()).days
    return _factor_sum(key, days) * table[1440] + today * day_factor(when.date(), key)


def profile_energy(base_kw: float, when: datetime, tou: tuple[tuple[int, int, int], ...] = DEFAULT_TOU
                   ) -> dict[int, Decimal]:
    """kWh per TOU rate a channel of ``base_kw`` has counted from :data:`PROFILE_EPOCH` to ``when`` on its
    noise-free profile (:func:`electric_shape` times :func:`day_factor`)."""
    return {rate: Decimal(repr(round(base_kw * _profile_hours("electric", base_kw, when, rate, tou), 6)))
            for rate in RATE_NAMES}


def profile_volume(base_m3h: float, when: datetime) -> Decimal:
    """m³ a water channel of ``base_m3h`` has counted from :data:`PROFILE_EPOCH` to ``when`` (noise-free)."""
    return Decimal(repr(round(base_m3h * _profile_hours("water", base_m3h, when, 0, DEFAULT_TOU), 6)))


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
    installed: bool = False  # runs on its day factors (see install)
    #: Every top-up write the meter accepted, as (purchase count, amount), in the order it took them.
    accepted_topups: list[tuple[int, Decimal]] = field(default_factory=list)
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
        factor = day_factor(when.date(), self.base_kw) if self.installed else 1.0
        return self.base_kw * electric_shape(when) * factor * (1 + self.rng.uniform(-self.noise, self.noise))

    def install(self, now: datetime) -> None:
        """Counters of a meter that has run on its profile since :data:`PROFILE_EPOCH` (as a meter in a
        building does), instead of a new meter's zeros."""
        self.energy = profile_energy(self.base_kw, now)
        self._last, self.installed = now, True

    def profile(self) -> dict[str, float]:
        return {"base_kw": self.base_kw}

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
        self.accepted_topups.append((purchase_count, amount))
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
    installed: bool = False  # runs on its day factors (see install)
    _last: datetime | None = None

    def rate(self, when: datetime) -> float:
        if not self.valve_open:
            return 0.0
        factor = day_factor(when.date(), self.base_m3h) if self.installed else 1.0
        return self.base_m3h * water_shape(when) * factor * (1 + self.rng.uniform(-0.1, 0.1))

    def install(self, now: datetime) -> None:
        """Volume of a meter that has run on its profile since :data:`PROFILE_EPOCH`."""
        self.volume_m3 = profile_volume(self.base_m3h, now)
        self._last, self.installed = now, True

    def profile(self) -> dict[str, float]:
        return {"base_m3h": self.base_m3h}

    def advance(self, now: datetime) -> None:
        """Integrate the flow from the last call up to ``now``."""
        for t, dt in integration_steps(self._last, now):
            self.volume_m3 += Decimal(repr(self.rate(t) * dt / 3600)).quantize(Decimal("0.000001"))
        self._last = max(now, self._last or now)
        self.flow_m3h = self.rate(now)
