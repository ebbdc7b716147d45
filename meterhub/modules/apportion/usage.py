"""Metered usage of meters over time windows, from their cumulative counters (good readings only).

Usage over a window (start, end] is the sum of the positive steps of the counter between the last good
reading at or before ``start`` (else the first one inside the window: a meter installed mid-period) and
the last good reading at or before ``end``. A counter that goes down (reset, swap) contributes nothing
for that step. Only readings of the meter's installation interval count (``meters.installed_at`` to
``removed_at``: a swapped-in meter's past elsewhere is nobody's usage here). A meter whose newest reading in the window is older than ``OFFLINE_GRACE`` before the end
is reported ``offline``: its usage counts up to that reading, and because counters are cumulative what
it used later is counted in the period where it reports again (never lost, never counted twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

OFFLINE_GRACE = timedelta(days=1)
COUNTER = {"electricity": "energy_kwh", "water": "water_m3"}

USAGE_SQL = """
WITH w AS (
  SELECT u.meter_id, u.ws, u.we,
         greatest(u.ws, coalesce(m.installed_at, '-infinity')) AS cs, coalesce(m.installed_at, '-infinity') AS inst,
         least(u.we, coalesce(m.removed_at, 'infinity')) AS ce
  FROM unnest(CAST(:ids AS bigint[]), CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[]))
         AS u(meter_id, ws, we)
  LEFT JOIN meters m ON m.id = u.meter_id
), b AS (
  SELECT w.meter_id, w.ws, w.ce,
         coalesce((SELECT max(r.ts) FROM tenant_readings r WHERE r.meter_id = w.meter_id AND r.quality = 0
                   AND r.{col} IS NOT NULL AND r.ts <= w.cs AND r.ts >= w.inst), w.cs) AS t0
  FROM w
), steps AS (
  SELECT b.meter_id, b.ws, r.ts, r.{col} - lag(r.{col}) OVER (PARTITION BY b.meter_id, b.ws ORDER BY r.ts) AS d
  FROM b JOIN tenant_readings r ON r.meter_id = b.meter_id AND r.quality = 0 AND r.{col} IS NOT NULL
   AND r.ts >= b.t0 AND r.ts <= b.ce
)
SELECT meter_id, ws, coalesce(sum(greatest(d, 0)), 0) AS usage, max(ts) AS last_ts, count(*) AS readings
FROM steps GROUP BY meter_id, ws
"""


@dataclass(frozen=True)
class MeterUsage:
    """Usage of one meter over one window, and whether it reported until the window's end."""

    meter_id: int
    start: datetime
    end: datetime
    usage: Decimal
    last_ts: datetime | None
    readings: int

    @property
    def no_data(self) -> bool:
        return self.readings == 0

    @property
    def offline(self) -> bool:
        return self.last_ts is None or self.last_ts < self.end - OFFLINE_GRACE


def window_usage(session: Session, windows: Sequence[tuple[int, datetime, datetime]],
                 utility: str = "electricity") -> list[MeterUsage]:
    """Usage for each (meter_id, start, end) window, in the order given (one query)."""
    if not windows:
        return []
    col = COUNTER[utility]
    rows = session.execute(text(USAGE_SQL.format(col=col)), {
        "ids": [w[0] for w in windows], "starts": [w[1] for w in windows], "ends": [w[2] for w in windows]})
    found = {(row.meter_id, row.ws): row for row in rows}
    out = []
    for meter_id, start, end in windows:
        row = found.get((meter_id, start))
        out.append(MeterUsage(meter_id, start, end, Decimal(row.usage) if row else Decimal(0),
                              row.last_ts if row else None, int(row.readings) if row else 0))
    return out


def period_usage(session: Session, meter_ids: Sequence[int], start: datetime, end: datetime,
                 utility: str = "electricity") -> dict[int, MeterUsage]:
    """Usage of each meter over the same window ``(start, end]``."""
    return {u.meter_id: u for u in window_usage(session, [(m, start, end) for m in meter_ids], utility)}
