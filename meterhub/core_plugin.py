"""The core's own plugin: periodic jobs of the time-series layer, registered like any other plugin."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl(trylast=True)
def register_jobs() -> list[dict]:
    return [
        {"name": "timeseries.rollups", "interval": 300, "callable": "meterhub.timeseries.jobs.refresh_rollups_job"},
        {"name": "timeseries.offline", "interval": 60, "callable": "meterhub.timeseries.jobs.detect_offline_job"},
        {"name": "audit.anchor", "interval": 60, "callable": "meterhub.tenants.audit_anchor:anchor_job"},
        {"name": "collector.liveness", "interval": 15, "callable": "meterhub.collector.liveness:check_job"},
    ]
