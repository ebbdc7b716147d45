"""Event jobs: a periodic job's work queued right after the commit that needs it, coalesced.

    request("meterhub.alarms.sources:poll_events")                            # prepaid/health events written
    request("meterhub.modules.prepaid.jobs:charge_stored", queue="periodic", items=meter_ids)  # readings stored

At most one job per path waits in its queue: a request while one waits joins it (its ``items`` go to a set the
job takes when it starts, :func:`take`), so a burst of commits costs one run; the job clears its mark before it
takes the items, so a request made while a run is under way queues the next run and is never lost. The
periodic job stays as the safety net (Redis unreachable, a lost job): a failed request is logged, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import redis

log = logging.getLogger(__name__)
MARK_TTL_S = 60  # a mark older than this (its job lost) no longer holds requests back
ITEMS_TTL_S = 3600


def _keys(path: str) -> tuple[str, str]:
    from .redis_conn import redis_key

    return redis_key("soon", path), redis_key("soon", path, "items")


def request(path: str, *, queue: str = "default", items: Iterable[int] = (), strict: bool = False) -> bool:
    """Queue ``path()`` to run soon (through :func:`run`) unless a run of it is already waiting; True if queued.
    ``strict``: a Redis error is raised (the caller has its own fallback) instead of logged.

    The job goes to the front of its queue: it is short and someone waits for it, while a burst of notification
    deliveries or exports can hold the queue for a minute."""
    from .redis_conn import get_queue, get_redis

    mark, pending = _keys(path)
    try:
        client = get_redis()
        values = [int(i) for i in items]
        if values:
            pipe = client.pipeline(transaction=False)
            pipe.sadd(pending, *values)
            pipe.expire(pending, ITEMS_TTL_S)
            pipe.execute()
        if not client.set(mark, "1", nx=True, ex=MARK_TTL_S):
            return False
        get_queue(queue).enqueue("meterhub.jobs.run", "meterhub.soon:run", target=path, job_timeout=300,
                                 result_ttl=60, failure_ttl=3600, description=f"soon: {path}", at_front=True)
        return True
    except (redis.RedisError, RuntimeError) as err:  # Redis unreachable; no app context
        if strict:
            raise
        log.warning("%s not queued now (%s: %s); its periodic job will do it", path, type(err).__name__, err)
        return False


def take(path: str) -> list[int]:
    """The items requested for ``path`` since the last take (and forget them)."""
    from .redis_conn import get_redis

    _, pending = _keys(path)
    pipe = get_redis().pipeline(transaction=True)
    pipe.smembers(pending)
    pipe.delete(pending)
    members, _ = pipe.execute()
    return sorted(int(m) for m in members)


def run(target: str) -> Any:
    """The queued job: clear the mark (a request from now on queues the next run), then call ``target()``."""
    from .jobs import resolve
    from .redis_conn import get_redis

    get_redis().delete(_keys(target)[0])
    return resolve(target)()
