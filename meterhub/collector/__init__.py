"""Polling collector: one asyncio task per bus, retries/quarantine, read-now, sharding (docs/collector.md).

Public API::

    from meterhub.collector import Collector, collector_command, request_read_now, wait_read_now
"""

from meterhub.collector.bus import BusDevice, BusJob, BusPoller, BusSpec, CycleReport, DeviceOutcome, NullSink
from meterhub.collector.cli import collector_command
from meterhub.collector.jobs import (
    BusBusy,
    ReadNowResult,
    bus_owner,
    hold_bus,
    request_read_now,
    submit_command,
    wait_command,
    wait_read_now,
)
from meterhub.collector.policy import Backoff, Quarantine, RetryPolicy
from meterhub.collector.port import BusPort, GatewayUnreachable
from meterhub.collector.schedule import Shard, interval_seconds, stagger
from meterhub.collector.service import Collector, load_buses

__all__ = [
    "Backoff", "BusBusy", "BusDevice", "BusJob", "BusPoller", "BusPort", "BusSpec", "Collector", "CycleReport",
    "DeviceOutcome", "GatewayUnreachable", "NullSink", "Quarantine", "ReadNowResult", "RetryPolicy", "Shard",
    "bus_owner", "collector_command", "hold_bus", "interval_seconds", "load_buses", "request_read_now", "stagger",
    "submit_command", "wait_command", "wait_read_now",
]
