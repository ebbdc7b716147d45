"""Several "hosts" on one machine: Linux network namespaces on a private bridge, cut off with nftables.

Topology of one :class:`Network` (addresses 10.231.<n>.0/24, <n> chosen free and locked per run)::

    root namespace: veth <tag>r = 10.231.n.1  (services of the root namespace are forwarded here by socat)
          |
    switch namespace <tag>-sw: bridge br0 (in its own namespace: the root's br_netfilter/firewall never sees it)
          |            |            |
    host "a" eth0   host "b" eth0   ...   10.231.n.10, .11, ... (one namespace each, with its own lo)

``Network.forward(port)`` makes a root-namespace service on 127.0.0.1:<port> (PostgreSQL, Redis, Mosquitto)
reachable from every host at ``network.root_ip:<listen port>``. ``Host.popen`` starts a process inside the
host; ``Host.cut()`` drops every packet of the host except its loopback (an nft table inside its namespace),
``Host.cut(ports=[...])`` only its traffic to/from those remote TCP ports, ``Host.heal()`` removes the table.
``close()`` (also the context manager's exit and the pytest fixture's teardown) kills the processes it
started, the forwarders, and deletes the namespaces (their nft tables go with them) and the root veth; it
runs after a failure too. A run's names carry its pid, so leftovers of a killed run are removed by the next
one (``sweep_stale``), never anybody else's namespaces.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

PREFIX = "mhn"  # namespaces: mhn<pid>-<name>; root veth: mhn<pid>r
SUBNET_BASE = "10.231"
LOCK_DIR = Path("/tmp")


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool in ("ip", "nft", "socat"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (apt-get install -y iproute2 nftables socat)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def install_tools() -> None:
    """apt-get install nftables/socat where missing (root with apt only); quiet, best effort."""
    missing = [pkg for tool, pkg in (("nft", "nftables"), ("socat", "socat"), ("ip", "iproute2"))
               if shutil.which(tool) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        cmd = ["apt-get", "install", "-y", "-qq", *missing]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            subprocess.run(cmd, capture_output=True)


def _sh(*argv: str, check: bool = True, ns: str | None = None, stdin: str | None = None) -> str:
    full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    done = subprocess.run(full, capture_output=True, text=True, input=stdin)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(full)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> None:
    """Delete namespaces and root veths of earlier runs whose process is gone (only ``mhn<pid>`` names)."""
    for line in _sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX) and "-" in name:
            pid = name[len(PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                _sh("ip", "netns", "del", name, check=False)
    for line in _sh("ip", "-o", "link", "show", check=False).splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            dev = parts[1].strip().split("@")[0]
            pid = dev[len(PREFIX):-1]
            if dev.startswith(PREFIX) and dev.endswith("r") and pid.isdigit() and not _pid_alive(int(pid)):
                _sh("ip", "link", "del", dev, check=False)


def _claim_subnet() -> tuple[int, IO[Any]]:
    """A free 10.231.<n>.0/24: not on any root interface and not locked by another run (flock held)."""
    used = _sh("ip", "-o", "-4", "addr", check=False)
    for n in range(1, 255):
        if f" {SUBNET_BASE}.{n}." in used:
            continue
        lock = open(LOCK_DIR / f"meterhub-netns-{SUBNET_BASE}.{n}.lock", "w")  # noqa: SIM115 - held until close
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return n, lock
    raise RuntimeError(f"no free {SUBNET_BASE}.x.0/24 subnet")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Host:
    """One simulated host: a network namespace with ``eth0`` = ``ip`` on the network's bridge."""

    network: Network
    name: str
    ns: str
    ip: str
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    is_cut: bool = False

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside this host (own session, so ``kill()`` reaches its children); tracked for close."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], check=check, **kwargs)

    def cut(self, ports: Sequence[int] | None = None) -> None:
        """Drop this host's traffic: everything but loopback, or only TCP to/from the given remote ports.

        Packets are dropped silently (no RST), as when a cable is pulled or a switch port dies: open
        connections hang until their own timeouts.
        """
        self.heal()
        match = "" if ports is None else f"tcp dport {{ {', '.join(map(str, ports))} }} "
        back = "" if ports is None else f"tcp sport {{ {', '.join(map(str, ports))} }} "
        rules = (
            "table inet mhcut {\n"
            "  chain out { type filter hook output priority -10; policy accept;\n"
            f"    oifname \"lo\" accept\n    {match}drop\n  }}\n"
            "  chain in { type filter hook input priority -10; policy accept;\n"
            f"    iifname \"lo\" accept\n    {back}drop\n  }}\n"
            "}\n"
        )
        _sh("nft", "-f", "-", ns=self.ns, stdin=rules)
        self.is_cut = True

    def heal(self) -> None:
        """Undo ``cut()`` (no-op when not cut)."""
        _sh("nft", "delete", "table", "inet", "mhcut", ns=self.ns, check=False)
        self.is_cut = False

    def kill(self, proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process group of ``proc`` (the process and its children)."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(proc)
                proc.wait(5)


class Network:
    """A private /24 with hosts in namespaces; see the module docstring. Use as a context manager."""

    def __init__(self) -> None:
        sweep_stale()
        self.tag = f"{PREFIX}{os.getpid()}"
        self.n, self._lock = _claim_subnet()
        self.root_ip = f"{SUBNET_BASE}.{self.n}.1"
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        self._forwarders: list[subprocess.Popen[Any]] = []
        self._root_veth = f"{self.tag}r"
        try:
            _sh("ip", "netns", "add", self.switch)
            _sh("ip", "link", "add", "br0", "type", "bridge", ns=self.switch)
            _sh("ip", "link", "set", "br0", "up", ns=self.switch)
            _sh("ip", "link", "add", self._root_veth, "type", "veth", "peer", "name", "up0", "netns", self.switch)
            _sh("ip", "link", "set", "up0", "master", "br0", "up", ns=self.switch)
            _sh("ip", "addr", "add", f"{self.root_ip}/24", "dev", self._root_veth)
            _sh("ip", "link", "set", self._root_veth, "up")
        except Exception:
            self.close()
            raise

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_host(self, name: str) -> Host:
        """A new namespace ``<tag>-<name>`` with eth0 = 10.231.n.(10 + index), lo up, default route to root."""
        index = len(self.hosts)
        ns = f"{self.tag}-{name}"
        ip = f"{SUBNET_BASE}.{self.n}.{10 + index}"
        port = f"p{index}"
        _sh("ip", "netns", "add", ns)
        host = Host(self, name, ns, ip)
        self.hosts[name] = host
        _sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns, ns=self.switch)
        _sh("ip", "link", "set", port, "master", "br0", "up", ns=self.switch)
        _sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", ns=ns)
        _sh("ip", "link", "set", "eth0", "up", ns=ns)
        _sh("ip", "link", "set", "lo", "up", ns=ns)
        _sh("ip", "route", "add", "default", "via", self.root_ip, ns=ns)
        return host

    def forward(self, target_port: int, target_host: str = "127.0.0.1", listen_port: int | None = None) -> int:
        """Listen on ``root_ip:<listen_port>`` (default: the target port) and relay to the root's target.

        Returns the listening port. socat forks one child per connection; killing the forwarder ends them.
        """
        port = listen_port or target_port
        proc = subprocess.Popen(
            ["socat", f"TCP-LISTEN:{port},bind={self.root_ip},reuseaddr,fork", f"TCP:{target_host}:{target_port}"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._forwarders.append(proc)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.root_ip, port), timeout=1).close()
                return port
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"socat could not forward {self.root_ip}:{port}") from None
                time.sleep(0.05)

    def close(self) -> None:
        """Kill everything started here and delete the namespaces, nft tables and veths (idempotent)."""
        for host in self.hosts.values():
            host.stop_all()
        for proc in self._forwarders:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
        self._forwarders.clear()
        for host in self.hosts.values():
            _sh("ip", "netns", "del", host.ns, check=False)
        self.hosts.clear()
        _sh("ip", "link", "del", self._root_veth, check=False)
        _sh("ip", "netns", "del", self.switch, check=False)
        if not self._lock.closed:
            self._lock.close()
