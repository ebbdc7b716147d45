"""Tenant context for the database: the group is set per transaction with ``SET LOCAL``.

Row-level security policies compare each row's ``group_id`` with the transaction setting
``meterhub.group_id``. The web app connects as a role that owns nothing and cannot bypass RLS, so a
missing or wrong group yields no rows even if an application filter is forgotten.
Trusted background processes (collector, billing jobs, CLI) use :func:`service_session`, bound to the
service role (BYPASSRLS), and must scope their own statements.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from flask import current_app, has_request_context
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from .errors import ConfigError
from .extensions import db

GROUP_SETTING = "meterhub.group_id"
_current_group: contextvars.ContextVar[int | None] = contextvars.ContextVar("group_id", default=None)


def current_group_id() -> int | None:
    """The group the current request or job acts for, if any."""
    return _current_group.get()


def _apply(executor: Session | Connection, group_id: int | None) -> None:
    """``SET LOCAL meterhub.group_id`` on the open transaction ('' = no group: RLS shows nothing)."""
    executor.execute(
        text("SELECT set_config(:name, :value, true)"),
        {"name": GROUP_SETTING, "value": "" if group_id is None else str(group_id)},
    )


def use_group(group_id: int | None, session: Session | scoped_session | None = None) -> None:
    """Act for ``group_id`` from now on: applied to the open transaction and every later one."""
    _current_group.set(group_id)
    if session is None or isinstance(session, scoped_session):  # db.session is a registry of sessions
        session = (session or db.session)()
    if session.in_transaction():
        _apply(session, group_id)


@event.listens_for(Session, "after_begin")
def _set_group_on_begin(session: Session, transaction, connection) -> None:  # noqa: ANN001
    if not session.info.get("service"):
        _apply(connection, _current_group.get())


_service_engines: dict[str, Engine] = {}


def _refuse_in_requests() -> None:
    """The service role bypasses RLS: a web request never uses it, so a web process needs no service password."""
    if has_request_context():
        raise ConfigError("the service database role (BYPASSRLS) is not used while serving a web request: use "
                          "db.session (the app role, under row-level security) or enqueue an rq job")


def service_engine(url: str | None = None) -> Engine:
    """The engine of the service role (one per URL, created lazily; never inside a web request)."""
    _refuse_in_requests()
    url = url or current_app.config["SERVICE_DATABASE_URL"]
    if not url:
        raise ConfigError("this process has no service database role: this is a WEB_ONLY host; run "
                          "background work (worker, scheduler, collector, CLI) where METERHUB_WEB_ONLY is unset")
    if url not in _service_engines:
        _service_engines[url] = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    return _service_engines[url]


@contextmanager
def service_session(url: str | None = None) -> Iterator[Session]:
    """A session of the service role; commits on success, rolls back on error (never inside a web request)."""
    factory = sessionmaker(bind=service_engine(url), info={"service": True}, expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_service_engines() -> None:
    """Close pooled service connections (tests dropping databases call this)."""
    for engine in _service_engines.values():
        engine.dispose()
    _service_engines.clear()
