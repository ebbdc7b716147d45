"""Chaos: real processes of ``meterhub run`` killed, frozen, and their servers restarted, each under API top-ups.

One platform (private PostgreSQL and Redis on free ports, ``meterhub run --collector-interval 2``) serves every
test of this module in order. Bounds are in ``scenarios.py``; ``make bench`` reports the measured times.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.chaos import scenarios
from tests.chaos.harness import Platform

pytestmark = [pytest.mark.slow, pytest.mark.embedded, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    running = Platform(tmp_path_factory.mktemp("chaos"))
    try:
        with running:
            yield running
    finally:
        if running.log_path.exists():  # for a look after a failure (pytest rotates its temp dirs)
            shutil.copy(running.log_path, Path(tempfile.gettempdir()) / "meterhub-chaos-run.log")
    assert running.proc is not None and running.proc.returncode == 0, running.log()[-3000:]


def test_every_killed_process_is_restarted_and_does_its_work(platform):
    measured = scenarios.kill_each_process(platform)
    assert all(measured[f"{name}_restart_s"] <= scenarios.RESTART_S for name in scenarios.KILLED), measured


def test_postgres_restart_loses_no_polled_reading_and_kills_nothing(platform):
    scenarios.restart_postgres(platform)


def test_redis_restart_kills_nothing_and_polling_goes_on(platform):
    scenarios.restart_redis(platform)


def test_mqtt_broker_restart_loses_no_reading_and_the_ingest_reconnects(platform):
    scenarios.restart_mqtt_broker(platform)


def test_hung_gateways_cost_only_their_own_time(platform):
    scenarios.hung_gateways(platform)


def test_a_stuck_collector_reads_collector_down_not_gateway_offline(platform):
    scenarios.stuck_collector(platform)
