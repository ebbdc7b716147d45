"""A refused form shows each problem beside its field (issue 16): billing item, apportioning rule, bill run, batch,
notifier and room. The field is marked ``is-invalid`` and points to its message (``aria-describedby``), the message
is in the reader's language, what was typed stays in the form, and nothing was saved."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from html import unescape

import pytest
from sqlalchemy import func, select

from meterhub.db import service_session
from tests.conftest import csrf_token

ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
EN = {"Accept-Language": "en"}
CJK = re.compile(r"[\u4e00-\u9fff]")
ENGLISH_WORD = re.compile(r"(?<![\w.@/-])[A-Za-z][a-z]{2,}(?![\w@/-])")  # as tests/test_i18n_pages.py


def beside(html: str, field: str, typed: str) -> str:
    """The message beside ``field``: the control is marked invalid, points to its message and keeps ``typed``."""
    html = unescape(html)
    control = re.search(rf'<(input|textarea|select)\b[^>]*\bname="{re.escape(field)}"[^>]*>', html)
    assert control, f"no control named {field}"
    tag = control.group(0)
    assert "is-invalid" in tag and 'aria-invalid="true"' in tag, f"{field} is not marked invalid: {tag}"
    assert f'aria-describedby="f-{field}-error"' in tag, tag
    if control.group(1) == "textarea":
        kept = html[control.end():html.index("</textarea>", control.end())]
        assert kept.strip() == typed, f"{field} lost what was typed: {kept!r}"
    else:
        assert f'value="{typed}"' in tag, f"{field} lost what was typed: {tag}"
    after = html[control.end():]
    feedback = re.search(rf'<(div|span) class="invalid-feedback" id="f-{re.escape(field)}-error">([^<]+)</\1>', after)
    assert feedback, f"no invalid-feedback for {field}"
    between = after[:feedback.start()]
    assert between.count("mh-field") == 0 and between.count('name="') == 0, "the message is not beside its field"
    return feedback.group(2).strip()


def count(app, model, *where) -> int:
    with app.app_context(), service_session() as s:
        return s.execute(select(func.count()).select_from(model).where(*where)).scalar()


@dataclass
class Case:
    page: str  # the page whose form is posted
    url: str
    form: dict
    field: str
    typed: str
    english: str  # a part of the English message
    saved: Callable[[], object]  # what the post would have changed


@pytest.fixture()
def cases(app, site, group) -> dict[str, Case]:  # noqa: C901 (one case per form)
    from meterhub.alarms.models import NotifierConfig
    from meterhub.devices.models import Device, Meter
    from meterhub.modules.apportion.models import ApportionRule
    from meterhub.modules.batch.models import Batch
    from meterhub.modules.billing_items.models import BillingItem
    from meterhub.modules.postpaid.models import Bill
    from meterhub.modules.prepaid.models import PrepaidAccount
    from meterhub.tenants.models import Room

    with app.app_context(), service_session() as s:
        numbers = [s.get(PrepaidAccount, a).number for a in site.accounts]
        parent = s.execute(select(Device.serial).join(Meter, Meter.device_id == Device.id)
                           .where(Meter.id == site.parent)).scalar_one()

    def notifier():
        with app.app_context(), service_session() as s:
            n = s.get(NotifierConfig, group.notifier_id)
            return n.name, n.throttle_minutes

    def room():
        with app.app_context(), service_session() as s:
            r = s.get(Room, group.room_id)
            return r.name, r.area_m2

    return {
        "billing item": Case(
            "/billing-items/", "/billing-items/new",
            {"name": "Rent typed", "property_id": site.property_id, "category": "rent", "rate": "twelve",
             "basis": "fixed", "recurrence": "monthly", "day": "1", "anchor_month": "1", "start_date": "2026-01-01",
             "mode": "deduct", "accounts": numbers[0]}, "rate", "twelve", "The rate must be a number",
            lambda: count(app, BillingItem, BillingItem.name == "Rent typed")),
        "apportion rule": Case(
            "/apportion/", "/apportion/rules/new",
            {"name": "Shared typed", "property_id": site.property_id, "parent_meter": parent, "method": "ratio",
             "tariff_id": site.tariff_id, "members": f"{numbers[0]}\nZZ-404", "post_mode": "deduct"},
            "members", f"{numbers[0]}\nZZ-404", "ZZ-404: no such account",
            lambda: count(app, ApportionRule, ApportionRule.name == "Shared typed")),
        "bill run": Case(
            "/bills/", "/bills/run", {"property_id": site.property_id, "building_id": "", "month": "2026-13"},
            "month", "2026-13", "The month must be given as YYYY-MM",
            lambda: count(app, Bill, Bill.property_id == site.property_id)),
        "batch": Case(
            "/batch/", "/batch/new",
            {"property_id": site.property_id, "action": "set_overload_limit", "limit_kw": "99999", "status": "",
             "meters": parent, "confirmed": "yes"}, "limit_kw", "99999", "the overload limit must be 0–10000 kW",
            lambda: count(app, Batch, Batch.property_id == site.property_id)),
        "notifier": Case(
            f"/alarms/notifiers/{group.notifier_id}", f"/alarms/notifiers/{group.notifier_id}",
            {"name": "Renamed hook", "enabled": "1", "url": "https://example.com/hook", "throttle_minutes": "often",
             "max_per_hour": "20"}, "throttle_minutes", "often", "Enter a whole number from 0 to 1440", notifier),
        "room": Case(
            f"/rooms/{group.room_id}", f"/rooms/{group.room_id}",
            {"name": "Renamed shop", "area_m2": "lots", "kind": "shop"}, "area_m2", "lots",
            "is not a number of m²", room),
    }


@pytest.mark.parametrize("which", ["billing item", "apportion rule", "bill run", "batch", "notifier", "room"])
def test_a_refused_form_shows_the_message_beside_the_field(which, cases, client, operator):
    operator("group_admin", all_properties=True)
    case = cases[which]
    before = case.saved()
    token = csrf_token(client, case.page)
    for headers in (EN, ZH):
        page = client.post(case.url, data={**case.form, "csrf_token": token}, headers=headers)
        html = page.get_data(as_text=True)
        assert page.status_code == 400, (which, page.status_code, html[:300])
        message = beside(html, case.field, case.typed)
        if headers is EN:
            assert case.english in message, message
        else:
            assert CJK.search(message), f"{which}: not Chinese: {message}"
            leaked = [w for w in ENGLISH_WORD.findall(message) if w not in case.typed]
            assert not leaked, f"{which}: English in the Chinese message: {message}"
        assert html.count("is-invalid") == 1, "only the bad field is marked"
        assert unescape(html).count(message) == 1, "the field's message is not repeated above the form"
    assert case.saved() == before, f"{which}: the refused form saved something"


def test_a_message_that_names_no_field_of_the_form_stays_at_the_top(client, operator, site):
    """A batch whose selection matches no meter: the selection is made by several fields, so it is said above."""
    operator("group_admin", all_properties=True)
    token = csrf_token(client, "/batch/")
    page = client.post("/batch/new", data={"csrf_token": token, "property_id": site.property_id,
                                           "action": "read_now", "meters": "", "status": "offline",
                                           "confirmed": "yes"})
    html = page.get_data(as_text=True)
    assert page.status_code == 400 and "is-invalid" not in html
    assert "no meter matches the selection" in html
