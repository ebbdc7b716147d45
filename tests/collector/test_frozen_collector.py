"""A collector frozen inside its store transaction (SIGSTOP, swapped out) keeps its gateways' rows locked: the
liveness check must neither hang on them (it held up the periodic queue for 58 s in the chaos suite, so
"collector down" was never marked) nor wait forever — PostgreSQL ends such a transaction after a while."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from sqlalchemy import event, text

from meterhub.collector import liveness, store
from meterhub.collector.store import Pending, StorageSink
from meterhub.db import service_engine
from tests.alarms.helpers import make_site


def test_the_liveness_check_does_not_hang_on_a_locked_gateway_row(app, group):
    from meterhub.collector.jobs import namespace
    from meterhub.redis_conn import get_redis

    gateway_id = make_site(app, group, account=False).gateway_id
    with app.app_context():
        get_redis().hset(liveness.alive_key(namespace()), str(gateway_id), f"{time.time():.3f}|collector:test")
        engine = service_engine()
        answer: list[int] = []

        def check() -> None:
            with app.app_context():
                answer.append(liveness.check_job())

        with engine.connect() as holder:  # the frozen collector's open transaction
            holder.begin()
            holder.execute(text("UPDATE gateways SET last_seen_at = now() WHERE id = :g"), {"g": gateway_id})
            thread = threading.Thread(target=check, daemon=True)
            thread.start()
            thread.join(15)
            waiting = thread.is_alive()
            holder.rollback()
        thread.join(10)
        assert not waiting, "the liveness check waited on the locked row"
        assert answer == [0]  # it gave up this round; the next check marks the gateway
        get_redis().hdel(liveness.alive_key(namespace()), str(gateway_id))


def test_a_frozen_store_transaction_is_ended_and_its_rows_freed(app, group, monkeypatch):
    gateway_id = make_site(app, group, account=False).gateway_id
    monkeypatch.setattr(store, "HELD_ROWS_TIMEOUT", "1s", raising=False)
    with app.app_context():
        engine = service_engine()
        sink = StorageSink(engine)
        frozen = threading.Event()

        def freeze_after_gateways(conn, cursor, statement, parameters, context, executemany) -> None:
            if frozen.is_set() or "UPDATE gateways" not in statement:
                return
            frozen.set()
            time.sleep(4)  # the collector stops here, its transaction open, the gateway row locked

        event.listen(engine, "after_cursor_execute", freeze_after_gateways)
        failure: list[BaseException] = []

        def write() -> None:
            try:
                sink.write(Pending(gateway_seen={gateway_id: datetime.now(UTC)}))
            except BaseException as err:  # noqa: BLE001 - PostgreSQL ended the frozen transaction
                failure.append(err)

        thread = threading.Thread(target=write)
        try:
            thread.start()
            assert frozen.wait(10)
            started = time.monotonic()
            with engine.begin() as other:
                other.execute(text("SET LOCAL lock_timeout = '3s'"))
                other.execute(text("UPDATE gateways SET collector_state = 'down' WHERE id = :g"), {"g": gateway_id})
            assert time.monotonic() - started < 3.5, "the row was freed when PostgreSQL ended the transaction"
            thread.join(10)
            assert failure, "the frozen transaction was ended by PostgreSQL"
        finally:
            event.remove(engine, "after_cursor_execute", freeze_after_gateways)
            thread.join(10)


