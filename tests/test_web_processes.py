"""``meterhub web --reuse-port``: several web processes share one port (``meterhub run --web-processes N``), each
serves the app, and the port keeps answering while one of them is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.common import free_port

ROOT = Path(__file__).resolve().parents[1]


def _serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as page:
            return page.status == 200 and b'name="csrf_token"' in page.read()
    except OSError:
        return False


def test_two_web_processes_share_a_port_and_each_serves(app, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERHUB_") and k != "PYTHONPATH"}
    env.update(METERHUB_DATABASE_URL=app.config["DATABASE_URL"], METERHUB_REDIS_URL=app.config["REDIS_URL"],
               METERHUB_REDIS_NAMESPACE=app.config["REDIS_NAMESPACE"], METERHUB_INSTANCE_PATH=app.instance_path)
    procs = []
    for n in range(2):
        with (tmp_path / f"web{n}.log").open("wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "meterhub", "web", "--port", str(port), "--reuse-port"],
                                          env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    try:
        deadline = time.monotonic() + 120
        while not _serving(port):
            assert all(p.poll() is None for p in procs), "a web process exited: " + "".join(
                (tmp_path / f"web{n}.log").read_text()[-2000:] for n in range(2))
            assert time.monotonic() < deadline, "no answer within 120 s"
            time.sleep(0.5)
        time.sleep(2)  # both bound and listening
        assert all(p.poll() is None for p in procs), "both processes run on the one port"
        for survivor, gone in ((procs[1], procs[0]),):
            os.kill(gone.pid, signal.SIGKILL)
            gone.wait(10)
            assert all(_serving(port) for _ in range(20)), "the other process answers every request"
            assert survivor.poll() is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(30)
