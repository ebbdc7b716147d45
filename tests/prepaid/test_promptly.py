"""Event-driven follow-ups: a stored reading is charged and its trip handed to rq at once; a top-up hands its
switch-on over at once; a relay command waiting for a retry is retried when its meter answers again."""

from __future__ import annotations

import pytest

import time
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from meterhub.alarms.models import Alarm
from meterhub.alarms.sources import poll_events
from meterhub.commands.models import Command
from meterhub.db import service_session
from meterhub.modules.prepaid import cashier, promptly
from meterhub.modules.prepaid.events import notify_balance
from meterhub.modules.prepaid.models import PrepaidAccount
from meterhub.redis_conn import get_queue
from meterhub.timeseries.ingest import notify_stored
from tests.alarms.conftest import run_jobs

from .conftest import EPOCH, write_readings
from .test_control import setup_account


def _last_relay_command(s, meter_id: int) -> Command:
    return s.execute(select(Command).where(Command.meter_id == meter_id, Command.kind == "switch")
                     .order_by(Command.id.desc()).limit(1)).scalar_one()


@pytest.fixture(autouse=True)
def _empty_queues(app):
    """Start from empty queues and no waiting marks: other tests of the run leave unconsumed jobs behind (no worker
    runs in the suite), and a mark expires after a minute, so counting jobs needs a clean start."""
    from meterhub import soon
    from meterhub.redis_conn import get_redis

    with app.app_context():
        for queue in ("default", "commands", "periodic"):
            get_queue(queue).empty()
        client, prefix = get_redis(), soon._keys("")[0]  # every path's mark (alarm events, notifications, ...)
        for key in list(client.scan_iter(match=f"{prefix}*")):
            client.delete(key)
    yield


def _soon_jobs(app, queue: str, path: str) -> int:
    with app.app_context():
        return sum(1 for job in get_queue(queue).get_jobs() if job.kwargs.get("target") == path)


def test_stored_reading_is_charged_tripped_and_alarmed_without_waiting_for_the_periodic_jobs(world):
    app, meter = world.app, world.meters[0]
    account_id = setup_account(world, [meter], topup="10.00")
    with app.app_context(), service_session() as s:
        write_readings(s, world.group_id, [(meter, EPOCH + timedelta(minutes=30), Decimal("11"))])  # 11.00 > 10.00
    with app.app_context():
        notify_stored({world.group_id: {meter}})  # what the ingest fires after its commit
        notify_stored({world.group_id: {meter}})  # a second batch joins the waiting job
    assert _soon_jobs(app, "periodic", promptly.CHARGE_STORED) == 1  # the charging worker's queue
    assert run_jobs(app, "periodic") == 1  # the charge
    assert run_jobs(app) >= 1  # the balance alarms it asked for
    with app.app_context(), service_session() as s:
        assert s.get(PrepaidAccount, account_id).alarm_level == 3
        command = _last_relay_command(s, meter)
        assert command.params == {"closed": False} and command.state == "queued"
        assert command.job_id, "the switch-off was not handed to rq at once"
        assert command.job_id in [j.id for j in get_queue("commands").get_jobs()]
    for _ in range(20):  # an event is read once every older transaction of the server has ended (watermarks)
        with app.app_context(), service_session() as s:
            alarms = list(s.execute(select(Alarm.kind).where(Alarm.account_id == account_id,
                                                              Alarm.state == "active")).scalars())
        if alarms:
            break
        with app.app_context():
            poll_events()
        time.sleep(0.2)
    assert alarms == ["arrears"]


def test_topup_hands_the_switch_on_over_at_once(world):
    app, meter = world.app, world.meters[0]
    account_id = setup_account(world, [meter], topup="10.00")
    with app.app_context(), service_session() as s:
        result = cashier.topup(s, world.group_id, account_id, "5.00", "cash", "promptly-1", actor="t")
        assert _last_relay_command(s, meter).job_id is None  # queued by the control loop, not yet handed over
    with app.app_context():
        notify_balance(world.group_id, account_id, result.balance)  # what the console does after its commit
    assert _soon_jobs(app, "commands", promptly.HAND_OVER_ACCOUNTS) == 1
    with app.app_context():
        get_queue("commands").empty()
        assert promptly.hand_over_accounts()  # the job's work
        with service_session() as s:
            command = _last_relay_command(s, meter)
            assert command.params == {"closed": True} and command.job_id
        assert promptly.hand_over_accounts() == []  # nothing requested since


def test_relay_command_waiting_for_a_retry_is_retried_when_its_meter_answers(world):
    app, meter = world.app, world.meters[0]
    setup_account(world, [meter], topup="10.00")
    with app.app_context(), service_session() as s:
        command = _last_relay_command(s, meter)
        command.attempts = 1  # it was sent while the meter was silent and waits 10 s for its next try
        command_id = command.id
    with app.app_context():
        with service_session() as s:
            assert promptly.retry_waiting(s, [meter]) == [command_id]
        with service_session() as s:
            assert s.get(Command, command_id).job_id in [j.id for j in get_queue("commands").get_jobs()]
        with service_session() as s:
            assert promptly.retry_waiting(s, [world.meters[1]]) == []


def test_the_hand_over_job_sends_the_commands_itself(world):
    """The hand-over after a top-up runs on the commands queue: it sends the commands in its own job instead of
    queueing a second job behind whatever waits there (issue 19: a top-up to relay closed)."""
    from rq import SimpleWorker

    from meterhub.redis_conn import get_redis

    app, meter = world.app, world.meters[0]
    account_id = setup_account(world, [meter], topup="10.00")
    with app.app_context(), service_session() as s:
        result = cashier.topup(s, world.group_id, account_id, "5.00", "cash", "promptly-here", actor="t")
    with app.app_context():
        notify_balance(world.group_id, account_id, result.balance)
        (job,) = [j for j in get_queue("commands").get_jobs() if j.kwargs.get("target") == promptly.HAND_OVER_ACCOUNTS]
        SimpleWorker([get_queue("commands")], connection=get_redis()).execute_job(job, get_queue("commands"))
        with service_session() as s:
            command = _last_relay_command(s, meter)
            assert command.attempts == 1, "sent by the hand-over job itself"  # no meter answers here: a retry waits
        waiting = [j for j in get_queue("commands").get_jobs() if j.kwargs.get("command_id") == command.id
                   or command.id in (j.kwargs.get("command_ids") or [])]
        assert waiting == [], "no second job queued for it at once (its retry is scheduled, not queued)"


def test_commands_handed_over_together_run_side_by_side_in_one_job(world):
    """A burst of commands (trips decided together) is one rq job that runs each as ``execute`` does, not one
    forked job per command served one after another (issue 19: 60 trips took 18-30 s)."""
    from rq import SimpleWorker

    from meterhub.commands import worker
    from meterhub.redis_conn import get_redis

    app = world.app
    for meter in world.meters[:2]:
        setup_account(world, [meter], topup="10.00")
    with app.app_context(), service_session() as s:
        ids = [_last_relay_command(s, meter).id for meter in world.meters[:2]]
        for command_id in ids:
            s.get(Command, command_id).enqueued_at = None
    with app.app_context():
        get_queue("commands").empty()
        worker.enqueue(ids)
        (job,) = get_queue("commands").get_jobs()
        assert job.kwargs == {"command_ids": ids}
        with service_session() as s:
            assert {s.get(Command, c).job_id for c in ids} == {job.id}
        SimpleWorker([get_queue("commands")], connection=get_redis()).execute_job(job, get_queue("commands"))
        with service_session() as s:
            for command_id in ids:  # each was sent (no meter answers here: each waits for its own retry)
                command = s.get(Command, command_id)
                assert command.attempts == 1 and command.state == "queued" and command.error, command.state
        assert [j.id for j in get_queue("commands").get_jobs() if j.id != job.id] == []  # retries are scheduled
