"""Every POST form of the console and the portal says what is wrong beside the field, in the reader's language.

``FORMS`` lists every ``<form method="post">`` of ``webui/templates`` (by template, the endpoint it posts to and
its hidden ``action``/``section``), each with why it is covered: a case here (one bad typed value: the message
under that field — ``is-invalid``, ``aria-describedby``, ``invalid-feedback`` —, the typed values kept, nothing
saved, the message Chinese in zh_CN), a case of ``test_inline_errors.py``, or a reason no typed value reaches it
(a button, a confirmation, a sign-in that answers one generic message on purpose). A new POST form that the table
does not list fails ``test_every_post_form_is_listed``."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from html import unescape

import pytest
from sqlalchemy import func, select

from meterhub.db import service_session
from tests.conftest import csrf_token
from tests.operations.test_inline_errors import CJK, EN, ENGLISH_WORD, ZH

TEMPLATES = pathlib.Path(__file__).resolve().parents[2] / "webui" / "templates"
FORM = re.compile(r"<form\b([^>]*)>(.*?)</form>", re.S)
COMMENT = re.compile(r"\{#.*?#\}", re.S)

CASE = "a case below"
INLINE = "a case of tests/operations/test_inline_errors.py"
BUTTON = "a button: sends no typed value"
CONFIRM = "a confirmation: sends back what an earlier form (covered) sent"
CHOICE = "choices only (select, checkbox): nothing typed can be wrong"
SIGNIN = "a sign-in: one generic message at the top on purpose (does not say which field was wrong)"
FREE = "free text only: any typed value is taken (cut to its column's length); nothing to refuse"
PORTAL = "a case of tests/portal/test_portal_form_errors.py"

#: Every POST form: "template endpoint action" → how its errors are covered.
FORMS: dict[str, str] = {
    "_ui.html action": BUTTON + " (ui.confirm_button)",
    "admin/operator.html .": CHOICE + " (name is free text, role and scope are chosen)",
    "admin/operator.html . reset_password": BUTTON,
    "admin/operator.html . toggle_active": BUTTON,
    "admin/operators.html .": CASE,
    "alarms/detail.html alarms.ack": FREE + " (the note)",
    "alarms/index.html alarms.ack": BUTTON,
    "alarms/notifier.html .": INLINE,
    "alarms/notifiers.html .": FREE + " (the channel is chosen, the name is any text)",
    "api_tokens/index.html .": CASE,
    "apportion/rule.html apportion.post": CONFIRM + " (posts the period its preview, a GET form, showed)",
    "apportion/rules.html apportion.create": INLINE,
    "apportion/run.html apportion.reverse": CASE,
    "auth/login.html .": SIGNIN,
    "auth/password.html .": CASE,
    "base.html auth.logout": BUTTON,
    "base.html auth.set_language": BUTTON,
    "base.html console.switch_property": CHOICE,
    "batch/index.html batch.create": INLINE,
    "batch/show.html batch.cancel": BUTTON,
    "billing_items/index.html billing_items.create": INLINE,
    "billing_items/item.html billing_items.charge": BUTTON,
    "confirm.html action": CONFIRM,
    "console/building.html . add_room": CASE,
    "console/building.html . bulk_rooms": CASE,
    "console/properties.html .": CASE,
    "console/property.html . add_building": CASE,
    "console/property.html . edit": CASE,
    "console/room.html .": INLINE,
    "console/room.html . delete": BUTTON,
    "devices/gateway.html devices.reset_mqtt_password": BUTTON,
    "devices/gateways.html .": CASE,
    "devices/import.html .": CASE,
    "devices/onboard.html .": CASE,
    "payment_channels/index.html .": CASE,
    "payment_channels/index.html payment_channels.toggle": BUTTON,
    "portal/account.html portal.pay": PORTAL,
    "portal/base.html auth.set_language": BUTTON,
    "portal/base.html portal.logout": BUTTON,
    "portal/choose.html portal.choose_group": BUTTON,
    "portal/code.html portal.verify_code": SIGNIN,
    "portal/login.html portal.login": SIGNIN,
    "portal/login.html portal.send_code": SIGNIN,
    "portal/members.html .": PORTAL,
    "portal/password.html .": PORTAL,
    "portal/room_pay.html .": PORTAL,
    "portal/sandbox_pay.html . pay": BUTTON + " (the sandbox payment page's pay/fail buttons)",
    "postpaid/bill.html postpaid.confirm": BUTTON,
    "postpaid/bill.html postpaid.pay": CASE,
    "postpaid/bills.html postpaid.generate": CASE,
    "postpaid/bills.html postpaid.run": INLINE,
    "postpaid/policy.html postpaid.policy": CASE,
    "postpaid/run_preview.html postpaid.run": CONFIRM,
    "prepaid/_alarm_levels_form.html prepaid.alarm_levels": CASE,
    "prepaid/account.html command_url": BUTTON + " (read now, switch on/off)",
    "prepaid/account.html prepaid.activate": CASE,
    "prepaid/account.html prepaid.close": BUTTON,
    "prepaid/account.html prepaid.refund": CASE,
    "prepaid/account.html prepaid.swap": CASE,
    "prepaid/account.html prepaid.topup": CASE,
    "prepaid/account.html reverse_url": CASE,
    "prepaid/confirm_topup.html prepaid.topup": CONFIRM,
    "prepaid/open.html .": CASE,
    "reports/index.html reports.schedule_create": CASE,
    "reports/index.html reports.schedule_delete": BUTTON,
    "reports/view.html reports.export": CASE + " (the filters' Export button; a bad filter: the report page again)",
    "settings/index.html .": CHOICE + " (feature modules)",
    "settings/index.html . topup_limits": CASE,
    "tariffs/detail.html tariffs.assign": CHOICE + " (the place is chosen)",
    "tariffs/new.html .": CASE,
    "tariffs/version.html .": CASE,
}


def post_forms() -> set[str]:
    """"template endpoint action" of every ``<form method="post">`` in the templates."""
    found = set()
    for path in sorted(TEMPLATES.rglob("*.html")):
        text = COMMENT.sub("", path.read_text(encoding="utf-8"))
        for form in FORM.finditer(text):
            attrs, body = form.group(1), form.group(2)
            if not re.search(r'method="post"', attrs, re.I):
                continue
            target = re.search(r"url_for\('([\w.]+)'", attrs) or re.search(r'action="\{\{ (\w+) \}\}"', attrs)
            which = re.search(r'name="(?:action|section)" value="(\w+)"', body)
            found.add(" ".join(p for p in (str(path.relative_to(TEMPLATES)), target.group(1) if target else ".",
                                           which.group(1) if which else "") if p))
        for button in re.finditer(r'<button\b[^>]*formmethod="post"[^>]*>', text, re.I):  # a GET form's POST button
            target = re.search(r"formaction=\"\{\{ url_for\('([\w.]+)'", button.group(0))
            found.add(f"{path.relative_to(TEMPLATES)} {target.group(1) if target else '.'}")
    return found


def test_every_post_form_is_listed():
    forms = post_forms()
    assert len(forms) > 50, "the template scan finds the forms"
    assert not forms - set(FORMS), f"POST forms with no entry in FORMS (add a case): {sorted(forms - set(FORMS))}"
    assert not set(FORMS) - forms, f"FORMS lists forms that are gone: {sorted(set(FORMS) - forms)}"


def count(app, model, *where) -> int:
    with app.app_context(), service_session() as s:
        return s.execute(select(func.count()).select_from(model).where(*where)).scalar()


def stored(app, model, id_, *columns: str) -> tuple:
    with app.app_context(), service_session() as s:
        row = s.get(model, id_)
        return tuple(getattr(row, c) for c in columns)


def message_beside(html: str, field: str, typed: str | None) -> str:
    """The message beside ``field``: its control is marked invalid and points (aria-describedby) to the message
    that follows it, and it shows ``typed`` again (``None``: a password or a file, never sent back)."""
    html = unescape(html)
    controls = [m for m in re.finditer(rf'<(input|textarea|select)\b[^>]*\bname="{re.escape(field)}"[^>]*>', html)
                if "is-invalid" in m.group(0)]
    assert len(controls) == 1, f"{field}: {len(controls)} controls marked invalid"
    control = controls[0]
    tag = control.group(0)
    assert 'aria-invalid="true"' in tag, tag
    described = re.search(r'aria-describedby="([^"]+)"', tag)
    assert described, f"{field} does not point to its message: {tag}"
    if typed is None:
        assert not re.search(r'\bvalue="[^"]', tag), f"{field} sent back a secret: {tag}"
    elif control.group(1) == "textarea":
        kept = html[control.end():html.index("</textarea>", control.end())]
        assert kept.strip() == typed.strip(), f"{field} lost what was typed: {kept!r}"
    elif control.group(1) == "input":
        assert f'value="{typed}"' in tag, f"{field} lost what was typed: {tag}"
    after = html[control.end():]
    feedback = re.search(rf'<(div|span) class="invalid-feedback[^"]*" id="{re.escape(described.group(1))}">([^<]+)</\1>',
                         after)
    assert feedback, f"no invalid-feedback {described.group(1)} after {field}"
    between = after[:feedback.start()]
    assert "mh-field" not in between and 'name="' not in between, "the message is not beside its field"
    return feedback.group(2).strip()


def check_refused(response, case) -> str:
    """The refused answer: the message beside the field in the request's language, only that field marked, the
    message said once."""
    html = response.get_data(as_text=True)
    assert response.status_code == case.status, (case.url, response.status_code, html[:300])
    message = message_beside(html, case.field, case.typed)
    assert html.count("is-invalid") == 1, "only the bad field is marked"
    assert unescape(html).count(message) == 1, "the field's message is not repeated above the form"
    return message


def english_and_chinese(client, case, token: str) -> None:
    for headers in (EN, ZH):
        message = check_refused(client.post(case.url, data={**case.form, "csrf_token": token}, headers=headers,
                                            follow_redirects=case.follow), case)
        if headers is EN:
            assert case.english in message, message
        else:
            assert CJK.search(message), f"{case.url}: not Chinese: {message}"
            leaked = [w for w in ENGLISH_WORD.findall(message) if w not in (case.typed or "")]
            assert not leaked, f"{case.url}: English in the Chinese message: {message}"


@dataclass
class Case:
    page: str  # a page of the operator's (for the CSRF token)
    url: str
    form: dict
    field: str
    typed: str | None  # None: a password or a file (never sent back)
    english: str  # a part of the English message
    saved: Callable[[], object]  # what the post would have changed
    status: int = 400
    follow: bool = False  # the answer is a redirect to the page that says it


@pytest.fixture()
def cases(app, site, group) -> dict[str, Case]:  # noqa: C901, PLR0915 (one case per form)
    from meterhub.api.models import ApiToken
    from meterhub.devices.models import Device, Gateway, Meter
    from meterhub.ledger.models import Transfer
    from meterhub.modules.postpaid import service as postpaid
    from meterhub.modules.postpaid.models import Bill, BillPayment, PostpaidPolicy
    from meterhub.modules.prepaid import accounts
    from meterhub.modules.prepaid.models import PrepaidAccount
    from meterhub.reports.models import ReportExport, ScheduledReport
    from meterhub.tariffs.models import Tariff, TariffVersion
    from meterhub.tenants.models import Building, Group, Operator, Property, Room
    from tests.prepaid.conftest import add_meters

    gid = group.group_id
    ops = group.operations  # a posted apportioning run, a draft bill
    with app.app_context(), service_session() as s:
        acc = s.get(PrepaidAccount, site.accounts[0])
        number, wallet = acc.number, acc.wallet_account_id
        topup = s.execute(select(Transfer.id).where(Transfer.wallet_account_id == wallet,
                                                    Transfer.kind == "topup")).scalar()
        building = s.get(Building, group.building_id).name
        tariff = s.get(Tariff, site.tariff_id).name
        device_meter = s.execute(select(Meter.id).where(Meter.device_id == group.device_id)).scalar()
        spare = add_meters(s, gid, group.property_id, site.gateway_id, group.room_id, 1)[0]
        preset = accounts.create_account(s, gid, group.property_id, [spare], room_id=group.room_id, preset=True,
                                         actor="t").id
        postpaid.confirm_bill(s, gid, ops["bill_id"], actor="t")
    rooms = lambda: count(app, Room, Room.group_id == gid)  # noqa: E731
    money = lambda: count(app, Transfer, Transfer.group_id == gid)  # noqa: E731
    account = f"/prepaid/accounts/{site.accounts[0]}"
    prop = f"/properties/{group.property_id}"
    return {
        "admin/operators.html .": Case(
            "/operators/", "/operators/",
            {"username": "Bad User!", "name": "Typed name", "password": "long enough 42", "role": "cashier"},
            "username", "Bad User!", "Username: 3–64 of a–z",
            lambda: count(app, Operator, Operator.group_id == gid)),
        "api_tokens/index.html .": Case(
            "/settings/api-tokens/", "/settings/api-tokens/", {"name": "n" * 101, "scopes": "read"},
            "name", "n" * 101, "Give the token a name of 1 to 100 characters",
            lambda: count(app, ApiToken, ApiToken.group_id == gid)),
        "apportion/run.html apportion.reverse": Case(
            f"/apportion/runs/{ops['run_id']}", f"/apportion/runs/{ops['run_id']}/reverse", {"reason": ""},
            "reason", "", "A reversal needs a reason", money),
        "auth/password.html .": Case(
            "/password", "/password", {"current_password": "not my password", "new_password": "brand new 4242",
                                       "confirm_password": "brand new 4242"}, "current_password", None,
            "The current password is wrong",
            lambda: sorted(r for r, in service_rows(app, select(Operator.password_hash)
                                                    .where(Operator.group_id == gid)))),
        "console/building.html . add_room": Case(
            f"/buildings/{group.building_id}", f"/buildings/{group.building_id}",
            {"action": "add_room", "level": "1", "number": "101", "name": "Typed shop", "area_m2": "0"},
            "number", "101", "exists already", rooms),
        "console/building.html . bulk_rooms": Case(
            f"/buildings/{group.building_id}", f"/buildings/{group.building_id}",
            {"action": "bulk_rooms", "floor_from": "1", "floor_to": "two", "room_from": "01", "room_to": "03",
             "area_m2": "0", "kind": "shop"}, "floor_to", "two", "Enter a whole number", rooms),
        "console/properties.html .": Case(
            "/properties", "/properties",
            {"name": "Typed mall", "code": "bad code!", "address": "", "reading_interval_min": "30"},
            "code", "bad code!", "Property code may use letters",
            lambda: count(app, Property, Property.group_id == gid)),
        "console/property.html . add_building": Case(
            prop, prop, {"action": "add_building", "name": building}, "name", building, "exists already",
            lambda: count(app, Building, Building.group_id == gid)),
        "console/property.html . edit": Case(
            prop, prop, {"action": "edit", "name": "Renamed mall", "address": "Typed street",
                         "reading_interval_min": "0"}, "reading_interval_min", "0",
            "Enter a whole number from 1 to 1440",
            lambda: stored(app, Property, group.property_id, "name", "address", "reading_interval_min")),
        "devices/gateways.html .": Case(
            "/gateways", "/gateways",
            {"property_id": group.property_id, "name": "Typed gateway", "host": "10.0.0.9", "port": "99999",
             "framing": "modbus-rtu-over-tcp", "baud": "9600", "parity": "N", "mqtt_client_id": ""},
            "port", "99999", "out of range 1–65535", lambda: count(app, Gateway, Gateway.group_id == gid)),
        "devices/import.html .": Case(
            "/devices/import", "/devices/import", {"verify": "1"}, "file", None, "Choose an xlsx file",
            lambda: count(app, Gateway, Gateway.group_id == gid)),
        "devices/onboard.html .": Case(
            "/onboard", "/onboard", {"gateway_id": group.gateway_id, "driver_key": "acrel_dtsd1352",
                                     "qr_payload": "SN=23011234;ADDR=400", "address": ""},
            "qr_payload", "SN=23011234;ADDR=400", "must be an integer 1–247",
            lambda: count(app, Device, Device.group_id == gid), status=422),
        "payment_channels/index.html .": Case(
            "/payment-channels/", "/payment-channels/",
            {"provider": "wechat_v3", "name": "Typed WeChat", "appid": "wx1", "mchid": "1900", "apiv3_key": "short"},
            "apiv3_key", None, "APIv3 key must be exactly 32 characters", lambda: payment_channels(app, gid)),
        "postpaid/bill.html postpaid.pay": Case(
            f"/bills/{ops['bill_id']}", f"/bills/{ops['bill_id']}/pay",
            {"amount": "abc", "channel": "cash", "key": "typed-pay"}, "amount", "abc", "Enter a number",
            lambda: count(app, BillPayment, BillPayment.bill_id == ops["bill_id"])),
        "postpaid/bills.html postpaid.generate": Case(
            "/bills/", "/bills/generate",
            {"account": number, "start": "2026-02-30", "end": "2026-03-01", "due_days": "15"}, "start",
            "2026-02-30", "Enter a date as YYYY-MM-DD", lambda: count(app, Bill, Bill.group_id == gid)),
        "postpaid/policy.html postpaid.policy": Case(
            f"/bills/policy/{group.property_id}", f"/bills/policy/{group.property_id}",
            {"bill_day": "", "remind_every_days": "0", "late_fee_daily_rate": "0.0005", "late_fee_cap_rate": "0.1",
             "cutoff_days": ""}, "remind_every_days", "0", "a whole number from 1 to 90",
            lambda: count(app, PostpaidPolicy, PostpaidPolicy.group_id == gid)),
        "prepaid/_alarm_levels_form.html prepaid.alarm_levels": Case(
            account, f"{account}/alarm-levels",
            {"alarm1": "20.00", "alarm2": "5.00", "alarm1_days": "soon", "alarm2_days": ""}, "alarm1_days", "soon",
            "is not a number of days", lambda: stored(app, PrepaidAccount, site.accounts[0], "alarm1", "alarm1_days")),
        "prepaid/account.html prepaid.activate": Case(
            f"/prepaid/accounts/{preset}", f"/prepaid/accounts/{preset}/activate",
            {"customer_name": " ", "phone": "13900000000"}, "customer_name", " ", "name is required",
            lambda: stored(app, PrepaidAccount, preset, "status")),
        "prepaid/account.html prepaid.refund": Case(
            account, f"{account}/refund",
            {"amount": "ten", "reason": "Typed reason", "channel": "cash", "key": "typed-refund", "confirmed": "yes"},
            "amount", "ten", "Enter a number", money),
        "prepaid/account.html prepaid.swap": Case(
            account, f"{account}/swap",
            {"old_meter_id": site.meters[0], "final_reading": "12", "new_meter": "ZZ-404",
             "new_initial_reading": "0", "confirmed": "yes"}, "new_meter", "ZZ-404", "no such meter",
            lambda: count(app, Meter, Meter.group_id == gid, Meter.id.in_(site.meters))),
        "prepaid/account.html prepaid.topup": Case(
            account, f"{account}/topup", {"amount": "12.345", "channel": "cash", "key": "typed-topup"},
            "amount", "12.345", "At most 2 decimals", money),
        "prepaid/account.html reverse_url": Case(
            account, f"{account}/reverse", {"transfer_id": topup, "reason": "", "key": "typed-reverse",
                                            "confirmed": "yes"}, "reason", "", "needs a reason", money),
        "prepaid/open.html .": Case(
            f"/prepaid/accounts/open?room_id={group.room_id}", "/prepaid/accounts/open",
            {"room_id": group.room_id, "meter_id": device_meter, "customer_name": "Typed tenant", "phone": "",
             "alarm1": "twenty",
             "alarm2": "5.00", "overdraft_limit": "0.00"}, "alarm1", "twenty", "Enter a number",
            lambda: count(app, PrepaidAccount, PrepaidAccount.group_id == gid)),
        "reports/index.html reports.schedule_create": Case(
            "/reports/", "/reports/schedules",
            {"report": "usage", "frequency": "daily", "hour": "25", "property_id": "", "recipients": "a@example.com"},
            "hour", "25", "Enter a whole number from 0 to 23",
            lambda: count(app, ScheduledReport, ScheduledReport.group_id == gid)),
        "reports/view.html reports.export": Case(
            "/reports/usage", "/reports/usage/export", {"start": "2026-13-01", "end": "2026-02-01", "level": "meter"},
            "start", "2026-13-01", "is not a date; use YYYY-MM-DD",
            lambda: count(app, ReportExport, ReportExport.group_id == gid), status=200, follow=True),
        "settings/index.html . topup_limits": Case(
            "/settings/", "/settings/", {"section": "topup_limits", "topup_max": "lots", "topup_confirm_above": "100"},
            "topup_max", "lots", "Enter a number", lambda: stored(app, Group, gid, "topup_max"), status=422),
        "tariffs/new.html .": Case(
            "/tariffs/new", "/tariffs/new", {"name": tariff, "property_id": "", "utility": "electricity"},
            "name", tariff, "exists already", lambda: count(app, Tariff, Tariff.group_id == gid)),
        "tariffs/version.html .": Case(
            f"/tariffs/{site.tariff_id}/versions/new", f"/tariffs/{site.tariff_id}/versions/new",
            {"kind": "flat", "effective_date": "2027-01-01", "effective_time": "00:00", "timezone": "Asia/Shanghai",
             "price_flat": "abc", "periods": "", "tiers": "", "tier_period": "month"},
            "price_flat", "abc", "must be a plain number",
            lambda: count(app, TariffVersion, TariffVersion.tariff_id == site.tariff_id)),
    }


def service_rows(app, stmt) -> list:
    with app.app_context(), service_session() as s:
        return list(s.execute(stmt).all())


def payment_channels(app, group_id: int) -> int:
    from meterhub.payments.models import PaymentChannel

    return count(app, PaymentChannel, PaymentChannel.group_id == group_id)


def test_the_table_has_a_case_for_each_form_it_says_has_one(cases):
    assert {k for k, v in FORMS.items() if v.startswith(CASE)} == set(cases)


@pytest.mark.parametrize("which", sorted(k for k, v in FORMS.items() if v.startswith(CASE)))
def test_a_bad_value_comes_back_beside_its_field(which, app, cases, client, operator):
    case = cases[which]
    app.config["PUBLIC_BASE_URL"] = "https://meterhub.example.com"  # a real payment channel needs its callback address
    operator("group_admin", all_properties=True)
    before = case.saved()
    token = csrf_token(client, case.page)
    english_and_chinese(client, case, token)
    assert case.saved() == before, f"{which}: the refused form saved something"


def test_a_sign_in_answers_one_generic_message_in_the_readers_language(client, group):
    """Sign-in forms say neither which field was wrong nor whether the account exists: one message at the top."""
    username, _password, _ = group.operator("cashier")
    for headers in (EN, ZH):
        token = csrf_token(client, "/login")
        page = client.post("/login", data={"username": username, "password": "not it", "csrf_token": token},
                           headers=headers)
        html = unescape(page.get_data(as_text=True))
        assert page.status_code == 401 and "is-invalid" not in html
        assert ("Wrong username or password." in html) if headers is EN else ("用户名或密码错误。" in html)
    for headers in (EN, ZH):
        token = csrf_token(client, "/portal/login")
        page = client.post("/portal/login", data={"phone": "12-ab", "password": "x", "csrf_token": token},
                           headers=headers)
        html = unescape(page.get_data(as_text=True))
        assert page.status_code == 400 and "is-invalid" not in html
        assert ("Enter a phone number of 6 to 20 digits." in html) if headers is EN else \
            ("请填写 6 到 20 位数字的手机号码。" in html)


@pytest.mark.parametrize("url, field", [("/apportion/rules/{rule}?start=2026-02-30&end=2026-03-01", "start"),
                                        ("/reports/usage?start=2026-01-01&end=2026-13-01", "end")])
def test_a_filter_form_refuses_a_bad_date_beside_it(url, field, client, operator, group):
    """GET forms with typed dates (an apportioning preview, a report's filters) say it beside the date too."""
    operator("group_admin", all_properties=True)
    url = url.format(rule=group.operations["rule_id"])
    typed = url.split(f"{field}=")[1].split("&")[0]
    for headers in (EN, ZH):
        html = client.get(url, headers=headers).get_data(as_text=True)
        message = message_beside(html, field, typed)
        assert ("Enter a date" in message or "is not a date" in message) if headers is EN else CJK.search(message)
        assert html.count("is-invalid") == 1
