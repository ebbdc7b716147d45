"""Configuration layers: defaults -> instance file (``instance/meterhub.cfg``) -> ``METERHUB_*`` env."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import make_url

from .public_url import normalize_public_base_url

DEFAULTS: dict[str, Any] = {
    "SECRET_KEY": None,  # generated into the instance folder on first start
    # Admin/migration URL: owns the tables, runs Alembic. The app itself never uses it for requests.
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/meterhub",
    # The web app's role: owns nothing, cannot bypass row-level security.
    "APP_DB_USER": "meterhub_app",
    "APP_DB_PASSWORD": "meterhub_app",
    # The service role of trusted background processes (collector, billing, CLI): BYPASSRLS.
    "SERVICE_DB_USER": "meterhub_service",
    "SERVICE_DB_PASSWORD": "meterhub_service",
    "APP_DATABASE_URL": None,  # explicit override of the derived app URL
    "SERVICE_DATABASE_URL": None,  # explicit override of the derived service URL
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "REDIS_NAMESPACE": "meterhub",  # prefix of every Redis key and rq queue (tests use their own)
    "MQTT_URL": "mqtt://127.0.0.1:1883",
    "BABEL_DEFAULT_LOCALE": "zh_CN",
    "BABEL_DEFAULT_TIMEZONE": "Asia/Shanghai",
    "LANGUAGES": ["zh_CN", "en"],
    "LOGIN_MAX_FAILURES": 5,
    "LOGIN_WINDOW_SECONDS": 900,
    # Where people and payment providers reach the platform (https://...); payment notify URLs are built from
    # it (never from a request's Host) and an https address makes every cookie Secure.
    "PUBLIC_BASE_URL": None,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_HTTPONLY": True,
    "REMEMBER_COOKIE_SAMESITE": "Lax",
    "WTF_CSRF_TIME_LIMIT": None,
    "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
    "PAGE_SIZE": 50,
    "MAX_CONTENT_LENGTH": 20 * 1024 * 1024,  # uploads (QR photos, Excel) larger than this answer 413
}


def role_url(admin_url: str, user: str, password: str) -> str:
    """Return ``admin_url`` with its user and password replaced (same host, port and database)."""
    url = make_url(admin_url).set(username=user, password=password or None)
    return url.render_as_string(hide_password=False)


def finish(config: dict[str, Any]) -> None:
    """Derive the role URLs from the admin URL unless set explicitly."""
    admin = config["DATABASE_URL"]
    if not config.get("APP_DATABASE_URL"):
        config["APP_DATABASE_URL"] = role_url(admin, config["APP_DB_USER"], config["APP_DB_PASSWORD"])
    if not config.get("SERVICE_DATABASE_URL"):
        config["SERVICE_DATABASE_URL"] = role_url(
            admin, config["SERVICE_DB_USER"], config["SERVICE_DB_PASSWORD"]
        )
    config["SQLALCHEMY_DATABASE_URI"] = config["APP_DATABASE_URL"]
    config["PUBLIC_BASE_URL"] = normalize_public_base_url(config.get("PUBLIC_BASE_URL"))
    if config["PUBLIC_BASE_URL"].startswith("https://"):
        config["SESSION_COOKIE_SECURE"] = config["REMEMBER_COOKIE_SECURE"] = True
