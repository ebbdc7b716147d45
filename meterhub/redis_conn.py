"""The Redis connection and rq queues of the app (one client per app, created lazily)."""

from __future__ import annotations

import redis
from flask import Flask, current_app
from rq import Queue

#: Every queue, most urgent first; a worker listening to several takes the first non-empty one in this order.
#: commands: relay/valve/top-up commands; default: notifications, callbacks and the coalesced event jobs
#: (someone waits for them); reports: exports and previews a person asked for; periodic: the scheduler's
#: charging, offline detection, alarms; bulk: rollups and history, long and nobody waits for them.
QUEUES = ("commands", "default", "reports", "periodic", "bulk")
URGENT, INTERACTIVE, BULK = ("commands", "default"), ("reports",), ("bulk",)


def by_urgency(names: "tuple[str, ...] | list[str]") -> list[str]:
    """``names`` in the order a worker must serve them (most urgent first; unknown names last, as given)."""
    rank = {name: i for i, name in enumerate(QUEUES)}
    return sorted(dict.fromkeys(names), key=lambda n: rank.get(n, len(rank)))


def get_redis(app: Flask | None = None) -> redis.Redis:
    """The app's Redis client."""
    app = app or current_app
    client = app.extensions.get("meterhub_redis")
    if client is None:
        client = redis.Redis.from_url(app.config["REDIS_URL"], socket_timeout=5, health_check_interval=30)
        app.extensions["meterhub_redis"] = client
    return client


def redis_key(*parts: object, app: Flask | None = None) -> str:
    """A Redis key inside the app's namespace."""
    app = app or current_app
    return ":".join([app.config["REDIS_NAMESPACE"], *map(str, parts)])


def get_queue(name: str = "default", app: Flask | None = None) -> Queue:
    """An rq queue on the app's Redis (named inside the app's namespace)."""
    return Queue(redis_key("q", name, app=app), connection=get_redis(app))
