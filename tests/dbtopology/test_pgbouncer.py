"""PgBouncer in transaction pooling mode in front of PostgreSQL (issue 18 item 4): the group is set per
transaction (``set_config('meterhub.group_id', …, true)``), so no tenant setting survives into another client's
transaction on the same server connection, and the web app (sign-in, pages under RLS, money) works through it."""

from __future__ import annotations

import re

import psycopg2
import pytest

from meterhub.app import create_app
from meterhub.db import dispose_service_engines
from meterhub.extensions import db
from tests.conftest import Tenant, _config, csrf_token
from tests.dbtopology.pgbouncer import PgBouncer, pgbouncer_binary


@pytest.fixture(scope="module")
def bouncer(database_url, service_urls):
    binary = pgbouncer_binary()
    if binary is None:
        pytest.skip("PgBouncer is not installed and could not be installed here (apt-get install pgbouncer)")
    cfg = create_app(_config(database_url, service_urls)).config
    roles = {cfg["APP_DB_USER"]: cfg["APP_DB_PASSWORD"], cfg["SERVICE_DB_USER"]: cfg["SERVICE_DB_PASSWORD"]}
    # Two server connections at most: sequential clients share the most recently used one (PgBouncer reuses
    # LIFO). Not one: a sign-in holds two connections at once (the request's transaction, and the sign-in
    # throttle's own in meterhub/tenants/login_failures.py), which a pool of one starves until query_wait_timeout.
    made = PgBouncer(binary, database_url, roles, pool_size=2)
    yield made, cfg
    dispose_service_engines()
    made.close()


def _in_transaction(conn, sql: str, params: tuple = ()):  # noqa: ANN001, ANN202
    with conn, conn.cursor() as cur:  # psycopg2: BEGIN … COMMIT
        cur.execute(sql, params)
        return cur.fetchone()


def test_no_tenant_setting_survives_into_another_clients_transaction(bouncer, group, other_group):
    pool, cfg = bouncer
    clients = [psycopg2.connect(pool.dsn(cfg["APP_DB_USER"], cfg["APP_DB_PASSWORD"])) for _ in range(2)]
    try:
        for round_ in range(10):
            setter, reader = clients[round_ % 2], clients[1 - round_ % 2]
            tenant = (group, other_group)[round_ % 2]
            setting, pid, properties = _in_transaction(
                setter, "SELECT set_config('meterhub.group_id', %s, true), pg_backend_pid(), "
                        "(SELECT count(*) FROM properties)", (str(tenant.group_id),))
            assert properties == 2  # the group's two properties, under row-level security
            seen, reader_pid, properties = _in_transaction(
                reader, "SELECT current_setting('meterhub.group_id', true), pg_backend_pid(), "
                        "(SELECT count(*) FROM properties)")
            assert reader_pid == pid  # the same server connection served both clients
            assert seen in ("", None) and properties == 0, f"round {round_}: {seen!r} leaked, {properties} rows"
        # the control: a session-level setting (what meterhub never does) does survive, so the check above could
        # fail — and the pooled server connection is put back to a clean state
        _in_transaction(clients[0], "SELECT set_config('meterhub.group_id', %s, false)", (str(group.group_id),))
        assert _in_transaction(clients[1], "SELECT current_setting('meterhub.group_id', true)")[0] == \
            str(group.group_id)
        clients[1].autocommit = True
        clients[1].cursor().execute("DISCARD ALL")
    finally:
        for conn in clients:
            conn.close()


def test_the_app_works_through_pgbouncer(bouncer, service_urls, database_url):
    pool, cfg = bouncer
    app = create_app({**_config(database_url, service_urls),
                      "APP_DATABASE_URL": pool.url(cfg["APP_DB_USER"], cfg["APP_DB_PASSWORD"]),
                      "SERVICE_DATABASE_URL": pool.url(cfg["SERVICE_DB_USER"], cfg["SERVICE_DB_PASSWORD"])})
    try:
        first, second = Tenant(app, "pa"), Tenant(app, "pb")  # made by the service role through PgBouncer
        clients = []
        for tenant in (first, second):
            client = app.test_client()
            username, password, _ = tenant.operator("group_admin", all_properties=True)
            assert client.post("/login", data={"username": username, "password": password,
                                               "csrf_token": csrf_token(client)}).status_code == 302
            clients.append(client)
        for _ in range(5):  # requests of the two groups alternate on the one server connection
            for tenant, other, client in ((first, second, clients[0]), (second, first, clients[1])):
                page = client.get("/rooms").get_data(as_text=True)
                assert tenant.marker in page and other.marker not in page
        account_id = first.account_id  # an account with a top-up (service role, through PgBouncer)
        page = clients[0].get(f"/prepaid/accounts/{account_id}").get_data(as_text=True)
        key = re.search(r'name="key" value="(topup-[0-9a-f]+)"', page).group(1)
        token = csrf_token(clients[0], f"/prepaid/accounts/{account_id}")
        topup = clients[0].post(f"/prepaid/accounts/{account_id}/topup",
                                data={"csrf_token": token, "key": key, "amount": "12.34", "channel": "cash"})
        assert topup.status_code == 302, topup.get_data(as_text=True)
        assert "12.34" in clients[0].get(topup.location).get_data(as_text=True)
        assert clients[1].get(f"/prepaid/accounts/{account_id}").status_code == 404
        assert clients[0].get("/reports/sales").status_code == 200
    finally:
        with app.app_context():
            db.engine.dispose()
        dispose_service_engines()
