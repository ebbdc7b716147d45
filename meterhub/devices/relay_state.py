"""``meters.relay_closed`` follows the meter: the latest reading's relay (valve, for water) state wins.

A confirmed relay command sets it at once; a reading taken after that command (or with no command since)
sets it to what the device reports, so the database never keeps saying "closed" while the meter's readings
show it open (a command lost with its worker, a relay switched by hand, a meter that tripped by itself).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session

FOLLOW_SQL = """
WITH seen AS (
  SELECT m.id, l.ts, CASE WHEN m.utility = 'water' THEN COALESCE(l.valve_open, l.relay_closed)
                          ELSE l.relay_closed END AS closed
  FROM meters m JOIN meter_latest l ON l.meter_id = m.id
  WHERE m.id = ANY(CAST(:ids AS bigint[])) AND m.group_id = :g
)
UPDATE meters m SET relay_closed = seen.closed FROM seen
WHERE m.id = seen.id AND seen.closed IS NOT NULL AND m.relay_closed IS DISTINCT FROM seen.closed
  AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.meter_id = m.id AND c.state = 'confirmed'
                  AND c.kind IN ('switch', 'valve', 'keep_power', 'resume_prepaid') AND c.done_at > seen.ts)
RETURNING m.id
"""


def follow_readings(session: Session, group_id: int, meter_ids: Iterable[int]) -> list[int]:
    """Set ``relay_closed`` of these meters from their latest readings; returns the meters that changed."""
    ids = "{" + ",".join(str(int(i)) for i in meter_ids) + "}"
    if ids == "{}":
        return []
    return list(session.execute(text(FOLLOW_SQL), {"ids": ids, "g": group_id}).scalars())
