"""Running plugin jobs in rq workers: each job is a dotted path called inside an app context."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask

log = logging.getLogger(__name__)
_app: Flask | None = None


def _worker_app() -> Flask:
    global _app  # one app per worker process, created on first job
    if _app is None:
        from .app import create_app

        _app = create_app()
    return _app


def resolve(path: str) -> Callable[..., Any]:
    """``package.module:function`` or ``package.module.function`` -> the callable."""
    module, _, name = path.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module), name)


def run(path: str, **kwargs: Any) -> Any:
    """Entry point of every enqueued job: call ``path(**kwargs)`` inside an app context."""
    from flask import current_app, has_app_context

    if has_app_context():
        return resolve(path)(**kwargs)
    with _worker_app().app_context():
        log.debug("job %s on %s", path, current_app.name)
        return resolve(path)(**kwargs)
