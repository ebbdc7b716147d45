"""After a meter swap: the room's history follows the installation interval (issue 21 item 6).

:func:`swap_meter <meterhub.modules.prepaid.accounts.swap_meter>` ends the old meter's installation and starts
the new one's at the swap (``meters.removed_at`` / ``installed_at``) and holds :func:`after_swap` in the job
outbox (queue ``reports``: someone is looking at the room). The job, as the service role: stores the old meter's
final and the new meter's initial reading at the swap (so the usage of both sides is counted up to and from that
moment) and rolls both meters up again, so that a swapped-in meter's past elsewhere and anything the old meter
reads after it left belong to no room (rollups count a meter's usage only while it is installed).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from decimal import Decimal

from ...db import service_engine, service_session
from ...timeseries.freshness import uses_timescale
from ...timeseries.ingest import Reading, ingest
from ...timeseries.rollups import refresh_rollups

log = logging.getLogger(__name__)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def after_swap(group_id: int, old_meter_id: int, new_meter_id: int, at: str, final: str, initial: str,
               column: str = "energy_kwh") -> int:
    """rq job: the swap's two readings stored, both meters' usage rolled up again; readings stored."""
    when = datetime.fromisoformat(at)
    result = ingest([Reading(group_id, old_meter_id, when, {column: Decimal(final)}, source="swap"),
                     Reading(group_id, new_meter_id, when, {column: Decimal(initial)}, source="swap")],
                    notify=False, fresh=False)
    if uses_timescale(service_engine()):
        # the continuous aggregates cannot follow an installation interval: reports read them as they are
        log.warning("meter swap %s -> %s: usage on TimescaleDB is not clipped to the installation interval",
                    old_meter_id, new_meter_id)
        return result.stored
    with service_session() as session:
        refresh_rollups(session, EPOCH, [old_meter_id, new_meter_id])
    return result.stored
