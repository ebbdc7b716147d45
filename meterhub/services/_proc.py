"""Small process and network helpers shared by the embedded servers (Linux only)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pwd
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("meterhub.services")

_PR_SET_PDEATHSIG = 1


class ServiceError(RuntimeError):
    """A backing service could not be resolved or started; the message says which setting to change."""


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0] + ":***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[1]}"))


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not a running server.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def proc_comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def proc_cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _deathsig_preexec(sig: int) -> Callable[[], None] | None:
    """A preexec_fn that makes the child receive ``sig`` when this process dies (even by SIGKILL).

    Linux delivers the parent-death signal when the *thread* that forked the child exits, so it is only
    used when the server is started from the main thread (which lives as long as the process)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        prctl = ctypes.CDLL(name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def spawn(
    argv: list[str],
    *,
    log_path: Path,
    deathsig: int,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: pwd.struct_passwd | None = None,
) -> subprocess.Popen:
    """Start a long-running server process: own session (a terminal's Ctrl-C does not reach it, the owner
    stops it in order), output appended to ``log_path``, killed with ``deathsig`` if this process dies."""
    kwargs: dict = {}
    if user is not None and user.pw_uid != os.geteuid():
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    with open(log_path, "ab") as logf:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_deathsig_preexec(deathsig),
            **kwargs,
        )


def run_as(
    argv: list[str], *, user: pwd.struct_passwd | None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run a short command (as ``user`` when we are root), capturing its output."""
    kwargs: dict = {}
    if user is not None and user.pw_uid != os.geteuid():
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
        **kwargs,
    )


def stop_process(proc: subprocess.Popen, signals: list[tuple[int, float]], what: str) -> None:
    """Send each ``(signal, seconds to wait)`` in turn until ``proc`` has exited, then SIGKILL."""
    for sig, wait in signals:
        if proc.poll() is not None:
            return
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            log.warning("%s: pid %s still running %.0f s after %s", what, proc.pid, wait, signal.Signals(sig).name)
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def wait_ready(
    proc: subprocess.Popen, ready: Callable[[], bool], *, what: str, log_path: Path, timeout: float
) -> None:
    """Poll ``ready()`` until it is true; fail early (with the server's log) if the process exits."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if proc.poll() is not None:
            raise ServiceError(
                f"{what} exited with status {proc.returncode} while starting; log {log_path}:\n{tail(log_path)}"
            )
        if ready():
            return
        if time.monotonic() > deadline:
            stop_process(proc, [(signal.SIGTERM, 5)], what)
            raise ServiceError(f"{what} did not become ready in {timeout:.0f} s; log {log_path}:\n{tail(log_path)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


# --- unprivileged user (when we are root) -------------------------------------------------------------


def unprivileged_user(existing_dir: Path | None = None) -> pwd.struct_passwd | None:
    """The account server binaries run as when this process is root (``None`` when not root).

    Preference: the owner of ``existing_dir`` when it exists and is not root (keeps a data directory
    usable by whoever created it), then ``postgres``, then ``meterhub`` (created with ``useradd --system``
    when missing), then ``nobody``."""
    if os.geteuid() != 0:
        return None
    if existing_dir is not None and existing_dir.exists():
        uid = existing_dir.stat().st_uid
        if uid != 0:
            try:
                return pwd.getpwuid(uid)
            except KeyError:
                pass
    for name in ("postgres", "meterhub"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    try:
        res = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", "--comment", "meterhub embedded servers", "meterhub"],
            capture_output=True, text=True, check=False,
        )
        if res.returncode == 0:
            log.info("created system user 'meterhub' to run embedded servers")
            return pwd.getpwnam("meterhub")
        log.warning("useradd meterhub failed (%s); falling back to 'nobody'", res.stderr.strip())
    except (OSError, KeyError) as exc:
        log.warning("could not create system user meterhub (%s); falling back to 'nobody'", exc)
    return pwd.getpwnam("nobody")


def _can_traverse(st: os.stat_result, user: pwd.struct_passwd, groups: set[int]) -> bool:
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def make_traversable(path: Path, user: pwd.struct_passwd | None) -> None:
    """Give ``user`` search (x) permission on ``path`` and every parent directory, adding o+x where it is
    missing (never read or write permission). No-op when not root."""
    if user is None or os.geteuid() != 0:
        return
    import grp

    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    path = path.resolve()
    for p in [*reversed(path.parents), path]:
        st = p.stat()
        if not _can_traverse(st, user, groups):
            os.chmod(p, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
            log.warning("added o+x to %s so that user %s can reach %s", p, user.pw_name, path)


def chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    os.chown(path, user.pw_uid, user.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)


def package_dir(module: str) -> Path | None:
    """Where an installed package lives, without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))
