"""Stateless web and worker nodes (issue 18 item 3): two web processes on two hosts behind HAProxy (round robin)
serve one operator's session, CSRF tokens and sign-in rate limit; an export made by an rq worker on one host is
downloaded through the web process of the other; no host keeps the file on its disk.

Hosts (network namespaces, tests/multihost/netns.py): "a" runs HAProxy, web process w1 and a reports worker;
"b" runs web process w2 and a reports worker. PostgreSQL and Redis stay in the root namespace (forwarded). Every
host has its own instance folder; the keys are shared configuration (METERHUB_SECRET_KEY, METERHUB_AUDIT_KEY).
"""

from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.engine import make_url

from meterhub.db import service_session
from meterhub.redis_conn import get_redis
from meterhub.tenants.audit import audit_key
from meterhub.tenants.models import Property

WEB_PORT, LB_PORT = 8000, 8080
METERHUB = str(Path(sys.executable).with_name("meterhub"))


def haproxy_binary() -> str | None:
    """HAProxy, installed with apt when we are root and it is missing; None if unavailable."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        cmd = ["apt-get", "install", "-y", "-qq", "haproxy"]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            subprocess.run(cmd, capture_output=True)
        found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    return found


def _via(network, url: str) -> str:
    """``url`` (a root-namespace service on 127.0.0.1) as the hosts reach it: the network's root address."""
    parsed = make_url(url)
    return parsed.set(host=network.root_ip, port=network.forward(parsed.port)).render_as_string(hide_password=False)


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=3).status_code < 500:
                return
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"{url}: the process exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _token(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


@pytest.fixture()
def web_nodes(app, network, database_url, service_urls):
    haproxy = haproxy_binary()
    if haproxy is None:
        pytest.skip("HAProxy is not installed and could not be installed here (apt-get install haproxy)")
    folder = Path(tempfile.mkdtemp(prefix="meterhub-webnodes-"))
    namespace = f"meterhub-mh-{uuid.uuid4().hex[:8]}"
    with app.app_context():
        shared = {"METERHUB_DATABASE_URL": _via(network, database_url),
                  "METERHUB_REDIS_URL": _via(network, service_urls["redis"]),
                  "METERHUB_REDIS_NAMESPACE": namespace,
                  "METERHUB_APP_DB_PASSWORD": app.config["APP_DB_PASSWORD"],
                  "METERHUB_SECRET_KEY": "k" + secrets.token_urlsafe(32),  # shared configuration of every host
                  "METERHUB_AUDIT_KEY": audit_key(app).decode(),
                  "METERHUB_BABEL_DEFAULT_LOCALE": "en", "METERHUB_TRUSTED_PROXIES": "1"}
    base_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(folder)}
    hosts = {name: network.add_host(name) for name in ("a", "b")}
    procs, logs = {}, {}
    for name, host in hosts.items():
        instance = folder / f"instance-{name}"  # each host's own disk
        env = {**base_env, **shared, "METERHUB_INSTANCE_PATH": str(instance)}
        for role, argv, extra in (
                ("web", [METERHUB, "web", "--host", "0.0.0.0", "--port", str(WEB_PORT), "--threads", "4"],
                 {"METERHUB_WEB_ONLY": "true"}),
                ("worker", [METERHUB, "worker", "--queue", "reports"],
                 {"METERHUB_SERVICE_DB_PASSWORD": app.config["SERVICE_DB_PASSWORD"]})):
            logs[f"{role}-{name}"] = log = folder / f"{role}-{name}.log"
            with open(log, "wb") as out:  # the child keeps its own descriptor
                procs[f"{role}-{name}"] = host.popen(argv, env={**env, **extra}, cwd=folder, stdout=out,
                                                      stderr=subprocess.STDOUT)
    cfg = folder / "haproxy.cfg"
    cfg.write_text(f"""global
  maxconn 200
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  option forwardfor
frontend console
  bind 0.0.0.0:{LB_PORT}
  default_backend web
backend web
  balance roundrobin
  http-response set-header X-Served-By %s
  server w1 {hosts['a'].ip}:{WEB_PORT}
  server w2 {hosts['b'].ip}:{WEB_PORT}
""")
    for name, host in hosts.items():
        _wait_http(f"http://{host.ip}:{WEB_PORT}/login", procs[f"web-{name}"], logs[f"web-{name}"])
    logs["haproxy"] = folder / "haproxy.log"
    with open(logs["haproxy"], "wb") as out:
        procs["haproxy"] = hosts["a"].popen([haproxy, "-f", str(cfg), "-db"], stdout=out, stderr=subprocess.STDOUT)
    lb = f"http://{hosts['a'].ip}:{LB_PORT}"
    _wait_http(f"{lb}/login", procs["haproxy"], logs["haproxy"], timeout=30)
    try:
        yield {"lb": lb, "hosts": hosts, "procs": procs, "logs": logs, "folder": folder, "namespace": namespace,
               "network": network}
    finally:
        network.close()
        shutil.rmtree(folder, ignore_errors=True)


def _served(session: requests.Session, method: str, url: str, **kwargs) -> tuple[requests.Response, str]:
    response = session.request(method, url, allow_redirects=False, timeout=60, **kwargs)
    return response, response.headers.get("X-Served-By", "")


def test_one_session_csrf_and_rate_limit_across_web_processes_and_a_shared_export(app, group, web_nodes):
    lb = web_nodes["lb"]
    username, password, _ = group.operator("group_admin", all_properties=True)
    group.prepaid  # an account with a top-up: the sales report has rows
    browser = requests.Session()
    # sign in: the form comes from one web process, the post goes to the other
    page, first = _served(browser, "GET", f"{lb}/login")
    signed, second = _served(browser, "POST", f"{lb}/login",
                             data={"username": username, "password": password, "csrf_token": _token(page.text)})
    assert {first, second} == {"w1", "w2"}, (first, second)
    assert signed.status_code == 302, signed.text[:2000]
    served = set()
    for _ in range(4):  # the session is known to both
        dashboard, by = _served(browser, "GET", f"{lb}/")
        assert dashboard.status_code == 200 and "Dashboard" in dashboard.text
        served.add(by)
    assert served == {"w1", "w2"}
    # a CSRF-protected form: the token from one process is accepted by the other
    form, by_form = _served(browser, "GET", f"{lb}/properties")
    code = f"MH{uuid.uuid4().hex[:6]}"
    created, by_post = _served(browser, "POST", f"{lb}/properties",
                               data={"csrf_token": _token(form.text), "name": f"Annex {code}", "code": code})
    assert by_form != by_post and created.status_code == 302, created.text[:2000]
    with app.app_context(), service_session() as s:
        assert s.execute(select(Property.id).where(Property.group_id == group.group_id,
                                                   Property.code == code)).scalar() is not None
    # a forged post (no token) is refused by either process
    refused = {_served(browser, "POST", f"{lb}/properties", data={"name": "x", "code": "x"})[0].status_code
               for _ in range(2)}
    assert refused == {400}
    # the sign-in limit is shared: 5 failures spread over both processes, then both refuse
    stranger = requests.Session()
    login_page, _by = _served(stranger, "GET", f"{lb}/login")
    token = _token(login_page.text)  # one token, valid on both processes: the posts alternate between them
    failures = []
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        response, by = _served(stranger, "POST", f"{lb}/login",
                               data={"username": username, "password": "wrong", "csrf_token": token})
        failures.append((response.status_code, by))
    assert {code for code, _by in failures} == {401} and {by for _c, by in failures} == {"w1", "w2"}
    refusals = set()
    for _ in range(2):  # even the right password is refused now, by either process
        response, by = _served(stranger, "POST", f"{lb}/login",
                               data={"username": username, "password": password, "csrf_token": token})
        assert response.status_code == 429, (by, response.status_code)
        refusals.add(by)
    assert refusals == {"w1", "w2"}
    # behind the proxy, the address counted is the client's (X-Forwarded-For from HAProxy), not HAProxy's
    with app.app_context():
        redis = get_redis()
        ips = {k.decode().rsplit(":", 1)[1] for k in redis.keys(f"{web_nodes['namespace']}:login:ip:*")}
    assert ips == {web_nodes["network"].root_ip}, ips
    # an export: queued through one process, made by a worker on one host, downloaded through both processes
    report, _by = _served(browser, "GET", f"{lb}/reports/")
    queued, _by = _served(browser, "POST", f"{lb}/reports/sales/export", data={"csrf_token": _token(report.text)})
    assert queued.status_code == 302, queued.text[:2000]
    status_url = lb + queued.headers["Location"] + "?format=json"
    deadline = time.monotonic() + 180
    while (state := browser.get(status_url, timeout=30).json())["status"] != "done":
        assert state["status"] in ("queued", "running") and time.monotonic() < deadline, (
            state, web_nodes["logs"]["worker-a"].read_text()[-2000:], web_nodes["logs"]["worker-b"].read_text()[-2000:])
        time.sleep(0.5)
    bodies = {}
    for _ in range(2):
        download, by = _served(browser, "GET", lb + state["download"])
        assert download.status_code == 200, (by, download.status_code)
        bodies[by] = download.content
    assert set(bodies) == {"w1", "w2"} and bodies["w1"] == bodies["w2"]
    rows = [list(r) for r in load_workbook(io.BytesIO(bodies["w1"]), read_only=True).active.iter_rows(values_only=True)]
    assert any("topup" in row for row in rows), rows
    on_disk = [p for p in web_nodes["folder"].rglob("*") if p.suffix in (".xlsx", ".part")]
    assert on_disk == []  # no host keeps the file: it lives in the database
