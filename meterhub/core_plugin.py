"""The core's own plugin: periodic jobs of the time-series layer, registered like any other plugin."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl(trylast=True)
def register_jobs() -> list[dict]:
    return [
        {"name": "timeseries.rollups", "interval": 300, "callable": "meterhub.timeseries.jobs.refresh_rollups_job",
         "queue": "bulk"},  # long, nobody waits for it: never ahead of a command, a notification or an export
        # dashboards: usage per property and day, the month's biggest meters (timeseries.property_usage)
        {"name": "timeseries.property_usage", "interval": 300,
         "callable": "meterhub.timeseries.property_usage:refresh_job", "queue": "bulk"},
        {"name": "timeseries.offline", "interval": 60, "callable": "meterhub.timeseries.jobs.detect_offline_job"},
        {"name": "audit.anchor", "interval": 60, "callable": "meterhub.tenants.audit_anchor:anchor_job"},
        # every meterhub.collector.liveness.CHECK_INTERVAL_S seconds (not imported: plugins load light)
        {"name": "collector.liveness", "interval": 10, "callable": "meterhub.collector.liveness:check_job"},
        {"name": "rq.watch", "interval": 60, "callable": "meterhub.rqhealth:watch"},
    ]


@hookimpl(tryfirst=True)
def reading_stored(group_id: int, meter_ids: list[int]) -> None:
    """The meters' known relay state follows their latest readings (before any module reacts to it)."""
    from .db import service_session
    from .devices.relay_state import follow_readings

    with service_session() as session:
        follow_readings(session, group_id, meter_ids)
