"""Finding 9: no default credentials. Role passwords are generated per instance, the embedded PostgreSQL
asks every TCP login for a SCRAM-SHA-256 password (the superuser too), and no web request uses the
service role (BYPASSRLS)."""

from __future__ import annotations

import stat
from urllib.parse import urlsplit

import psycopg2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from meterhub.app import create_app
from meterhub.config import DEFAULTS
from meterhub.errors import ConfigError
from meterhub.services import resolve_postgres
from meterhub.services.postgres import HBA, PASSWORD_FILE


def _refused(url: str, **overrides: str) -> str:
    """The server's answer to a login with ``overrides`` applied to ``url``'s parts (must be a refusal)."""
    parts = urlsplit(url)
    params = {"host": parts.hostname, "port": parts.port, "user": parts.username, "password": parts.password,
              "dbname": parts.path.lstrip("/"), "connect_timeout": 5, **overrides}
    with pytest.raises(psycopg2.OperationalError) as caught:
        psycopg2.connect(**params).close()
    return str(caught.value)


def _assert_scram_everywhere(url: str, roles: tuple[str, ...] = ("postgres",)) -> None:
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT type, auth_method FROM pg_hba_file_rules WHERE error IS NULL")
            rules = cur.fetchall()
            cur.execute("SELECT rolname, left(rolpassword, 14) FROM pg_authid WHERE rolcanlogin")
            passwords = dict(cur.fetchall())
    finally:
        conn.close()
    assert rules and {method for _, method in rules} == {"scram-sha-256"}, rules
    for role in roles:
        assert passwords[role] == "SCRAM-SHA-256$", (role, passwords[role])
    for role in roles:  # a wrong password, the old default, and none at all are refused, superuser included
        for wrong in ("wrong", "meterhub_app", "meterhub_service"):
            assert "password authentication failed" in _refused(url, user=role, password=wrong)
        assert "no password supplied" in _refused(url, user=role, password="")


@pytest.mark.embedded
def test_embedded_postgres_asks_every_tcp_login_for_its_password(tmp_path):
    instance = tmp_path / "instance"
    pg = resolve_postgres(None, instance, allow_local=False, port=0)
    try:
        password_file = instance / "postgres" / PASSWORD_FILE
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert make_url(pg.url).password == password_file.read_text().strip()
        assert (instance / "postgres" / "data" / "pg_hba.conf").read_text() == HBA

        # The roles meterhub creates get generated SCRAM passwords as well.
        app = create_app({"TESTING": True, "SECRET_KEY": "x", "DATABASE_URL": pg.url})
        from meterhub.rls import ensure_roles

        admin = create_engine(pg.url)
        with admin.begin() as conn:
            ensure_roles(conn, app.config["APP_DB_USER"], app.config["APP_DB_PASSWORD"],
                         app.config["SERVICE_DB_USER"], app.config["SERVICE_DB_PASSWORD"])
        admin.dispose()
        _assert_scram_everywhere(pg.url, ("postgres", "meterhub_app", "meterhub_service"))
        for key in ("APP_DATABASE_URL", "SERVICE_DATABASE_URL"):  # the right password gets in
            with psycopg2.connect(app.config[key], connect_timeout=5) as conn, conn.cursor() as cur:
                cur.execute("SELECT current_user")
                assert cur.fetchone()[0] == make_url(app.config[key]).username
            conn.close()
    finally:
        pg.stop()


@pytest.mark.embedded
def test_a_cluster_that_trusted_loopback_gets_a_password_before_it_listens(tmp_path):
    instance = tmp_path / "instance"
    pg = resolve_postgres(None, instance, allow_local=False, port=0)
    pg.stop()
    data = instance / "postgres" / "data"
    # What an older meterhub left: trust for every loopback login, a superuser without a password.
    (data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    (instance / "postgres" / PASSWORD_FILE).unlink()
    again = resolve_postgres(None, instance, allow_local=False, port=0)
    try:
        assert make_url(again.url).password == (instance / "postgres" / PASSWORD_FILE).read_text().strip()
        _assert_scram_everywhere(again.url)
    finally:
        again.stop()


def test_role_passwords_are_generated_per_instance_never_the_old_defaults(tmp_path, database_url, monkeypatch):
    assert DEFAULTS["APP_DB_PASSWORD"] is None and DEFAULTS["SERVICE_DB_PASSWORD"] is None

    def make(instance: str):
        monkeypatch.setenv("METERHUB_INSTANCE_PATH", str(tmp_path / instance))
        return create_app({"TESTING": True, "SECRET_KEY": "x", "DATABASE_URL": database_url})

    first, again, other = make("a"), make("a"), make("b")
    for key, name in (("APP_DB_PASSWORD", "app_db_password"), ("SERVICE_DB_PASSWORD", "service_db_password")):
        path = tmp_path / "a" / name
        assert first.config[key] == path.read_text().strip() and len(first.config[key]) >= 40
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert make_url(first.config[key.replace("DB_PASSWORD", "DATABASE_URL")]).password == first.config[key]
        assert again.config[key] == first.config[key] != other.config[key]
    assert first.config["APP_DB_PASSWORD"] != first.config["SERVICE_DB_PASSWORD"]
    assert (tmp_path / "a" / "audit_key").stat().st_mode & 0o077 == 0


def test_a_configured_role_url_rules_and_a_web_only_host_has_no_service_role(database_url):
    url = make_url(database_url).set(username="meterhub_app", password="from-the-vault").render_as_string(False)
    app = create_app({"TESTING": True, "SECRET_KEY": "x", "DATABASE_URL": database_url, "APP_DATABASE_URL": url,
                      "WEB_ONLY": True})
    assert app.config["APP_DB_PASSWORD"] == "from-the-vault"
    assert app.config["SERVICE_DATABASE_URL"] is None and app.config["SERVICE_DB_PASSWORD"] is None
    from meterhub.db import service_session

    with app.app_context(), pytest.raises(ConfigError, match="WEB_ONLY"), service_session():
        pass


def test_no_web_request_uses_the_service_role(app, database_url):
    from meterhub.db import service_session

    with app.test_request_context("/"), pytest.raises(ConfigError, match="not used while serving a web request"):
        with service_session():
            pass
    with app.app_context(), service_session() as session:  # jobs and CLI commands still do
        assert session.execute(text("SELECT current_user")).scalar() == "meterhub_service"
