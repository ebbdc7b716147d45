"""An alarm's history reads as labelled, formatted text in the reader's language: "Balance ¥6.00 · Alarm level 1"
(余额 ¥6.00 · 一级报警), never ``balance=6.00, level=1``; the engine's clear notes too; typed notes as typed."""

from __future__ import annotations

from flask_babel import force_locale
from sqlalchemy import select

from meterhub.alarms import acknowledge, raise_alarm
from meterhub.alarms.models import AlarmEvent
from meterhub.alarms.sources import apply_level
from meterhub.db import service_session
from meterhub.i18n import shown
from tests.api.world import open_site


def _notes(app, alarm_id: int, locale: str) -> list[str]:
    with app.app_context(), service_session() as s, force_locale(locale):
        return [shown(e.note) for e in s.execute(select(AlarmEvent).where(AlarmEvent.alarm_id == alarm_id)
                                                  .order_by(AlarmEvent.id)).scalars()]


def test_history_notes_read_in_each_language(app, client, group, operator):
    site = open_site(app, group)
    with app.app_context(), service_session() as s:
        low = raise_alarm(s, group.group_id, "low_balance_1", account_id=site.account_id,
                          detail={"balance": "1234.5", "level": 1})
        acknowledge(s, group.group_id, low.id, operator_id=None, actor="ops", note="called the shop")
        apply_level(s, group.group_id, site.account_id, 0, None)  # topped up: the level-1 alarm clears
        offline = raise_alarm(s, group.group_id, "offline", meter_id=site.meter_id,
                              detail={"since": "2026-12-07T05:30:12.123456+00:00"})
        low_id, offline_id = low.id, offline.id
    assert _notes(app, low_id, "zh_CN") == ["余额 ¥1,234.50 · 一级报警", "called the shop", "恢复正常"]
    assert _notes(app, low_id, "en") == ["Balance ¥1,234.50 · Alarm level 1", "called the shop", "Back to normal"]
    assert _notes(app, offline_id, "en") == ["Since 2026-12-07 05:30 UTC"]

    operator("group_admin", all_properties=True)
    page = client.get(f"/alarms/{low_id}", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "余额 ¥1,234.50 · 一级报警" in page and "balance=" not in page and "i18n:" not in page
    assert "一级报警" in page.split("余额 ¥1,234.50")[0]  # the detail panel names the level too
