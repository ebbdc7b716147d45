"""Alarm lifecycle: raise → acknowledge → clear with history, no duplicates while open, hook after commit."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from meterhub.alarms import KINDS, acknowledge, clear_alarm, monitor_status, raise_alarm
from meterhub.alarms.models import Alarm, AlarmEvent
from meterhub.db import service_session
from meterhub.errors import NotFound, ValidationError
from meterhub.hookspecs import hookimpl
from meterhub.plugins import get_plugin_manager
from tests.alarms.helpers import make_site


class Spy:
    def __init__(self) -> None:
        self.seen = []

    @hookimpl
    def alarm_raised(self, alarm):
        self.seen.append(alarm)


@pytest.fixture()
def spy():
    pm = get_plugin_manager()
    spy = Spy()
    pm.register(spy, name="alarm-spy")
    yield spy
    pm.unregister(spy)


def _events(s, alarm_id):
    return [e.action for e in s.execute(select(AlarmEvent).where(AlarmEvent.alarm_id == alarm_id)
                                        .order_by(AlarmEvent.id)).scalars()]


def test_lifecycle_history_and_no_duplicates(app, group, spy):
    site = make_site(app, group)
    meter = site.meters[0]
    with app.app_context():
        with service_session() as s:
            first = raise_alarm(s, site.group_id, "overload", meter_id=meter, detail={"power_kw": 9.5})
            again = raise_alarm(s, site.group_id, "overload", meter_id=meter, detail={"power_kw": 9.9})
            assert again.id == first.id and again.occurrences == 2 and again.detail["power_kw"] == 9.9
            assert first.property_id == site.property_id and first.account_id == site.account_id
            assert spy.seen == []  # not before the commit
        assert [a.id for a in spy.seen] == [first.id] and spy.seen[0].kind == "overload"
        with service_session() as s:
            acked = acknowledge(s, site.group_id, first.id, operator_id=7, actor="alice", note="on my way")
            assert acked.state == "acknowledged" and acked.acknowledged_by == 7
            assert acked.acknowledged_by_name == "alice" and acked.acknowledged_at is not None
            # still open: a new raise does not make a second alarm
            assert raise_alarm(s, site.group_id, "overload", meter_id=meter).id == first.id
        with service_session() as s:
            cleared = clear_alarm(s, site.group_id, "overload", meter_id=meter, actor="poll")
            assert cleared.state == "cleared" and cleared.cleared_by == "poll"
            assert clear_alarm(s, site.group_id, "overload", meter_id=meter) is None
            with pytest.raises(ValidationError):
                acknowledge(s, site.group_id, first.id, operator_id=7, actor="alice")
            assert _events(s, first.id) == ["raised", "acknowledged", "cleared"]
        with service_session() as s:
            second = raise_alarm(s, site.group_id, "overload", meter_id=meter)
            assert second.id != first.id and second.state == "active"
        assert [a.id for a in spy.seen] == [first.id, second.id]


def test_partial_unique_index_refuses_a_second_open_alarm(app, group):
    site = make_site(app, group, account=False)
    with app.app_context(), service_session() as s:
        alarm = raise_alarm(s, site.group_id, "offline", meter_id=site.meters[0])
        with pytest.raises(IntegrityError), s.begin_nested():
            s.execute(text(
                "INSERT INTO alarms (group_id, property_id, kind, state, subject_key, detail, occurrences, raised_at,"
                " last_seen_at, acknowledged_by_name, cleared_by) SELECT group_id, property_id, kind, 'acknowledged',"
                " subject_key, '{}', 1, now(), now(), '', '' FROM alarms WHERE id = :id"), {"id": alarm.id})


def test_rollback_fires_no_hook_and_unknown_subjects_fail(app, group, other_group, spy):
    site = make_site(app, group, account=False)
    with app.app_context():
        with pytest.raises(RuntimeError), service_session() as s:
            raise_alarm(s, site.group_id, "offline", meter_id=site.meters[0])
            raise RuntimeError("boom")
        assert spy.seen == []
        with service_session() as s:
            assert s.execute(select(Alarm).where(Alarm.meter_id == site.meters[0])).first() is None
            with pytest.raises(NotFound):  # another group's meter is not a subject of this group
                raise_alarm(s, other_group.group_id, "offline", meter_id=site.meters[0])
            with pytest.raises(ValueError):
                raise_alarm(s, site.group_id, "no_such_kind", meter_id=site.meters[0])


def test_monitor_status_priority_and_colour(app, group):
    site = make_site(app, group)
    m1, m2 = site.meters
    with app.app_context(), service_session() as s:
        raise_alarm(s, site.group_id, "low_balance_1", account_id=site.account_id)  # account of m1
        raise_alarm(s, site.group_id, "abnormal_usage", meter_id=m2)
        status = monitor_status(s, site.group_id, [m1, m2])
        assert status[m1] == {"kind": "low_balance_1", "status": "alarm1", "colour": KINDS["low_balance_1"].colour}
        raise_alarm(s, site.group_id, "offline", meter_id=m1)
        assert monitor_status(s, site.group_id, [m1, m2])[m1]["status"] == "offline"
        assert monitor_status(s, site.group_id, [m1, m2])[m2]["kind"] == "abnormal_usage"
