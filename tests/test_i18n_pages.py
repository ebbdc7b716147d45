"""Chinese throughout (issue 21 item 3): every console page, every export's headers, the bill PDF, a
notification and the portal, rendered in zh_CN, show no message without a translation.

Two checks catch the two ways English leaks: a hook on the translations records every gettext call whose
message the catalog lacks (a message built at run time, a stored message id), and a scan of the rendered text
finds English words that never went through the catalog (an f-string, a raw enum value, a field name). Words
of the test's own data (names that carry the tenant's marker) and the brand names below are the only words
allowed; nothing else is exempt.
"""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser

import pytest
from babel.support import Translations
from openpyxl import load_workbook
from pypdf import PdfReader
from sqlalchemy import text

from meterhub.app import create_app
from meterhub.db import service_session
from meterhub.labels import LABELS
from meterhub.models import utcnow
from tests.conftest import csrf_token
from tests.portal.conftest import codes, sign_in_with_code  # noqa: F401 (a fixture)
from tests.test_isolation import FOREIGN, ID_RULES, LIST_RULES, _url

#: Names that stay as they are in every language (products, protocols, vendors, file formats, the language menu's
#: own name of English).
BRANDS = {"meterhub", "Modbus", "Acrel", "MQTT", "Excel", "xlsx", "WeChat", "Alipay", "PDF", "Webhook", "English"}
#: English words: a capital or small letter followed by two or more small letters (kWh, DTSD1352, A-310 are not).
WORD = re.compile(r"(?<![\w.@/-])[A-Za-z][a-z]{2,}(?![\w@/-])")
URL = re.compile(r"\w+://\S+")
BRACES = re.compile(r"\{\w+\}")
QUOTED = re.compile(r'"[^"\n]*"(?:\s*:\s*\w+)?')
SKIP_SUFFIXES = (".svg",)


class _Text(HTMLParser):
    """The visible text of a page: text nodes, option labels, placeholders, titles; no scripts or styles."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        if tag in ("script", "style", "code"):  # code: identifiers and JSON, the same in every language
            self._skip += 1
        for name, value in attrs:
            if name in ("placeholder", "title", "aria-label", "alt") and value:
                self.parts.append(value)
            if name == "value" and tag in ("button",) and value:
                self.parts.append(value)

    def handle_endtag(self, tag):  # noqa: ANN001
        if tag in ("script", "style", "code") and self._skip:
            self._skip -= 1

    def handle_data(self, data):  # noqa: ANN001
        if not self._skip:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return "\n".join(p.strip() for p in parser.parts if p.strip())


class Missing:
    """Records gettext calls that the zh_CN catalog cannot answer."""

    def __init__(self) -> None:
        self.messages: set[str] = set()

    def install(self, monkeypatch) -> None:  # noqa: ANN001
        seen = self.messages
        real_gettext, real_pgettext = Translations.ugettext, Translations.upgettext
        real_ngettext = Translations.ungettext

        def ugettext(self, message):  # noqa: ANN001
            if message and message not in self._catalog:
                seen.add(message)
            return real_gettext(self, message)

        def upgettext(self, context, message):  # noqa: ANN001
            if message and f"{context}\x04{message}" not in self._catalog:
                seen.add(f"{context}|{message}")
            return real_pgettext(self, context, message)

        def ungettext(self, singular, plural, num):  # noqa: ANN001
            if (singular, 0) not in self._catalog:
                seen.add(singular)
            return real_ngettext(self, singular, plural, num)

        monkeypatch.setattr(Translations, "ugettext", ugettext)
        monkeypatch.setattr(Translations, "upgettext", upgettext)
        monkeypatch.setattr(Translations, "ungettext", ungettext)


def data_words(group) -> set[str]:  # noqa: ANN001
    """Words of the names the test data holds (every name made by the fixtures carries the marker)."""
    words: set[str] = set()
    with group.app.app_context(), service_session() as s:
        rows = s.execute(text(
            "SELECT t.v FROM (SELECT name AS v FROM groups UNION ALL SELECT name FROM properties "
            "UNION ALL SELECT name FROM buildings UNION ALL SELECT name FROM rooms "
            "UNION ALL SELECT name FROM gateways UNION ALL SELECT customer_name FROM prepaid_accounts "
            "UNION ALL SELECT name FROM tariffs UNION ALL SELECT name FROM notifier_configs "
            "UNION ALL SELECT name FROM payment_channels UNION ALL SELECT name FROM apportion_rules "
            "UNION ALL SELECT name FROM billing_items UNION ALL SELECT username FROM operators) t "
            "WHERE t.v LIKE :m"), {"m": f"%{group.marker}%"}).scalars()
        for value in rows:
            words.update(WORD.findall(value))
        # who did things in the fixtures (a user name is data), except the platform's own actors, which have labels
        actors = s.execute(text("SELECT DISTINCT actor FROM audit_log WHERE group_id = :g"), {"g": group.group_id})
        words.update(a for (a,) in actors if a and a not in LABELS["actor"])
        words.update(a for (a,) in s.execute(text("SELECT DISTINCT actor FROM ledger_transfers WHERE group_id = :g"),
                                             {"g": group.group_id}) if a and a not in LABELS["actor"])
    return words


def english_lines(lines, allowed: set[str]) -> list[str]:  # noqa: ANN001
    """Lines holding English words that are neither data nor brand names (URLs left aside)."""
    found = []
    for line in lines:
        # placeholders such as {meter} and quoted literals such as "confirm": true (an API field) are code
        line = QUOTED.sub("", BRACES.sub("", URL.sub("", str(line))))
        if line.lstrip().startswith(("{", "[")) and _json(line):
            continue  # a JSON cell (a device's config in the import format) is data, the same in every language
        words = [w for w in WORD.findall(line) if w not in allowed]
        if words:
            found.append(line[:160])
    return found


def _json(text_: str) -> bool:
    import json

    try:
        json.loads(text_)
    except ValueError:
        return False
    return True


def english(page: str, allowed: set[str]) -> list[str]:
    """English words of the page's visible text that are neither data nor brand names."""
    return english_lines(visible_text(page).splitlines(), allowed)


@pytest.fixture()
def zh_app(app):
    keys = ("TESTING", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "REDIS_NAMESPACE", "MQTT_URL", "PUBLIC_BASE_URL")
    zh = create_app({**{k: app.config[k] for k in keys}, "BABEL_DEFAULT_LOCALE": "zh_CN"})
    yield zh
    from meterhub.extensions import db

    with zh.app_context():
        db.engine.dispose()


def _console(zh_app, group):  # noqa: ANN001, ANN202
    """A group admin of ``group`` signed in to the zh_CN app, with every kind of object made; the allowed words."""
    zh_app.config["PROPAGATE_EXCEPTIONS"] = False
    group.admin_operator_id = group.operator("group_admin")[2]
    for attr in ("operations", "prepaid", "payment_channel_id", "tariff_id"):
        getattr(group, attr)
    username, password, _ = group.operator("group_admin", all_properties=True)
    c = zh_app.test_client()
    c.post("/login", data={"username": username, "password": password, "csrf_token": csrf_token(c)})
    return c, BRANDS | data_words(group)


def _urls(group):  # noqa: ANN001, ANN202
    for rule in LIST_RULES + [r for r in ID_RULES if "GET" in r.methods]:
        url = rule.rule if not rule.arguments else _url(rule, group, FOREIGN)
        if url is not None and not url.endswith(SKIP_SUFFIXES):
            yield url


def _report(problems: list[str], missing: Missing, what: str) -> None:
    report = sorted(problems) + [f"gettext without translation: {m!r}" for m in sorted(missing.messages)]
    assert not report, f"{len(report)} English texts in {what}:\n" + "\n".join(report)


def test_every_console_page_is_chinese(zh_app, group, monkeypatch):
    missing = Missing()
    missing.install(monkeypatch)
    c, allowed = _console(zh_app, group)
    problems: list[str] = []
    for url in _urls(group):
        response = c.get(url)
        if response.status_code != 200 or response.mimetype != "text/html":
            continue
        for line in english(response.get_data(as_text=True), allowed):
            problems.append(f"{url}: {line}")
    _report(problems, missing, "the zh_CN console")


def _sheet_text(data: bytes) -> list[str]:
    book = load_workbook(io.BytesIO(data), read_only=True)
    lines = [sheet.title for sheet in book.worksheets]
    for sheet in book.worksheets:
        for row in sheet.iter_rows(values_only=True):
            lines += [v for v in row if isinstance(v, str)]
    return lines


def test_every_export_and_the_bill_pdf_are_chinese(zh_app, group, monkeypatch):
    """Excel headers and values, CSV and the PDF bill: the same check on what a download holds."""
    missing = Missing()
    missing.install(monkeypatch)
    c, allowed = _console(zh_app, group)
    problems: list[str] = []
    seen = set()
    for url in _urls(group):
        response = c.get(url)
        if response.status_code != 200:
            continue
        if response.mimetype.endswith("spreadsheetml.sheet"):
            lines = _sheet_text(response.get_data())
        elif response.mimetype == "application/pdf":
            lines = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(response.get_data())).pages).splitlines()
        elif response.mimetype == "text/csv":
            lines = response.get_data(as_text=True).splitlines()[:1]  # the header row; the rest is data
        else:
            continue
        seen.add(response.mimetype)
        problems += [f"{url}: {line}" for line in english_lines(lines, allowed)]
    assert {"application/pdf"} < seen and any(m.endswith("sheet") for m in seen), seen
    _report(problems, missing, "the zh_CN exports")


def test_notifications_and_portal_messages_are_chinese(zh_app, group, monkeypatch):
    """An alarm's notification (every kind, default template) and a bill reminder in the portal, in zh_CN."""
    from datetime import date

    from flask_babel import force_locale

    from meterhub.alarms.dispatch import render
    from meterhub.alarms.kinds import KINDS
    from meterhub.alarms.models import Alarm, NotifierConfig, PortalMessage
    from meterhub.i18n import shown
    from meterhub.modules.postpaid import service as postpaid
    from meterhub.modules.postpaid.models import Bill
    from meterhub.tenants.models import Group

    missing = Missing()
    missing.install(monkeypatch)
    _, allowed = _console(zh_app, group)
    problems: list[str] = []
    with zh_app.app_context(), service_session() as s, force_locale("zh_CN"):
        config = s.get(NotifierConfig, group.notifier_id)
        for kind in KINDS:
            alarm = Alarm(id=0, group_id=group.group_id, property_id=group.property_id, kind=kind, state="active",
                          subject_key=f"meter:{group.meter_id}", meter_id=group.meter_id, account_id=group.account_id,
                          detail={}, raised_at=utcnow())
            message = render(s, config, alarm, s.get(Group, group.group_id))
            problems += [f"notification {kind}: {line}" for line in english_lines([message.title, message.body],
                                                                                 allowed)]
        bill = s.get(Bill, group.bill_id)
        postpaid.confirm_bill(s, group.group_id, bill.id, today=date(2026, 2, 1), actor="pytest")
        postpaid.remind(s, bill, "overdue", date(2026, 3, 1))
        s.flush()
        for m in s.query(PortalMessage).filter_by(account_id=bill.account_id):
            problems += [f"portal message: {line}" for line in english_lines([shown(m.title), shown(m.body)], allowed)]
            assert shown(m.title) != m.title  # stored as a message, shown in the reader's language
    _report(problems, missing, "zh_CN notifications")


def test_the_tenant_portal_is_chinese(zh_app, group, codes, monkeypatch):
    from tests.api.world import open_site

    missing = Missing()
    missing.install(monkeypatch)
    _console(zh_app, group)
    site = open_site(zh_app, group)
    allowed = BRANDS | data_words(group)
    c = zh_app.test_client()
    sign_in_with_code(c, codes, site.phone)
    problems: list[str] = []
    for url in ("/portal/", f"/portal/a/{site.account_number}", f"/portal/a/{site.account_number}/members",
                "/portal/password"):
        response = c.get(url, follow_redirects=True)
        assert response.status_code == 200, url
        problems += [f"{url}: {line}" for line in english(response.get_data(as_text=True), allowed)]
    _report(problems, missing, "the zh_CN portal")
