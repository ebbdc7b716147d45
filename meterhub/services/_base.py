"""The Service record, the registry of embedded servers this process started, and their shutdown."""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ._proc import log, mask_url, reachable

Source = Literal["configured", "local", "embedded"]


@dataclass
class Service:
    """A resolved backing service. ``stop()`` stops an embedded server this process started (no-op for a
    configured or local server, or an embedded one that another process started); it is idempotent."""

    name: str
    url: str
    source: str
    pid: int | None = None
    data_dir: Path | None = None
    _stopper: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _owner_pid: int = field(default_factory=os.getpid, repr=False, compare=False)

    @property
    def owned(self) -> bool:
        """True when ``stop()`` will stop a server process (this process started it)."""
        return self._stopper is not None

    def stop(self) -> None:
        if os.getpid() != self._owner_pid:  # a forked child never stops its parent's servers
            return
        with self._lock:
            stopper, self._stopper = self._stopper, None
        if stopper is None:
            return
        try:
            stopper()
        finally:
            _forget(self)


_started: list[Service] = []
_registry_lock = threading.Lock()
_atexit_done = False


def _register(service: Service) -> None:
    global _atexit_done
    with _registry_lock:
        _started.append(service)
        if not _atexit_done:
            atexit.register(stop_all)
            _atexit_done = True
    _install_sigterm_if_default()


def _forget(service: Service) -> None:
    with _registry_lock:
        _started[:] = [s for s in _started if s is not service]


def stop_all() -> None:
    """Stop every embedded server started by this process, newest first. Safe to call repeatedly.

    A forked child (e.g. a worker) inherits the list but never stops its parent's servers."""
    me = os.getpid()
    while True:
        with _registry_lock:
            mine = [s for s in _started if s._owner_pid == me]
            if not mine:
                return
            service = mine[-1]
        try:
            service.stop()
        except Exception:  # keep stopping the others
            log.exception("%s: error while stopping the embedded server", service.name)
            _forget(service)


def _sigterm_handler(signum: int, frame: object) -> None:
    stop_all()
    raise SystemExit(128 + signum)


def _install_sigterm_if_default() -> None:
    """SIGTERM's default action kills the process without running atexit, which would leave the servers
    running until the parent-death signal reaches them: turn it into a clean exit when nobody else
    handles it. (SIGINT already raises KeyboardInterrupt, so atexit runs.)"""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _sigterm_handler)
    except ValueError:
        pass


def install_signal_handlers() -> None:
    """Stop the embedded servers on SIGTERM and SIGINT, then continue with the previous behaviour
    (previous Python handler, or exit 128+signal / KeyboardInterrupt). Call from the main thread."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: object, _previous=previous) -> None:
            stop_all()
            if callable(_previous) and _previous is not _sigterm_handler:
                _previous(signum, frame)
            elif signum == signal.SIGINT:
                raise KeyboardInterrupt
            else:
                raise SystemExit(128 + signum)

        signal.signal(sig, handler)


def resolve(
    name: str,
    configured: str | None,
    *,
    allow_local: bool,
    local_url: str,
    local_port: int,
    local_usable: Callable[[], str | None],
    start_embedded: Callable[[], Service],
) -> Service:
    """The shared resolution order: configured URL, then the local default server (only when allowed and
    ``local_usable()`` returns ``None`` instead of a reason), then an embedded server."""
    if configured:
        log.info("%s: configured at %s", name, mask_url(configured))
        return Service(name, configured, "configured")
    if allow_local:
        if reachable("127.0.0.1", local_port):
            problem = local_usable()
            if problem is None:
                log.info("%s: local server at %s", name, local_url)
                return Service(name, local_url, "local")
            log.info("%s: local server on 127.0.0.1:%d not usable (%s); using an embedded one",
                     name, local_port, problem)
        else:
            log.debug("%s: nothing listens on 127.0.0.1:%d", name, local_port)
    return start_embedded()


def choose_port(port: int | None, env_var: str, default: int) -> int:
    """``None``: the fixed default (overridable by ``env_var``); ``0``: a free port; else ``port``."""
    from ._proc import ServiceError, free_port

    if port is None:
        raw = os.environ.get(env_var)
        if raw:
            try:
                port = int(raw)
            except ValueError:
                raise ServiceError(f"{env_var}={raw!r} is not a port number") from None
        else:
            port = default
    if port == 0:
        return free_port()
    if not 0 < port < 65536:
        raise ServiceError(f"invalid port {port} (check {env_var})")
    return port
