"""Every alarm is read in the reader's language: its kind, its detail and its reason on the console's pages (the
operator's language), in the portal (the tenant's) and in notifications (the notifier's ``locale`` setting, else
the default locale, zh_CN in production). A reason is a code of ``meterhub.commands.messages`` stored with its
parameters (``reason_code``/``reason_params``), translated when shown or sent; an alarm raised before keeps its text.

Checked kind by kind and reason code by reason code (a new kind or code without a zh_CN rendering fails here), the
raise sites are scanned (known kinds, labelled detail keys, no reason as bare text), and the real paths that raise
"top-up not on the meter" store their code. The subject's names are made Chinese first, so that any English word
left on a page or in a message is one of ours."""

from __future__ import annotations

import ast
import html
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask_babel import force_locale
from sqlalchemy import select, text

from meterhub.alarms import raise_alarm
from meterhub.alarms.dispatch import plan
from meterhub.alarms.kinds import KINDS
from meterhub.alarms.models import Alarm, AlarmEvent, NotificationLog, NotifierConfig, PortalMessage
from meterhub.alarms.texts import CODE_KEYS, reason_fields, reason_text
from meterhub.commands.messages import MESSAGES, _msgid, describe, failure
from meterhub.db import service_session
from meterhub.i18n import shown
from meterhub.labels import LABELS
from meterhub.models import utcnow
from tests.alarms.helpers import make_site

ROOT = Path(__file__).resolve().parents[2]
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
CJK = re.compile(r"[\u4e00-\u9fff]")
WORD = re.compile(r"(?<![\w.@/-])[A-Za-z]{2,}(?![\w@/-])")
UNITS = {"kW", "kWh", "UTC", "SMTP", "Webhook", "Modbus", "QR"}  # units, a time zone, protocol names: not words to translate
SINCE = "2026-12-07T05:30:12.123456+00:00"
#: A detail like each kind's source writes (subject, detail); a new kind fails here until it has one.
SAMPLES = {
    "low_balance_1": ("account", {"balance": "6.00", "level": 1}),
    "low_balance_2": ("account", {"balance": "1.50", "level": 2}),
    "arrears": ("account", {"balance": "-3.20", "level": 3}),
    "overload": ("meter", {"power_kw": 7.5, "limit_kw": 5}),
    "offline": ("meter", {"since": SINCE}),
    "comm_fault": ("device", {"since": SINCE}),
    "collector_down": ("gateway", {"since": SINCE}),
    "purchase_mismatch": ("meter", {"meter_count": 3, "our_count": 4}),
    "topup_not_on_meter": ("meter", {"amount": "50.00", "meter_count": None, "our_count": 3, "command_id": 1,
                                     **reason_fields(failure("topup.meter_reset", meter_count=0, counts="1, 2"))}),
    "valve_fault": ("meter", {"valve_open": True, "wanted_open": False}),
    "abnormal_usage": ("meter", {"usage": "12.500", "baseline": "1.200", "night": "2026-12-07"}),
}


def english_words(value: str) -> list[str]:
    return [w for w in WORD.findall(html.unescape(value)) if w not in UNITS]


def _params(code: str) -> dict:
    return {name: "valve" if name == "command" else "7" for name in re.findall(r"%\((\w+)\)s", _msgid(code))}


def chinese_names(app, site) -> None:
    """Name the site's group, property, building, room, tenant, meters, gateway and devices in Chinese."""
    with app.app_context(), service_session() as s:
        g = {"g": site.group_id}
        s.execute(text("UPDATE groups SET name = '华南物业' WHERE id = :g"), g)
        s.execute(text("UPDATE properties SET name = '一号园区' WHERE group_id = :g"), g)
        s.execute(text("UPDATE buildings SET name = '甲栋' WHERE group_id = :g"), g)
        s.execute(text("UPDATE rooms SET number = '101' WHERE group_id = :g"), g)
        s.execute(text("UPDATE prepaid_accounts SET customer_name = '张三商铺' WHERE group_id = :g"), g)
        s.execute(text("UPDATE meters SET name = '电表' || id WHERE group_id = :g"), g)
        s.execute(text("UPDATE gateways SET name = '网关' || id WHERE group_id = :g"), g)
        s.execute(text("UPDATE devices SET serial = '8800' || id WHERE group_id = :g"), g)


@pytest.fixture()
def site(app, group):
    site = make_site(app, group)
    chinese_names(app, site)
    return site


def _subject(site, group, subject: str) -> dict:
    return {"meter": {"meter_id": site.meters[0]}, "account": {"account_id": site.account_id},
            "device": {"device_id": group.device_id}, "gateway": {"gateway_id": site.gateway_id}}[subject]


def _raise(app, site, group, kind: str, detail: dict | None = None) -> int:
    subject, sample = SAMPLES[kind]
    with app.app_context(), service_session() as s:
        s.execute(text("UPDATE alarms SET state = 'cleared' WHERE group_id = :g AND kind = :k"),
                  {"g": site.group_id, "k": kind})
        return raise_alarm(s, site.group_id, kind, detail=detail or sample, **_subject(site, group, subject)).id


def _panel(page: str) -> list[tuple[str, str]]:
    """The (label, value) pairs of an alarm page's detail panel, as text."""
    block = page.split('<dl class="row mh-kv', 1)[1].split("</dl>", 1)[0]
    pairs = re.findall(r"<dt[^>]*>(.*?)</dt>\s*<dd[^>]*>(.*?)</dd>", block, re.S)
    return [(re.sub(r"<[^>]+>", " ", k).strip(), re.sub(r"<[^>]+>", " ", v).strip()) for k, v in pairs]


# --- the catalog: kinds, detail labels, reasons ------------------------------------------------------------------

def test_every_kind_has_a_sample_here():
    assert set(SAMPLES) == set(KINDS), "add a sample detail of the new kind to SAMPLES (and translate its texts)"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_reads_in_chinese(app, kind):
    """The kind's name and its message template have a zh_CN translation with the same placeholders."""
    with app.test_request_context("/", headers=ZH):
        label, template = str(KINDS[kind].label), str(KINDS[kind].sms_template)
    assert CJK.search(label) and CJK.search(template), (kind, label, template)
    assert re.findall(r"\{(\w+)\}", template) and sorted(re.findall(r"\{(\w+)\}", template)) == \
        sorted(re.findall(r"\{(\w+)\}", _english(KINDS[kind].sms_template)))
    assert not english_words(re.sub(r"\{\w+\}", "", template)), template


def _english(message) -> str:
    return message._args[-1]


def test_every_detail_key_and_notification_status_has_a_chinese_label(app):
    keys = {k for _, detail in SAMPLES.values() for k in detail if k not in CODE_KEYS}
    with app.test_request_context("/", headers=ZH):
        labels = {k: str(LABELS["alarm_detail"].get(k, k)) for k in keys}
        statuses = {k: str(v) for k, v in LABELS["notification_status"].items()}
    assert all(CJK.search(v) for v in labels.values()), labels
    assert "throttled" in statuses and all(CJK.search(v) for v in statuses.values()), statuses


@pytest.mark.parametrize("code", sorted(MESSAGES))
def test_every_reason_code_reads_in_chinese(app, code):
    """An alarm's reason is a command error code: each has a zh_CN rendering without English words."""
    detail = reason_fields(failure(code, "English text", **_params(code)))
    with app.test_request_context("/", headers=ZH):
        said = reason_text(detail)
    assert CJK.search(said) and said != "English text" and "%(" not in said, said
    assert not english_words(said), (code, said)


def test_old_alarms_show_their_reason_text(app):
    with app.test_request_context("/", headers=ZH):
        assert reason_text({"reason": "its time-to-live passed before it reached the meter"}) == \
            "its time-to-live passed before it reached the meter"
        assert reason_text({"reason": "x", "reason_code": "no.such_code"}) == "x"


# --- the raise sites ------------------------------------------------------------------------------------------------

def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", ""))
        args = list(node.args)
        if name == "_safe" and args and getattr(args[0], "id", "") in ("raise_alarm", "clear_alarm"):
            name, args = args[0].id, args[1:]
        yield name, node, args


def test_raise_sites_use_catalog_kinds_labelled_details_and_coded_reasons():
    """Every alarm raised in meterhub and drivers: a known kind, detail keys with a label (a key without one shows
    in English), and a reason only through ``reason_fields`` (a code), never as text."""
    kinds, keys, sites = set(), set(), []
    for folder in ("meterhub", "drivers"):
        for path in (ROOT / folder).rglob("*.py"):
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
            for name, node, args in _calls(tree):
                if name in ("raise_alarm", "clear_alarm", "_sync") and len(args) >= 3 and \
                        getattr(args[0], "id", "") in ("session", "s"):
                    sites.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                    if isinstance(args[2] if name != "_sync" else args[1], ast.Constant):
                        kinds.add((args[2] if name != "_sync" else args[1]).value)
                    for kw in node.keywords:
                        if kw.arg == "detail" and isinstance(kw.value, ast.Dict):
                            keys |= {k.value for k in kw.value.keys if isinstance(k, ast.Constant)}
                if name == "raise_not_on_meter" and len(args) >= 3:
                    assert not isinstance(args[2], (ast.Constant, ast.JoinedStr)), \
                        f"{path}:{node.lineno}: give the reason as a Failure (a code), not text"
            if "raise_alarm" in source:
                keys |= set(re.findall(r"jsonb_build_object\('(\w+)'", source))
                keys |= set(re.findall(r"jsonb_build_object\([^)]*?, '(\w+)'", source))
                for node in ast.walk(tree):  # a detail dict built before the call (raise_not_on_meter)
                    if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "detail" and \
                            isinstance(node.value, ast.Dict):
                        keys |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    assert len(sites) >= 8, sites
    from meterhub.alarms.sources import LEVEL_KINDS

    kinds |= set(LEVEL_KINDS.values()) | {"offline", "comm_fault", "collector_down", "purchase_mismatch"}
    assert kinds <= set(KINDS), kinds - set(KINDS)
    keys |= set(reason_fields(failure("command.expired")))
    assert {"amount", "meter_count", "reason", "power_kw", "since", "usage"} <= keys, keys
    unlabelled = {k for k in keys - set(CODE_KEYS) if k not in LABELS["alarm_detail"]}
    assert not unlabelled, f"label these alarm detail keys in meterhub/labels.py alarm_detail: {unlabelled}"
    for folder in ("meterhub", "drivers"):
        for path in (ROOT / folder).rglob("*.py"):
            source = path.read_text(encoding="utf-8")
            assert "raise_alarm" not in source or not re.search(r"[\"']reason[\"']\s*:", source), \
                f"{path}: an alarm's reason as text; give it with meterhub.alarms.texts.reason_fields(failure(...))"


# --- the pages ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_alarm_pages_in_chinese_for_every_kind(site, group, client, operator, kind):
    operator("group_admin", all_properties=True)
    alarm_id = _raise(site.app, site, group, kind)
    page = client.get(f"/alarms/{alarm_id}", headers=ZH).get_data(as_text=True)
    pairs = _panel(page)
    assert len(pairs) >= 5 + len({k for k in SAMPLES[kind][1] if k not in CODE_KEYS}) - 1, pairs
    leftovers = [(k, v, english_words(f"{k} {v}")) for k, v in pairs if english_words(f"{k} {v}")]
    assert not leftovers, leftovers
    notes = re.findall(r"<td>([^<]*)</td></tr>", page.split("<table", 1)[1].split("</table>", 1)[0])
    assert notes and CJK.search(notes[0]) and not english_words(notes[0]), notes
    listing = client.get(f"/alarms/?kind={kind}", headers=ZH).get_data(as_text=True)
    row = listing.split(f'/alarms/{alarm_id}"', 1)[1].split("</tr>", 1)[0]
    assert CJK.search(row) and not english_words(re.sub(r"<[^>]+>", " ", row.split(">", 1)[1])), row


def test_the_reason_of_every_code_on_the_alarm_page(site, group, client, operator):
    """One "top-up not on the meter" alarm whose reason takes each code in turn: the page shows it in Chinese."""
    operator("group_admin", all_properties=True)
    alarm_id = _raise(site.app, site, group, "topup_not_on_meter")
    missing = []
    for code in sorted(MESSAGES):
        with site.app.app_context(), service_session() as s:
            alarm = s.get(Alarm, alarm_id)
            alarm.detail = {**alarm.detail, **reason_fields(failure(code, "English details", **_params(code)))}
        page = html.unescape(client.get(f"/alarms/{alarm_id}", headers=ZH).get_data(as_text=True))
        with site.app.test_request_context("/", headers=ZH):
            wanted = describe(code, _params(code), "")
        if wanted not in page or "English details" in page:
            missing.append((code, wanted))
    assert not missing, missing


def test_an_old_alarm_shows_its_stored_reason(site, group, client, operator):
    operator("group_admin", all_properties=True)
    alarm_id = _raise(site.app, site, group, "topup_not_on_meter",
                      {"amount": "20.00", "meter_count": "unknown", "our_count": 2, "command_id": 9,
                       "reason": "its time-to-live passed before it reached the meter"})
    page = html.unescape(client.get(f"/alarms/{alarm_id}", headers=ZH).get_data(as_text=True))
    pairs = dict(_panel(page))
    assert "its time-to-live passed before it reached the meter" in page  # as it was stored
    assert "未知" in pairs.values() and "unknown" not in pairs.values(), pairs


def test_a_notification_that_was_held_back_says_why_in_chinese(site, group, client, operator):
    operator("group_admin", all_properties=True)
    with site.app.app_context(), service_session() as s:
        s.add(NotifierConfig(group_id=site.group_id, notifier="email", name="值班", recipients=["ops@example.com"],
                             settings={}, kinds=[], throttle_minutes=30))
    first = _raise(site.app, site, group, "overload")
    with site.app.app_context(), service_session() as s:
        plan(s, s.get(Alarm, first), utcnow())
        plan(s, s.get(Alarm, first), utcnow())  # the same alarm again within the throttle window
    page = client.get(f"/alarms/{first}", headers=ZH).get_data(as_text=True)
    table = page.split("<table", 2)[2].split("</table>", 1)[0]
    cells = re.sub(r"<[^>]+>", " ", table.split("</thead>", 1)[1])
    assert "30 分钟" in cells and not english_words(cells.replace("ops@example.com", "")), cells
    log = client.get("/alarms/notifications", headers=ZH).get_data(as_text=True)
    assert "同一报警在 30 分钟内已发送过" in log and "same alarm sent" not in log


# --- the notifications ------------------------------------------------------------------------------------------------

def _configs(app, site, locale: str | None) -> None:
    settings = {"locale": locale} if locale else {}
    with app.app_context(), service_session() as s:
        s.execute(text("DELETE FROM notifier_configs WHERE group_id = :g"), {"g": site.group_id})
        for notifier, recipients in (("email", ["ops@example.com"]), ("sms", ["13900000000"]),
                                     ("webhook", ["http://127.0.0.1:1/hook"]), ("portal", [])):
            s.add(NotifierConfig(group_id=site.group_id, notifier=notifier, name=notifier, recipients=recipients,
                                 settings=dict(settings), kinds=[], throttle_minutes=0, max_per_hour=1000))


def _messages(app, site, alarm_id: int) -> list[tuple[str, str, str]]:
    """Plan the alarm's messages now; (notifier, title, text) of each."""
    with app.app_context(), service_session() as s:
        s.execute(text("DELETE FROM notification_log WHERE group_id = :g"), {"g": site.group_id})
        plan(s, s.get(Alarm, alarm_id), utcnow())
        return [(r.notifier, r.title, r.body) for r in s.execute(select(NotificationLog).where(
            NotificationLog.alarm_id == alarm_id).order_by(NotificationLog.id)).scalars()]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_notifications_in_the_default_locale_chinese_for_every_kind(site, group, monkeypatch, kind):
    """No locale on the notifier: the default locale (zh_CN in production) for email, SMS and webhook text."""
    monkeypatch.setitem(site.app.config, "BABEL_DEFAULT_LOCALE", "zh_CN")
    _configs(site.app, site, None)
    alarm_id = _raise(site.app, site, group, kind)
    sent = _messages(site.app, site, alarm_id)
    assert {n for n, _, _ in sent} >= {"email", "sms", "webhook"}, sent
    for notifier, title, body in sent:
        assert CJK.search(title) and CJK.search(body), (notifier, title, body)
        assert "?" not in body and "None" not in body, (notifier, body)  # every placeholder filled
        assert not english_words(title) and not english_words(body), (notifier, title, body)


def test_the_reason_of_every_code_in_notifications_and_the_portal(site, group, client, monkeypatch):
    """Each reason code in the text of email/SMS/webhook (the notifier's locale) and in the portal message (the
    tenant's language); the webhook's machine fields keep the code."""
    _configs(site.app, site, "zh_CN")
    alarm_id = _raise(site.app, site, group, "topup_not_on_meter")
    missing = []
    for code in sorted(MESSAGES):
        with site.app.app_context(), service_session() as s:
            alarm = s.get(Alarm, alarm_id)
            alarm.detail = {**alarm.detail, **reason_fields(failure(code, "English details", **_params(code)))}
            s.execute(text("DELETE FROM portal_messages WHERE group_id = :g"), {"g": site.group_id})
        sent = _messages(site.app, site, alarm_id)
        with site.app.app_context(), service_session() as s, force_locale("zh_CN"):
            wanted = describe(code, _params(code), "")
            (portal,) = s.execute(select(PortalMessage).where(PortalMessage.alarm_id == alarm_id)).scalars()
            portal_text = shown(portal.title) + " " + shown(portal.body)
        texts = [body for _, _, body in sent] + [portal_text]
        if any(wanted not in t or english_words(t) for t in texts):
            missing.append((code, wanted, [t for t in texts if wanted not in t or english_words(t)]))
    assert not missing, missing[:5]
    with site.app.app_context(), service_session() as s:
        from meterhub.alarms.dispatch import _payload

        row = s.execute(select(NotificationLog).where(NotificationLog.alarm_id == alarm_id,
                                                      NotificationLog.notifier == "webhook")).scalar_one()
        payload = _payload(s, row)
    assert payload["detail"]["reason_code"] == sorted(MESSAGES)[-1] and payload["kind"] == "topup_not_on_meter"


def test_a_notifier_in_english_and_the_portal_in_the_tenants_language(site, group, client):
    _configs(site.app, site, "en")
    alarm_id = _raise(site.app, site, group, "topup_not_on_meter")
    sent = dict((n, (t, b)) for n, t, b in _messages(site.app, site, alarm_id))
    title, body = sent["sms"]
    assert "Top-up not on the meter" in title and "reset or replaced" in body and not CJK.search(
        body.replace("华南物业", "").replace("一号园区", "").replace("甲栋", "").replace("张三商铺", "")
        .replace("电表", "")), body
    with site.app.app_context(), service_session() as s, force_locale("zh_CN"):
        portal = s.execute(select(PortalMessage).where(PortalMessage.alarm_id == alarm_id)).scalar_one()
        zh = shown(portal.body)
    assert "重置" in zh or "更换" in zh, zh  # the same message, read by a Chinese tenant
    assert not english_words(zh), zh


# --- the real paths that raise "top-up not on the meter" -------------------------------------------------------------

def test_an_expired_top_up_raises_its_alarm_with_a_code(app, group, client, operator):
    from meterhub.commands.models import Command
    from meterhub.commands.service import expire_overdue
    from tests.recovery.test_topup_order import MeterSideBus, _account_with_topups, _alarms, _meter_side

    bus = MeterSideBus()
    try:
        meter_id = _meter_side(app, group, bus)
        (first, *_) = _account_with_topups(app, group, meter_id, amounts=("30.00",))
    finally:
        bus.close()
    with app.app_context(), service_session() as s:
        s.get(Command, first).expires_at = utcnow() - timedelta(seconds=1)
        expire_overdue(s)
    (alarm,) = _alarms(app, meter_id)
    assert alarm.detail["reason_code"] == "command.expired" and alarm.detail["meter_count"] is None
    assert alarm.detail["reason"] == "time-to-live passed"  # the English text stays for logs and old readers
    operator("group_admin", all_properties=True)
    page = html.unescape(client.get(f"/alarms/{alarm.id}", headers=ZH).get_data(as_text=True))
    with app.test_request_context("/", headers=ZH):
        assert describe("command.expired", {}, "") in page
    assert "未知" in dict(_panel(page)).values() and "time-to-live passed" not in page
    with app.app_context(), service_session() as s:
        note = s.execute(select(AlarmEvent.note).where(AlarmEvent.alarm_id == alarm.id)).scalar_one()
        with force_locale("zh_CN"):
            assert "表计确认之前已超过有效期" in shown(note) and not english_words(shown(note)), shown(note)
        with force_locale("en"):
            assert "Reason time-to-live passed before the meter confirmed it" in shown(note), shown(note)


def test_a_meter_reset_raises_its_alarm_with_a_code(app, group):
    from tests.recovery.test_topup_order import (MeterSideBus, _account_with_topups, _alarms, _meter_side,
                                                 _open, _run_in_order, _states)
    from meterhub.commands import worker

    bus = MeterSideBus()
    try:
        meter_id = _meter_side(app, group, bus)
        writes = _account_with_topups(app, group, meter_id)
        with app.app_context():
            while _states(app, writes)[1] != "confirmed":
                worker.execute(_open(app, meter_id)[0])
        bus.sim.channel.purchase_count = 0  # the meter was reset
        _run_in_order(app, meter_id)
    finally:
        bus.close()
    (alarm,) = _alarms(app, meter_id)
    assert alarm.detail["reason_code"] == "topup.meter_reset", alarm.detail
    assert alarm.detail["reason_params"]["meter_count"] == 0 and alarm.detail["reason"], alarm.detail
    with app.test_request_context("/", headers=ZH):
        assert "重置" in reason_text(alarm.detail) or "更换" in reason_text(alarm.detail), reason_text(alarm.detail)


def test_purchase_counter_events_raise_with_the_keys_of_their_labels(app, group):
    from meterhub.alarms.sources import from_prepaid_events

    site = make_site(app, group)
    with app.app_context(), service_session() as s:
        s.execute(text("INSERT INTO prepaid_events (group_id, account_id, meter_id, kind, detail, at) VALUES "
                       "(:g, :a, :m, 'mismatch', CAST(:d AS jsonb), :at)"),
                  {"g": site.group_id, "a": site.account_id, "m": site.meters[0],
                   "d": json.dumps({"meter": 5, "ours": 6}), "at": datetime.now(UTC)})
    with app.app_context(), service_session() as s:
        for _ in range(3):
            from_prepaid_events(s)
        alarm = s.execute(select(Alarm).where(Alarm.meter_id == site.meters[0],
                                              Alarm.kind == "purchase_mismatch")).scalar_one()
        assert alarm.detail == {"meter_count": 5, "our_count": 6}
