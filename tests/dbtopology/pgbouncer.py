"""A private PgBouncer in transaction pooling mode for one test (installed with apt where absent, run as an
unprivileged user when we are root: PgBouncer refuses to run as root)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

from meterhub.services._proc import free_port, spawn, stop_process, unprivileged_user, wait_ready


def pgbouncer_binary() -> str | None:
    """The pgbouncer program, installed with apt when we are root and it is missing; None if unavailable."""
    found = shutil.which("pgbouncer") or (os.path.exists("/usr/sbin/pgbouncer") and "/usr/sbin/pgbouncer")
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        cmd = ["apt-get", "install", "-y", "-qq", "pgbouncer"]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            subprocess.run(cmd, capture_output=True)
        found = shutil.which("pgbouncer") or (os.path.exists("/usr/sbin/pgbouncer") and "/usr/sbin/pgbouncer")
    return found or None


class PgBouncer:
    """``pool_mode = transaction`` in front of ``server_url``'s server; ``users`` maps login → password."""

    def __init__(self, binary: str, server_url: str, users: dict[str, str | None], pool_size: int = 1) -> None:
        server = make_url(server_url)
        self.base = Path(tempfile.mkdtemp(prefix="meterhub-pgbouncer-"))
        self.port = free_port()
        user = unprivileged_user()
        (self.base / "users.txt").write_text("".join(f'"{u}" "{p or ""}"\n' for u, p in users.items()))
        (self.base / "pgbouncer.ini").write_text(f"""[databases]
* = host={server.host or '127.0.0.1'} port={server.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.base / 'users.txt'}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 100
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
logfile = {self.base / 'pgbouncer.log'}
""")
        if user is not None:
            os.chmod(self.base, 0o755)
            for path in (self.base, *self.base.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
        self.proc = spawn([binary, str(self.base / "pgbouncer.ini")], log_path=self.base / "stdout.log",
                          deathsig=signal.SIGTERM, cwd=self.base, user=user)
        self.database = server.database

        def ready() -> bool:
            try:
                psycopg2.connect(self.dsn(next(iter(users)), users[next(iter(users))]), connect_timeout=2).close()
                return True
            except psycopg2.Error:
                return False

        wait_ready(self.proc, ready, what="test PgBouncer", log_path=self.base / "pgbouncer.log", timeout=30)

    def dsn(self, user: str, password: str | None) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={self.database} user={user} password={password or ''}"

    def url(self, user: str, password: str | None) -> str:
        return f"postgresql://{user}:{password or ''}@127.0.0.1:{self.port}/{self.database}"

    def close(self) -> None:
        stop_process(self.proc, [(signal.SIGTERM, 10)], "test PgBouncer")
        shutil.rmtree(self.base, ignore_errors=True)
