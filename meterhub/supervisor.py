"""Child processes of ``meterhub run``: started, watched, restarted with back-off, stopped together.

    sup = Supervisor(on_event=lambda name, event, detail: ...)     # e.g. process_events.record
    sup.start("worker", "worker", "--queue", "commands")
    sup.watch()                                                   # a thread: check() every second
    ...
    sup.stop()                                                    # SIGTERM to every child, SIGKILL after 10 s

A child that exits (crash, OOM kill, ``kill -9``) is logged with its exit code, reported through
``on_event("exited")`` and started again after a back-off (1, 2, 4 … 60 s; back to 1 s once a child has
run ``stable_s``), reported through ``on_event("restarted")``. Production runs the same processes as systemd
units with ``Restart=on-failure`` instead (``deploy/systemd``, ``docs/operations.md``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .collector.policy import Backoff

log = logging.getLogger(__name__)
EventSink = Callable[[str, str, dict[str, Any]], Any]


@dataclass
class Child:
    """One supervised process and its restart state."""

    name: str
    args: tuple[str, ...]
    proc: subprocess.Popen
    started: float
    restarts: int = 0
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(first_s=1.0, max_s=60.0, jitter=0.1))


class Supervisor:
    """Child processes that live and die with the parent, restarted when they die alone."""

    def __init__(self, on_event: EventSink | None = None, stable_s: float = 60.0,
                 command: tuple[str, ...] = (sys.executable, "-m", "meterhub")) -> None:
        self.command = command
        self.children: list[Child] = []
        self.on_event = on_event
        self.stable_s = stable_s
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def procs(self) -> list[tuple[str, subprocess.Popen]]:
        return [(c.name, c.proc) for c in self.children]

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """Start ``python -m meterhub <args>`` as child ``name`` (its own process group)."""
        with self._lock:
            proc = _spawn(self.command + args)
            self.children.append(Child(name, tuple(args), proc, time.monotonic()))
        log.info("started %s (pid %d)", name, proc.pid)
        return proc

    def check(self, now: float | None = None) -> list[str]:
        """Notice children that exited and restart those whose back-off is over; returns the restarted names."""
        now = time.monotonic() if now is None else now
        restarted = []
        with self._lock:
            for child in self.children:
                if self._stopping.is_set():
                    break
                code = child.proc.poll()
                if code is None:
                    if now - child.started >= self.stable_s:
                        child.backoff.reset()
                    continue
                if child.restart_at is None:
                    _signal_group(child.proc, signal.SIGKILL)  # its orphans (rq's scheduler, a work horse)
                    delay = child.backoff.next()
                    child.restart_at = now + delay
                    log.error("%s (pid %d) exited with %s after %.0f s; restarting in %.0f s", child.name,
                              child.proc.pid, _describe(code), now - child.started, delay)
                    self._emit(child.name, "exited", {"pid": child.proc.pid, "code": code, "reason": _describe(code),
                                                      "ran_s": round(now - child.started, 1),
                                                      "restart_in_s": round(delay, 1)})
                elif now >= child.restart_at:
                    old = child.proc.pid
                    child.proc, child.started, child.restart_at = _spawn(self.command + child.args), now, None
                    child.restarts += 1
                    restarted.append(child.name)
                    log.warning("%s restarted (pid %d, was %d; restart %d)", child.name, child.proc.pid, old,
                                child.restarts)
                    self._emit(child.name, "restarted", {"pid": child.proc.pid, "previous_pid": old,
                                                         "restarts": child.restarts})
        return restarted

    def watch(self, every_s: float = 1.0) -> None:
        """Run ``check()`` in a daemon thread until ``stop()``."""

        def loop() -> None:
            while not self._stopping.wait(every_s):
                try:
                    self.check()
                except Exception:  # the watcher must outlive any one failure
                    log.exception("supervisor: checking the children failed")

        self._thread = threading.Thread(target=loop, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """SIGTERM every child (newest first), SIGKILL what is still running after 10 s."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            children = list(reversed(self.children))
        for child in children:
            if child.proc.poll() is None:
                _signal_group(child.proc, signal.SIGTERM)
        deadline = time.time() + 10
        for child in children:
            try:
                child.proc.wait(max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(child.proc, signal.SIGKILL)
                log.warning("%s did not stop in time; killed", child.name)

    def _emit(self, name: str, event: str, detail: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        threading.Thread(target=self._safe_emit, args=(name, event, detail), daemon=True).start()

    def _safe_emit(self, name: str, event: str, detail: dict[str, Any]) -> None:
        try:
            self.on_event(name, event, detail)  # type: ignore[misc]
        except Exception:
            log.exception("supervisor: reporting that %s %s failed", name, event)


def _spawn(command: tuple[str, ...]) -> subprocess.Popen:
    return subprocess.Popen(list(command), env=os.environ.copy(), start_new_session=True)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
