"""Payments as a plugin: the sandbox and WeChat Pay v3 providers, callback and sandbox pages, the order
expiry job and the reconciliation report.

Entry point: ``payments = "meterhub.payments.plugin"`` in the ``meterhub.plugins`` group.
"""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl
from . import models  # noqa: F401  (tables in the metadata)


@hookimpl(trylast=True)
def register_payment_providers() -> list[Any]:
    from .sandbox import SandboxProvider
    from .wechat import WechatPayV3Provider

    return [SandboxProvider(), WechatPayV3Provider()]


@hookimpl
def register_blueprints() -> list[Any]:
    from .views import bp

    return [bp]


@hookimpl
def register_jobs() -> list[dict[str, Any]]:
    return [{"name": "payments.expire_orders", "interval": 300, "callable": "meterhub.payments.plugin:expire_job"}]


@hookimpl
def register_reports() -> list[Any]:
    from .reconcile import report_definition

    return [report_definition()]


def expire_job() -> int:
    """Periodic job: mark unpaid orders past their expiry (all groups; service role)."""
    from ..db import service_session
    from .orders import expire_orders

    with service_session() as session:
        return expire_orders(session)
