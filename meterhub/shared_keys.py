"""Every process of one deployment signs with the same keys: the session ``SECRET_KEY`` (sessions, CSRF tokens)
and the ``AUDIT_KEY``. On one host they are generated into the instance folder; on several hosts they must be
set in shared configuration (``METERHUB_SECRET_KEY``, ``METERHUB_AUDIT_KEY``, or the same ``meterhub.cfg``), or a
sign-in on one web process is unknown to the next behind the load balancer.

``meterhub web`` and ``meterhub worker`` publish a fingerprint of each key in Redis (HMAC of a fixed text,
never the key) and log an error naming the key when another process of the deployment published a different
one. The newest process's fingerprint is kept, so a deliberate rotation on every host warns only while hosts
disagree.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

import redis
from flask import Flask

from .redis_conn import get_redis

log = logging.getLogger(__name__)


def fingerprint(key: str | bytes) -> str:
    """A short public fingerprint of ``key`` (HMAC-SHA256 of a fixed text; reveals nothing of the key)."""
    raw = key.encode() if isinstance(key, str) else key
    return hmac.new(raw, b"meterhub shared key fingerprint", hashlib.sha256).hexdigest()[:16]


def check_shared_keys(app: Flask) -> list[str]:
    """Compare this process's key fingerprints with the deployment's; log an error per key that differs and
    publish ours. Returns the names of the keys that differ (empty when Redis cannot be reached)."""
    from .tenants.audit import audit_key

    ours = {"SECRET_KEY": fingerprint(app.config["SECRET_KEY"]), "AUDIT_KEY": fingerprint(audit_key(app))}
    name = f"{app.config['REDIS_NAMESPACE']}:deployment:key_fingerprints"
    try:
        client = get_redis(app)
        known = {k.decode(): v.decode() for k, v in client.hgetall(name).items()}
        client.hset(name, mapping=ours)
    except redis.RedisError as err:
        log.warning("could not compare this process's keys with the deployment's (Redis: %s)", err)
        return []
    differ = [key for key, value in ours.items() if known.get(key) not in (None, value)]
    for key in differ:
        log.error("this process's %s differs from the one another process of this deployment (Redis namespace %s) "
                  "uses: sign-ins, CSRF tokens or the audit chain break across hosts. Set METERHUB_%s to the same "
                  "value on every host (see docs/deploy.md)", key, app.config["REDIS_NAMESPACE"], key)
    return differ
