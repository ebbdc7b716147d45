"""Reports, dashboards and exports read from a real streaming hot-standby replica (``REPLICA_DATABASE_URL``)
and say how fresh they are; money and commands always use the primary (issue 18 item 4)."""

from __future__ import annotations

import io
import re
import tempfile
import time
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy import event, select

from meterhub.app import create_app
from meterhub.db import dispose_service_engines, service_session
from meterhub.extensions import db
from meterhub.replica import dispose_replica_engines, replica_engine
from tests.alarms.conftest import run_jobs
from tests.conftest import Tenant, _config, csrf_token
from tests.dbtopology.cluster import Cluster

DATABASE = "meterhub_replica"


@pytest.fixture(scope="module")
def cluster(service_urls):
    # not pytest's tmp_path: other pytest sessions of the same user prune old base folders while we run
    made = Cluster(Path(tempfile.mkdtemp(prefix="meterhub-pgcluster-")) / "cluster")
    try:
        app = create_app(_config(made.primary.url(DATABASE), service_urls))
        with app.app_context():
            from flask_migrate import upgrade

            upgrade()
            db.engine.dispose()
        made.add_replica()
        yield made
    finally:
        dispose_replica_engines()
        dispose_service_engines()
        made.close()


@pytest.fixture()
def rapp(cluster, service_urls):
    app = create_app({**_config(cluster.primary.url(DATABASE), service_urls),
                      "REPLICA_DATABASE_URL": cluster.replica.url(DATABASE)})
    yield app
    with app.app_context():
        db.engine.dispose()


class Statements:
    """Every statement sent through the replica's engines (app and service role)."""

    def __init__(self, app) -> None:
        self.seen: list[str] = []
        with app.app_context():
            for role in ("APP", "SERVICE"):
                event.listen(replica_engine(role), "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, *args) -> None:  # noqa: ANN001
        self.seen.append(statement)

    def close(self, app) -> None:
        with app.app_context():
            for role in ("APP", "SERVICE"):
                event.remove(replica_engine(role), "before_cursor_execute", self._record)


@pytest.fixture()
def replica_statements(rapp):
    statements = Statements(rapp)
    yield statements
    statements.close(rapp)


def _sign_in(app, tenant: Tenant, role: str):
    client = app.test_client()
    username, password, _ = tenant.operator(role, all_properties=True)
    response = client.post("/login", data={"username": username, "password": password,
                                           "csrf_token": csrf_token(client)})
    assert response.status_code == 302
    return client


def _caught_up_page(client, cluster, path: str, timeout: float = 30) -> str:  # noqa: ANN001
    """``path`` once the replica reports nothing waiting (a request's own writes on the primary, e.g. the
    sign-in's, may still be on their way for a moment on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while True:
        cluster.wait_replayed()
        page = client.get(path).get_data(as_text=True)
        if "Nothing is waiting to be applied." in page:
            return page
        assert time.monotonic() < deadline, "the page never said the replica had caught up"
        time.sleep(0.5)


def test_reports_and_dashboard_read_from_the_replica_and_say_how_fresh(rapp, cluster, replica_statements):
    tenant = Tenant(rapp, "r")
    client = _sign_in(rapp, tenant, "group_admin")
    page = _caught_up_page(client, cluster, "/reports/usage")
    assert 'id="freshness"' in page
    assert any("pg_last_xact_replay_timestamp" in s for s in replica_statements.seen)
    page = client.get("/").get_data(as_text=True)
    assert 'id="freshness"' in page and f"Mall {tenant.marker}" in page
    # replay paused: a property made on the primary is not on the replica yet, and the page says it is behind
    cluster.replica.query("SELECT pg_wal_replay_pause()")
    try:
        from meterhub.tenants import service

        with rapp.app_context(), service_session() as s:
            annex = f'href="/dashboard/properties/{service.create_property(s, tenant.group_id, "Annex", "P3").id}"'
        (lsn,), = cluster.primary.query("SELECT pg_current_wal_lsn()::text")
        deadline = time.monotonic() + 30
        while not cluster.replica.query(f"SELECT pg_last_wal_receive_lsn() >= '{lsn}'::pg_lsn")[0][0]:
            assert time.monotonic() < deadline, "the replica did not receive the primary's WAL"
            time.sleep(0.1)
        time.sleep(1.2)
        page = client.get("/").get_data(as_text=True)
        assert annex not in page and "behind the primary" in page  # the dashboard's table of properties
        # further behind than REPLICA_MAX_LAG_SECONDS: the same page reads the primary
        rapp.config["REPLICA_MAX_LAG_SECONDS"] = 1
        page = client.get("/").get_data(as_text=True)
        assert annex in page and 'id="freshness"' not in page
    finally:
        cluster.replica.query("SELECT pg_wal_replay_resume()")
    rapp.config["REPLICA_MAX_LAG_SECONDS"] = 300
    page = _caught_up_page(client, cluster, "/")
    assert annex in page and 'id="freshness"' in page


def test_money_and_commands_never_touch_the_replica(rapp, cluster, replica_statements):
    tenant = Tenant(rapp, "m")
    account_id, meter_id = tenant.account_id, tenant.meter_id
    client = _sign_in(rapp, tenant, "group_admin")
    cluster.wait_replayed()
    replica_statements.seen.clear()
    page = client.get(f"/prepaid/accounts/{account_id}").get_data(as_text=True)
    key = re.search(r'name="key" value="(topup-[0-9a-f]+)"', page).group(1)
    token = csrf_token(client, f"/prepaid/accounts/{account_id}")
    topup = client.post(f"/prepaid/accounts/{account_id}/topup",
                        data={"csrf_token": token, "key": key, "amount": "25.00", "channel": "cash"})
    assert topup.status_code == 302 and "/receipts/" in topup.location
    refund = client.post(f"/prepaid/accounts/{account_id}/refund",
                         data={"csrf_token": token, "key": key + "r", "amount": "5.00", "channel": "cash",
                               "confirmed": "yes"})
    assert refund.status_code == 302
    command = client.post(f"/prepaid/meters/{meter_id}/command",
                          data={"csrf_token": token, "kind": "read_now", "account_id": account_id})
    assert command.status_code == 302
    run_jobs(rapp, "commands", rounds=1)
    assert replica_statements.seen == []
    from meterhub.commands.models import Command

    with rapp.app_context(), service_session() as s:
        assert s.execute(select(Command.id).where(Command.meter_id == meter_id)).first() is not None
    # the listener does see the replica's statements: the finance report reads there, in the console and the API
    assert client.get("/reports/sales").status_code == 200 and replica_statements.seen
    from tests.api.world import bearer, make_token

    cluster.wait_replayed()
    api = rapp.test_client().get("/api/v1/reports/sales", headers=bearer(make_token(rapp, tenant, scopes=("read",))))
    body = api.get_json()
    assert api.status_code == 200 and body["source"] == "replica" and body["data_as_of"], body
    assert any("topup" in row for row in body["rows"]), body


def test_export_read_on_the_replica_stored_in_the_database(rapp, cluster, replica_statements):
    tenant = Tenant(rapp, "e")
    tenant.prepaid  # a top-up to report
    client = _sign_in(rapp, tenant, "group_finance")
    cluster.wait_replayed()
    response = client.post("/reports/sales/export", data={"csrf_token": csrf_token(client, "/reports/")})
    assert response.status_code == 302
    replica_statements.seen.clear()
    assert run_jobs(rapp, "reports") >= 1
    assert replica_statements.seen  # the rows were read on the replica
    state = client.get(response.headers["Location"] + "?format=json").get_json()
    assert state["status"] == "done", state
    from meterhub.reports.models import ReportExport

    with rapp.app_context(), service_session() as s:
        export = s.get(ReportExport, state["id"])
        assert export.data_as_of is not None and export.file_id is not None and not export.path
    assert "Made from the read replica" in client.get(response.headers["Location"]).get_data(as_text=True)
    download = client.get(state["download"])
    cells = [list(r) for r in load_workbook(io.BytesIO(download.get_data()), read_only=True).active.iter_rows(
        values_only=True)]
    download.close()
    assert any("topup" in row for row in cells), cells


def test_an_unreachable_replica_leaves_reads_on_the_primary(rapp, cluster):
    tenant = Tenant(rapp, "u")
    client = _sign_in(rapp, tenant, "group_admin")
    cluster.stop(cluster.replica)
    dispose_replica_engines()
    page = client.get("/").get_data(as_text=True)
    assert f"Mall {tenant.marker}" in page and 'id="freshness"' not in page
    assert client.get("/reports/usage").status_code == 200
