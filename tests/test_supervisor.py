"""``meterhub run``'s supervisor: a child that dies is restarted with back-off, reported, and stop() ends all."""

from __future__ import annotations

import os
import signal
import sys
import time

from meterhub.supervisor import Supervisor

SLEEPER = (sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[1]))")


def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_killed_child_is_restarted_with_backoff_and_reported():
    events: list[tuple[str, str, dict]] = []
    sup = Supervisor(on_event=lambda name, event, detail: events.append((name, event, detail)), command=SLEEPER)
    first = sup.start("sleeper", "60")
    other = sup.start("other", "60")
    sup.watch(every_s=0.05)
    try:
        os.kill(first.pid, signal.SIGKILL)
        _until(lambda: sup.children[0].proc.pid != first.pid)
        assert sup.children[0].proc.poll() is None and sup.children[0].restarts == 1
        assert sup.children[1].proc is other and other.poll() is None  # the others are left alone
        _until(lambda: len(events) >= 2)
        assert [(n, e) for n, e, _ in events] == [("sleeper", "exited"), ("sleeper", "restarted")]
        assert events[0][2]["reason"] == "signal SIGKILL" and events[0][2]["restart_in_s"] <= 1.5
        # a second death soon after waits longer (1 s, then about 2 s)
        second = sup.children[0].proc
        os.kill(second.pid, signal.SIGKILL)
        _until(lambda: len(events) >= 3)
        assert events[2][2]["restart_in_s"] >= 1.5
        _until(lambda: sup.children[0].proc.pid != second.pid)
    finally:
        sup.stop()
    assert all(c.proc.poll() is not None for c in sup.children)


def test_a_child_that_exits_by_itself_is_restarted_too_and_stop_prevents_restarts():
    sup = Supervisor(command=(sys.executable, "-c", "import sys; sys.exit(3)"))
    sup.start("crasher")
    now = time.monotonic()
    sup.children[0].proc.wait(10)
    assert sup.check(now) == []  # noticed: a restart is scheduled after the back-off
    assert sup.children[0].restart_at is not None
    assert sup.check(now + 5) == ["crasher"]
    sup.children[0].proc.wait(10)
    sup.stop()
    assert sup.check(now + 100) == []  # stopping: nothing is started any more
