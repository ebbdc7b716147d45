"""Meter-side prepaid anti-cheat: the meter's purchase counter must equal ours at every read.

A meter swapped in brings its own counter: ``prepaid_meter_state.purchase_count_offset`` (its counter minus ours
when it was installed) is taken off before comparing, so a swap raises no mismatch."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session

MISMATCH_SQL = """
WITH latest AS (
  SELECT DISTINCT ON (r.meter_id) r.meter_id, r.purchase_count
  FROM tenant_readings r WHERE r.meter_id = ANY(:ids) AND r.purchase_count IS NOT NULL AND r.group_id = :g
  ORDER BY r.meter_id, r.ts DESC
), cmp AS (
  SELECT s.meter_id, s.account_id, s.group_id, l.purchase_count - s.purchase_count_offset AS meter_count,
         a.purchase_count AS our_count,
         s.meter_purchase_count AS seen
  FROM latest l JOIN prepaid_meter_state s ON s.meter_id = l.meter_id AND s.active
  JOIN prepaid_accounts a ON a.id = s.account_id
  WHERE NOT EXISTS (SELECT 1 FROM commands c WHERE c.meter_id = s.meter_id AND c.kind = 'write_topup'
                    AND c.state IN ('queued', 'sent'))
), upd AS (
  UPDATE prepaid_meter_state s SET meter_purchase_count = cmp.meter_count FROM cmp
  WHERE s.meter_id = cmp.meter_id AND s.meter_purchase_count IS DISTINCT FROM cmp.meter_count
  RETURNING s.meter_id
)
INSERT INTO prepaid_events (group_id, account_id, meter_id, kind, detail, at)
SELECT group_id, account_id, meter_id, 'purchase_count_mismatch',
       jsonb_build_object('meter', meter_count, 'ours', our_count), now()
FROM cmp WHERE meter_count <> our_count AND seen IS DISTINCT FROM meter_count
RETURNING meter_id
"""


def check_purchase_counters(session: Session, group_id: int, meter_ids: Iterable[int]) -> list[int]:
    """Raise a ``purchase_count_mismatch`` event once per new mismatching counter value; returns meter ids."""
    ids = list(meter_ids)
    if not ids:
        return []
    return list(session.execute(text(MISMATCH_SQL), {"ids": ids, "g": group_id}).scalars())
