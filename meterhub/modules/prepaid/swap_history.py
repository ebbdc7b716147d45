"""After a meter swap: the room's history follows the installation interval (issue 21 item 6).

:func:`swap_meter <meterhub.modules.prepaid.accounts.swap_meter>` ends the old meter's installation and starts
the new one's at the swap (``meters.removed_at`` / ``installed_at``) and holds :func:`after_swap` in the job
outbox (queue ``reports``: someone is looking at the room). The job, as the service role: stores the old meter's
final and the new meter's initial reading at the swap (so the usage of both sides is counted up to and from that
moment) and brings both meters' usage up to date, so that a swapped-in meter's past elsewhere and anything the old
meter reads after it left belong to no room: on plain PostgreSQL the rollups count a meter's usage only while it
is installed (both meters rolled up again); on TimescaleDB the usage queries limit each meter's aggregate buckets
to its installation interval when they read them (:mod:`meterhub.timeseries.cagg_usage`, edges from the raw
readings), and the swap readings reach the aggregates as any stored reading does.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from ...db import service_engine, service_session
from ...timeseries.freshness import uses_timescale
from ...timeseries.ingest import Reading, ingest
from ...timeseries.rollups import refresh_rollups

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def after_swap(group_id: int, old_meter_id: int, new_meter_id: int, at: str, final: str, initial: str,
               column: str = "energy_kwh") -> int:
    """rq job: the swap's two readings stored, both meters' usage rolled up again; readings stored."""
    when = datetime.fromisoformat(at)
    # TimescaleDB: the usage queries clip each meter's buckets to its interval (edges from the raw readings);
    # the swap readings reach the aggregates as any stored reading does (fresh: refreshed if behind the watermark)
    timescale = uses_timescale(service_engine())
    result = ingest([Reading(group_id, old_meter_id, when, {column: Decimal(final)}, source="swap"),
                     Reading(group_id, new_meter_id, when, {column: Decimal(initial)}, source="swap")],
                    notify=False, fresh=timescale)
    if timescale:
        return result.stored
    with service_session() as session:
        refresh_rollups(session, EPOCH, [old_meter_id, new_meter_id])
    return result.stored
