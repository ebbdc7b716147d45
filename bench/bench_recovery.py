"""Recovery benchmark: how long the platform takes to recover by itself from each fault (issue 22).

    python -m bench.bench_recovery

Runs the chaos scenarios of ``tests/chaos`` once on one ``meterhub run`` (private PostgreSQL and Redis on
free ports, the simulated fleet polled every 2 s, API top-ups during every fault) and reports, per fault,
the seconds until each part works again: a killed process runs again, every polled meter has a new stored
reading, the periodic jobs run, a queued command is confirmed. Written to ``results.json`` as ``recovery``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from tests.chaos import scenarios
from tests.chaos.harness import Platform

from .common import print_table, write_results

log = logging.getLogger("bench.recovery")
FAULTS = (
    ("kill -9 every process kind", scenarios.kill_each_process),
    ("PostgreSQL restart", scenarios.restart_postgres),
    ("Redis restart", scenarios.restart_redis),
    ("MQTT broker kill -9 and restart", scenarios.restart_mqtt_broker),
    ("hung gateways (SIGSTOP)", scenarios.hung_gateways),
    ("collector frozen (SIGSTOP)", scenarios.stuck_collector),
)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results: dict[str, dict] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="meterhub-recovery-") as workdir, Platform(Path(workdir)) as platform:
        results["startup_s"] = {"meterhub_run_ready_s": round(time.monotonic() - started, 1)}
        for name, scenario in FAULTS:
            log.info("fault: %s", name)
            results[name] = scenario(platform)
    rows = [{"fault": fault, "measure": measure, "seconds": value}
            for fault, measured in results.items() for measure, value in measured.items()
            if measure.endswith("_s")]
    print_table("Recovery after faults (seconds; poll interval 2 s)", rows)
    write_results("recovery", {fault: measured for fault, measured in results.items()})


if __name__ == "__main__":
    main()
