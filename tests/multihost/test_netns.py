"""The multi-host fixture itself: hosts reach each other and the root's services; a cut host reaches nothing."""

from __future__ import annotations

import socket
import subprocess

from tests.multihost.netns import Network, free_port


def _connects(host, ip: str, port: int) -> bool:
    code = f"import socket; socket.create_connection(({ip!r}, {port}), timeout=1).close()"
    return host.run(["python3", "-c", code], check=False).returncode == 0


def test_hosts_reach_each_other_and_root_services_and_cut_isolates(network: Network) -> None:
    a, b = network.add_host("a"), network.add_host("b")
    with socket.socket() as server:
        port = free_port()
        server.bind(("127.0.0.1", port))
        server.listen(8)
        fwd = network.forward(port)
        assert _connects(a, network.root_ip, fwd)
        listener = b.popen(["python3", "-c", "import socket,time; s=socket.socket(); "
                            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                            f"s.bind(('{b.ip}', 7000)); s.listen(); time.sleep(60)"])
        assert a.run(["python3", "-c", "import time,socket\nfor _ in range(50):\n try:\n"
                      f"  socket.create_connection(('{b.ip}', 7000), timeout=1).close(); break\n"
                      " except OSError: time.sleep(0.1)\nelse: raise SystemExit(1)"], check=False).returncode == 0
        a.cut(ports=[fwd])
        assert not _connects(a, network.root_ip, fwd)
        assert _connects(a, b.ip, 7000)
        a.cut()
        assert not _connects(a, b.ip, 7000)
        a.heal()
        assert _connects(a, network.root_ip, fwd) and _connects(a, b.ip, 7000)
        a.kill(listener)
        assert listener.wait(5) != 0


def test_close_removes_namespaces(netns_ready: None) -> None:
    net = Network()
    host = net.add_host("x")
    host.cut()
    net.close()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert host.ns not in names and net.switch not in names
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"{net.tag}r" not in links
