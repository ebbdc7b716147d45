"""Alarms in Chromium, zh_CN and English: a "top-up not on the meter" alarm gives its reason, its amounts and its
history in the operator's language (screenshots in test-artifacts/issue21/ to be looked at)."""

from __future__ import annotations

import pytest

from meterhub.alarms import raise_alarm
from meterhub.alarms.texts import reason_fields
from meterhub.commands.messages import failure
from meterhub.db import service_session
from tests.alarms.helpers import make_site
from tests.alarms.test_alarm_messages import chinese_names, english_words
from tests.browser.conftest import sign_in
from tests.browser.test_operations_language import _shot

REASON = failure("topup.refused_at_count", "meter refused purchase count 4 (its count 2)", count=4, meter_count=2)
LOCALES = {"zh-CN": ("表计拒绝了第 4 次购电", "未写入表计的金额", "¥50.00", "原因"),
           "en-US": ("the meter refused purchase count 4 although its own count is 2", "Amount not on the meter",
                     "¥50.00", "Reason")}


@pytest.fixture(params=sorted(LOCALES))
def lang(request, browser):  # noqa: ANN001, ANN201
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=request.param)
    page = context.new_page()
    page.set_default_timeout(15000)
    yield request.param, page
    context.close()


def test_an_alarms_reason_reads_in_the_operators_language(lang, live_server, app, group):
    locale, page = lang
    site = make_site(app, group)
    chinese_names(app, site)
    with app.app_context(), service_session() as s:
        alarm_id = raise_alarm(s, site.group_id, "topup_not_on_meter", meter_id=site.meters[0],
                               detail={"amount": "50.00", "meter_count": 2, "our_count": 4, "command_id": 1,
                                       **reason_fields(REASON)}).id
    username, password, _ = group.operator("group_admin", all_properties=True)
    sign_in(page, live_server, username, password)
    page.goto(f"{live_server}/alarms/{alarm_id}")
    panel, history = page.locator("dl.mh-kv").inner_text(), page.locator("table").first.inner_text()
    for text in LOCALES[locale]:
        assert text in panel and text in history, (panel, history)
    assert "meter refused purchase count 4 (its count 2)" not in panel + history  # the stored English text
    if locale == "zh-CN":
        assert not english_words(panel) and not english_words(history.split("\n", 1)[1]), (panel, history)
    _shot(page, f"alarm-reason-{locale}")
