"""Configuration layers: defaults -> instance file (``instance/meterhub.cfg``) -> ``METERHUB_*`` env."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import make_url

from .public_url import normalize_public_base_url

from .errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "SECRET_KEY": None,  # generated into the instance folder on first start
    # Admin/migration URL: owns the tables, runs Alembic. The app itself never uses it for requests.
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/meterhub",
    # The web app's role: owns nothing, cannot bypass row-level security. No default password: unless set,
    # one is generated into instance/app_db_password on first start (``db upgrade`` gives it to the role).
    "APP_DB_USER": "meterhub_app",
    "APP_DB_PASSWORD": None,
    # The service role of trusted background processes (collector, billing, CLI): BYPASSRLS. Same rule
    # (instance/service_db_password). Never used while serving a web request (see meterhub.db).
    "SERVICE_DB_USER": "meterhub_service",
    "SERVICE_DB_PASSWORD": None,
    "APP_DATABASE_URL": None,  # explicit override of the derived app URL (its password then rules)
    "SERVICE_DATABASE_URL": None,  # explicit override of the derived service URL (its password then rules)
    # The audit log's HMAC key (no database role holds it): unless set, generated into instance/audit_key.
    # Every host of one deployment must use the same key (set it, or share the file).
    "AUDIT_KEY": None,
    # A host that only serves the web (console, portal, API) needs no service role: with WEB_ONLY it gets none
    # (no password read or generated), and meterhub.db refuses the service role in requests anyway.
    "WEB_ONLY": False,
    "AUDIT_ANCHOR_DIR": None,  # where audit checkpoints are written (default instance/audit_anchors)
    # A hot-standby replica for reports, dashboards and exports (meterhub.replica); money and commands never use it.
    "REPLICA_DATABASE_URL": None,
    "REPLICA_MAX_LAG_SECONDS": 300,  # further behind than this, the same reads go to the primary
    "EXPORT_KEEP_DAYS": 7,  # report export files (stored in the database) are deleted after this many days
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "REDIS_NAMESPACE": "meterhub",  # prefix of every Redis key and rq queue (tests use their own)
    "MQTT_URL": "mqtt://127.0.0.1:1883",  # without a user: the instance's MQTT service user (docs/mqtt_auth.md)
    # readings dated further ahead, before this time or before their meter's installation are refused
    "READING_MAX_FUTURE_MINUTES": 5,
    "READING_EARLIEST": "2000-01-01T00:00:00+00:00",
    "BABEL_DEFAULT_LOCALE": "zh_CN",
    "BABEL_DEFAULT_TIMEZONE": "Asia/Shanghai",
    "LANGUAGES": ["zh_CN", "en"],
    "LOGIN_MAX_FAILURES": 5,
    "LOGIN_WINDOW_SECONDS": 900,
    # Where people and payment providers reach the platform (https://...); payment notify URLs are built from
    # it (never from a request's Host) and an https address makes every cookie Secure.
    "PUBLIC_BASE_URL": None,
    # Reverse proxies in front of the web processes (HAProxy, nginx) whose X-Forwarded-For/-Proto are trusted:
    # 0 = none (a client's own header is never believed); 1 = one load balancer.
    "TRUSTED_PROXIES": 0,
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


def _role(config: dict[str, Any], prefix: str, instance_path: str | None) -> None:
    """Fill ``<prefix>_DATABASE_URL`` and the role's user/password: an explicit URL wins (its password is the
    role's), else the configured password, else one generated into the instance folder."""
    from .instance_secrets import instance_secret

    url_key, user_key, password_key = f"{prefix}_DATABASE_URL", f"{prefix}_DB_USER", f"{prefix}_DB_PASSWORD"
    if config.get(url_key):
        url = make_url(config[url_key])
        config[user_key] = url.username or config[user_key]
        config[password_key] = url.password  # None: the role's password is managed outside meterhub
        return
    if not config.get(password_key):
        if instance_path is None:
            raise ConfigError(f"{password_key} is not set and there is no instance folder to generate it into: "
                              f"set METERHUB_{password_key} or METERHUB_{url_key}")
        config[password_key] = instance_secret(instance_path, f"{prefix.lower()}_db_password")
    config[url_key] = role_url(config["DATABASE_URL"], config[user_key], config[password_key])


def finish(config: dict[str, Any], instance_path: str | None = None) -> None:
    """Derive the role URLs from the admin URL unless set explicitly (passwords: see :func:`_role`)."""
    _role(config, "APP", instance_path)
    if not config.get("WEB_ONLY"):
        _role(config, "SERVICE", instance_path)
    config["SQLALCHEMY_DATABASE_URI"] = config["APP_DATABASE_URL"]
    config["PUBLIC_BASE_URL"] = normalize_public_base_url(config.get("PUBLIC_BASE_URL"))
    if config["PUBLIC_BASE_URL"].startswith("https://"):
        config["SESSION_COOKIE_SECURE"] = config["REMEMBER_COOKIE_SECURE"] = True
