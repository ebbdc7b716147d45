"""meterhub.services: configured > local (when allowed) > real embedded servers from the PyPI wheels."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
import redis

from meterhub import services
from meterhub.services import ServiceError, mqtt as mqtt_mod, postgres as pg_mod, redis as redis_mod
from meterhub.services import resolve_mqtt, resolve_postgres, resolve_redis

RESOLVERS = {
    "postgres": (pg_mod, resolve_postgres),
    "redis": (redis_mod, resolve_redis),
    "mqtt": (mqtt_mod, resolve_mqtt),
}


def _gone(pid: int) -> bool:
    """The process no longer runs (a zombie left to a non-reaping init counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _wait_gone(pids: list[int], timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if not _gone(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def _procs_in(directory: Path) -> list[int]:
    """Processes whose working directory is ``directory`` (PostgreSQL's postmaster and backends)."""
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.readlink(f"/proc/{p}/cwd") == str(directory) and not _gone(int(p)):
                    found.append(int(p))
            except OSError:
                pass
    return found


def _port(url: str) -> int:
    return urlsplit(url).port


class _ClosingListener:
    """Something listening on a port that is not the expected server: accepts and hangs up at once."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def listener():
    lst = _ClosingListener()
    yield lst
    lst.close()


@pytest.fixture(autouse=True)
def _no_leftovers():
    yield
    services.stop_all()


# --- resolution order ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RESOLVERS)
def test_configured_url_wins_and_starts_nothing(name, tmp_path):
    _, resolver = RESOLVERS[name]
    url = {"postgres": "postgresql://u:secret@db.example:5433/x", "redis": "redis://cache.example:6380/2",
           "mqtt": "mqtt://broker.example:1884"}[name]
    svc = resolver(url, tmp_path / "instance", allow_local=True, port=0)
    assert (svc.name, svc.url, svc.source, svc.owned) == (name, url, "configured", False)
    svc.stop()
    svc.stop()
    assert not (tmp_path / "instance").exists()


@pytest.mark.embedded
@pytest.mark.parametrize("name", RESOLVERS)
def test_local_server_used_only_when_allowed(name, tmp_path, monkeypatch):
    mod, resolver = RESOLVERS[name]
    # A real server plays "the local default server" (for MQTT a Mosquitto letting anonymous clients in, as a
    # developer's local broker does: the embedded one refuses them).
    if name == "mqtt":
        from bench.common import Mosquitto

        default = Mosquitto(tmp_path / "default").start()
    else:
        default = resolver(None, tmp_path / "default", allow_local=False, port=0)
    monkeypatch.setattr(mod, "LOCAL_PORT", _port(default.url))
    monkeypatch.setattr(mod, "LOCAL_URL", default.url)

    local = resolver(None, tmp_path / "a", allow_local=True, port=0)
    assert (local.source, local.url, local.owned) == ("local", default.url, False)
    assert not (tmp_path / "a").exists()

    embedded = resolver(None, tmp_path / "b", allow_local=False, port=0)
    assert embedded.source == "embedded" and embedded.owned
    assert embedded.url != default.url
    assert embedded.data_dir is not None and str(embedded.data_dir).startswith(str(tmp_path / "b"))
    embedded.stop()
    default.stop()


@pytest.mark.embedded
@pytest.mark.parametrize("name", RESOLVERS)
def test_local_port_answering_something_else_is_not_used(name, tmp_path, monkeypatch, listener):
    mod, resolver = RESOLVERS[name]
    monkeypatch.setattr(mod, "LOCAL_PORT", listener.port)
    monkeypatch.setattr(mod, "LOCAL_URL", urlsplit(mod.LOCAL_URL)._replace(
        netloc=urlsplit(mod.LOCAL_URL).netloc.rsplit(":", 1)[0] + f":{listener.port}").geturl())
    svc = resolver(None, tmp_path / "i", allow_local=True, port=0)
    assert svc.source == "embedded" and _port(svc.url) != listener.port
    svc.stop()


@pytest.mark.embedded
@pytest.mark.parametrize("name", RESOLVERS)
def test_embedded_port_taken_names_the_env_vars(name, tmp_path, listener):
    mod, resolver = RESOLVERS[name]
    with pytest.raises(ServiceError) as err:
        resolver(None, tmp_path / "i", allow_local=False, port=listener.port)
    assert str(listener.port) in str(err.value)
    assert mod.URL_ENV in str(err.value) and mod.PORT_ENV in str(err.value)


def test_port_env_var_sets_the_default_port(monkeypatch):
    from meterhub.services._base import choose_port

    monkeypatch.setenv("METERHUB_POSTGRES_PORT", "54444")
    assert choose_port(None, "METERHUB_POSTGRES_PORT", 54329) == 54444
    monkeypatch.delenv("METERHUB_POSTGRES_PORT")
    assert choose_port(None, "METERHUB_POSTGRES_PORT", 54329) == 54329
    assert choose_port(0, "METERHUB_POSTGRES_PORT", 54329) not in (0, 54329)
    monkeypatch.setenv("METERHUB_REDIS_PORT", "nope")
    with pytest.raises(ServiceError, match="METERHUB_REDIS_PORT"):
        choose_port(None, "METERHUB_REDIS_PORT", 56379)


def test_reachable(listener):
    assert services.reachable("127.0.0.1", listener.port)
    port = listener.port
    listener.close()
    assert not services.reachable("127.0.0.1", port, timeout=0.2)


# --- embedded PostgreSQL -------------------------------------------------------------------------------


def _count(url: str) -> int:
    with psycopg2.connect(url, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM readings WHERE value = 42")
        n = cur.fetchone()[0]
    conn.close()
    return n


@pytest.mark.embedded
def test_embedded_postgres_unprivileged_tcp_superuser_and_persistent(tmp_path):
    instance = tmp_path / "instance"
    pg = resolve_postgres(None, instance, allow_local=False, port=0)
    assert pg.source == "embedded" and pg.owned
    parts = urlsplit(pg.url)
    assert (parts.scheme, parts.hostname, parts.username, parts.path) == ("postgresql", "127.0.0.1", "postgres",
                                                                          "/postgres")
    data = instance / "postgres" / "data"
    assert pg.data_dir == data.resolve() and (data / "PG_VERSION").exists()
    uid = _uid_of(pg.pid)
    if os.geteuid() == 0:
        assert uid != 0, "the postmaster must not run as root"
    assert data.stat().st_uid == uid

    conn = psycopg2.connect(pg.url, connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT inet_server_addr()::text, current_setting('server_encoding'), "
                    "(SELECT datcollate FROM pg_database WHERE datname = current_database()), "
                    "rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == ("127.0.0.1/32", "UTF8", "C", True, True, True)
        cur.execute("CREATE DATABASE scratch")
        cur.execute("CREATE ROLE someone LOGIN")
        cur.execute("CREATE TABLE readings (id serial PRIMARY KEY, value int)")
        cur.execute("INSERT INTO readings (value) VALUES (42)")
    conn.close()

    pid = pg.pid
    pg.stop()
    pg.stop()  # idempotent
    assert _wait_gone([pid], 0) == []
    assert _procs_in(data.resolve()) == []
    assert not (data / "postmaster.pid").exists()

    again = resolve_postgres(None, instance, allow_local=False, port=0)
    assert again.pid != pid
    assert _count(again.url) == 1
    again.stop()


@pytest.mark.embedded
def test_embedded_postgres_survives_kill9_and_a_stale_pid_file(tmp_path):
    instance = tmp_path / "instance"
    pg = resolve_postgres(None, instance, allow_local=False, port=0)
    data = pg.data_dir
    with psycopg2.connect(pg.url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE readings (value int); INSERT INTO readings VALUES (42)")
    conn.close()

    # 1. The postmaster is killed -9: postmaster.pid stays behind with a dead pid.
    os.kill(pg.pid, signal.SIGKILL)
    assert _wait_gone([pg.pid]) == []
    stale = (data / "postmaster.pid").read_text()
    pg.stop()  # the dead server: nothing to do, no error
    assert stale.split("\n")[0] == str(pg.pid)
    assert _wait_gone(_procs_in(data)) == []

    second = resolve_postgres(None, instance, allow_local=False, port=0)
    assert _count(second.url) == 1
    second.stop()

    # 2. The stale pid file names a live process of the same user that is not PostgreSQL (pid reuse):
    #    PostgreSQL alone would refuse to start ("lock file already exists").
    owner = data.stat().st_uid
    kwargs = {"user": owner} if os.geteuid() == 0 else {}
    impostor = subprocess.Popen(["sleep", "60"], **kwargs)
    try:
        lines = stale.split("\n")
        lines[0] = str(impostor.pid)
        (data / "postmaster.pid").write_text("\n".join(lines))
        os.chown(data / "postmaster.pid", owner, -1)
        third = resolve_postgres(None, instance, allow_local=False, port=0)
        assert _count(third.url) == 1
        assert impostor.poll() is None, "an unrelated process must not be touched"
        third.stop()
    finally:
        impostor.kill()
        impostor.wait()


@pytest.mark.embedded
def test_embedded_postgres_already_running_is_reused_not_stopped(tmp_path):
    first = resolve_postgres(None, tmp_path / "i", allow_local=False, port=0)
    second = resolve_postgres(None, tmp_path / "i", allow_local=False, port=0)
    assert (second.source, second.url, second.pid, second.owned) == ("embedded", first.url, first.pid, False)
    second.stop()
    assert not _gone(first.pid)
    first.stop()
    assert _gone(first.pid)


@pytest.mark.embedded
def test_embedded_postgres_refuses_a_cluster_of_another_major_version(tmp_path):
    data = tmp_path / "i" / "postgres" / "data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("17\n")
    with pytest.raises(ServiceError, match=r"PostgreSQL 17 but the embedded server is 18.*METERHUB_DATABASE_URL"):
        resolve_postgres(None, tmp_path / "i", allow_local=False, port=0)


# --- embedded Redis and MQTT -----------------------------------------------------------------------------


@pytest.mark.embedded
def test_embedded_redis_answers_and_keeps_data(tmp_path):
    svc = resolve_redis(None, tmp_path / "i", allow_local=False, port=0)
    assert svc.source == "embedded" and svc.url.startswith("redis://127.0.0.1:")
    client = redis.Redis.from_url(svc.url)
    assert client.ping() is True
    client.set("meterhub:test", "ok")
    client.rpush("queue", "job1")
    client.close()
    pid = svc.pid
    svc.stop()
    assert _gone(pid)

    again = resolve_redis(None, tmp_path / "i", allow_local=False, port=0)
    client = redis.Redis.from_url(again.url)
    assert client.get("meterhub:test") == b"ok" and client.lrange("queue", 0, -1) == [b"job1"]
    client.close()
    again.stop()


@pytest.mark.embedded
def test_embedded_mqtt_qos1_round_trip_with_paho_v2(tmp_path, app, group):
    import paho.mqtt.client as mqtt

    from meterhub.db import service_session
    from meterhub.devices.models import Gateway
    from meterhub.mqtt_auth.credentials import issue_gateway_password, service_credentials
    from tests.timeseries.factories import make_fleet

    svc = resolve_mqtt(None, tmp_path / "i", allow_local=False, port=0,
                       auth_database_url=app.config["SERVICE_DATABASE_URL"])
    assert svc.source == "embedded" and svc.url.startswith("mqtt://127.0.0.1:")
    port = _port(svc.url)
    assert mqtt_mod.connect_problem("127.0.0.1", port) == "CONNECT refused with return code 5"  # anonymous
    service = service_credentials(tmp_path / "i")
    fleet = make_fleet(app, group)
    with app.app_context(), service_session() as s:
        gateway = issue_gateway_password(s.get(Gateway, fleet.gateway_id))
    received: queue.Queue = queue.Queue()
    subscribed = threading.Event()
    connected = threading.Event()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="meterhub-test-sub")
    sub.username_pw_set(service.username, service.password)
    sub.on_connect = lambda c, u, flags, rc, props: connected.set() if not rc.is_failure else None
    sub.on_subscribe = lambda c, u, mid, codes, props: subscribed.set() if all(
        not code.is_failure for code in codes) else None
    sub.on_message = lambda c, u, msg: received.put((msg.topic, msg.payload, msg.qos))
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=gateway.username)
    pub.username_pw_set(gateway.username, gateway.password)
    topic = f"meterhub/{gateway.username}/readings"
    try:
        sub.connect("127.0.0.1", port)
        sub.loop_start()
        assert connected.wait(5)
        sub.subscribe("meterhub/+/readings", qos=1)
        assert subscribed.wait(5)

        pub.connect("127.0.0.1", port)
        pub.loop_start()
        info = pub.publish(topic, b"kWh=12.5", qos=1)
        info.wait_for_publish(5)
        assert info.is_published()  # PUBACK received
        assert received.get(timeout=5) == (topic, b"kWh=12.5", 1)
    finally:
        for client in (pub, sub):
            client.disconnect()
            client.loop_stop()
    pid = svc.pid
    svc.stop()
    assert _gone(pid)


# --- no server outlives its parent -----------------------------------------------------------------------

_CHILD = """
import sys, time
from pathlib import Path
from meterhub.services import install_signal_handlers, resolve_mqtt, resolve_postgres, resolve_redis
inst = Path(sys.argv[1])
if sys.argv[2] == "explicit":
    install_signal_handlers()
svcs = [f(None, inst, allow_local=False, port=0) for f in (resolve_postgres, resolve_redis, resolve_mqtt)]
print(" ".join(str(s.pid) for s in svcs), flush=True)
time.sleep(60)
"""


@pytest.mark.embedded
@pytest.mark.parametrize(
    ("sig", "handlers", "status"),
    [(signal.SIGTERM, "default", 143), (signal.SIGKILL, "default", -9), (signal.SIGTERM, "explicit", 143),
     (signal.SIGINT, "explicit", -2)],  # KeyboardInterrupt: Python exits by SIGINT
    ids=["SIGTERM", "SIGKILL", "SIGTERM-handlers", "SIGINT-handlers"],
)
def test_servers_do_not_outlive_their_parent(sig, handlers, status, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "i"), handlers], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=Path(__file__).resolve().parents[1])
    pids: list[int] = []
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3 and not any(_gone(p) for p in pids)
        proc.send_signal(sig)
        assert proc.wait(30) == status
        assert _wait_gone(pids) == []
        assert _wait_gone(_procs_in((tmp_path / "i" / "postgres" / "data").resolve())) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        for pid in pids:  # on failure, do not leave the servers behind
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
