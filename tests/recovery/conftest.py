"""Recovery fixtures: real rq worker processes (killed with SIGKILL), a private Redis to stop, simulated meters.

The worker processes run ``python -m meterhub worker`` against the test database and Redis namespace, with
short ownership deadlines (heartbeat 1 s, orphaned after 3 s) so that recovery takes seconds, not a minute.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meterhub.db import service_session

DEADLINES = {"COMMAND_HEARTBEAT_S": 1, "COMMAND_ORPHAN_AFTER_S": 3, "COMMAND_LOST_JOB_AFTER_S": 4}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> float:
    """Seconds until ``predicate()`` holds; AssertionError naming ``what`` after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(step)
    return time.monotonic() - start


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found through /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class WorkerProcess:
    """``meterhub worker`` in its own session (process group), so SIGKILL takes its work horse too."""

    def __init__(self, app: Any, log_path: Path, queues: tuple[str, ...] = ("commands",), **config: Any) -> None:
        self.app, self.log_path, self.queues = app, log_path, queues
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("METERHUB_")}
        settings = {"DATABASE_URL": app.config["DATABASE_URL"], "REDIS_URL": app.config["REDIS_URL"],
                    "REDIS_NAMESPACE": app.config["REDIS_NAMESPACE"], "MQTT_URL": app.config["MQTT_URL"],
                    "INSTANCE_PATH": app.instance_path, **{k: str(v) for k, v in DEADLINES.items()}, **config}
        self.env.update({f"METERHUB_{k}": str(v) for k, v in settings.items()})
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> WorkerProcess:
        args = [sys.executable, "-m", "meterhub", "worker"]
        for queue in self.queues:
            args += ["--queue", queue]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(args, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=Path(__file__).resolve().parents[2])
        return self

    def kill(self) -> None:
        """kill -9 the worker and its work horse (rq puts the horse in a session of its own)."""
        if self.proc is not None and self.proc.poll() is None:
            for pid in [*descendants(self.proc.pid), self.proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(10)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture()
def fast_app(app):
    """The test app with the short ownership deadlines the worker processes use."""
    app.config.update(DEADLINES)
    return app


@pytest.fixture()
def workers(fast_app, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes (``workers(name)``); all stopped at the end. The queues start empty and earlier
    tests' open commands are cancelled: no worker runs in the suite, so earlier tests of a run leave command jobs
    and queued commands behind, which ``dispatch`` here would hand to the workers first (70 commands to meters
    that no longer answer: the test's own command waited behind them for over 30 s in a full run)."""
    from sqlalchemy import text

    from meterhub.redis_conn import get_queue

    with fast_app.app_context():
        for queue in ("commands", "default", "reports", "periodic", "bulk"):
            get_queue(queue).empty()
        with service_session() as s:
            s.execute(text("UPDATE commands SET state = 'cancelled', error = 'left open by an earlier test' "
                           "WHERE state IN ('queued', 'sent')"))
    started: list[WorkerProcess] = []

    def start(name: str = "worker", queues: tuple[str, ...] = ("commands",), **config: Any) -> WorkerProcess:
        worker = WorkerProcess(fast_app, tmp_path / f"{name}.log", queues, **config).__enter__()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.__exit__()


def command_row(app: Any, command_id: int) -> Any:
    from meterhub.commands.models import Command

    with app.app_context(), service_session() as s:
        return s.get(Command, command_id)
