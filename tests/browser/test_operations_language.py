"""Operations as property staff run them (issue 21 items 2, 3, 7), in Chromium, in zh_CN and in English: an
apportioning rule built with the pickers (serials and account numbers found by search, never ids), a batch from
an Excel list of room labels whose unknown entries are listed before it runs, and a tenant who sees the
public-area share in the portal's money history with its reason in the tenant's language."""

from __future__ import annotations


import pytest
from openpyxl import Workbook
from sqlalchemy import select

from meterhub.db import service_session
from meterhub.modules.apportion.models import ApportionMember, ApportionRule
from meterhub.modules.batch.models import Batch
from meterhub.tenants.lookup import label_of
from tests.browser.conftest import ARTIFACTS, sign_in
from tests.portal.test_history import shared  # noqa: F401 (a fixture: an account that paid a public-area share)

LOCALES = {"zh-CN": {"method": "按固定比例", "left_out": "本项目中未找到（不执行）", "share": "公摊费用 走廊照明"},
           "en-US": {"method": "By fixed ratio", "left_out": "Not found in this property (left out)",
                     "share": "Public-area share (走廊照明)"}}


def _shot(page, name: str) -> None:  # noqa: ANN001
    """Keep what the journey looked like (test-artifacts/issue21/), to be looked at."""
    folder = ARTIFACTS / "issue21"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


@pytest.fixture(params=sorted(LOCALES))
def lang(request, browser):  # noqa: ANN001, ANN201
    """A page whose browser asks for the language under test (console and portal follow it)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=request.param)
    page = context.new_page()
    page.set_default_timeout(15000)
    yield request.param, page
    context.close()


def _admin(app, group, page, base):  # noqa: ANN001, ANN202
    username, password, _ = group.operator("group_admin", all_properties=True)
    sign_in(page, base, username, password)


def test_an_apportion_rule_built_with_pickers(lang, live_server, app, group, shared):  # noqa: F811
    locale, page = lang
    site, _run, _item = shared
    with app.app_context(), service_session() as s:
        parent_id = s.execute(select(ApportionRule.parent_meter_id).where(
            ApportionRule.group_id == group.group_id)).scalars().first()
        serial = label_of(s, group.group_id, "meter", parent_id)
        account_no = label_of(s, group.group_id, "account", site.account_id)
    _admin(app, group, page, live_server)
    page.goto(f"{live_server}/apportion/")
    form = page.locator("form[action$='/apportion/rules/new']")
    form.locator("input[name=name]").fill("二层公摊")
    form.locator("select[name=property_id]").select_option(str(group.property_id))
    # the parent meter: type part of its serial, the search offers it (with its room and property)
    form.locator("input[name=parent_meter]").fill(serial[:6])
    page.wait_for_function("(s) => [...document.querySelectorAll('#parent_meter-options option')]"
                           ".some(o => o.value === s)", arg=serial)
    form.locator("input[name=parent_meter]").fill(serial)
    # a member: search by account number, choosing it adds a line to the list
    form.locator("input[data-append-to=members]").fill(account_no)
    page.wait_for_function("(n) => document.querySelector('textarea[name=members]').value.includes(n)", arg=account_no)
    _shot(page, f"apportion-pickers-{locale}")
    form.locator("select[name=method]").select_option("ratio")
    form.locator("button").last.click()
    page.wait_for_url("**/apportion/rules/*")
    _shot(page, f"apportion-rule-{locale}")
    assert "二层公摊" in page.inner_text("h1") and LOCALES[locale]["method"] in page.content()
    with app.app_context(), service_session() as s:
        rule = s.execute(select(ApportionRule).where(ApportionRule.group_id == group.group_id,
                                                     ApportionRule.name == "二层公摊")).scalar_one()
        assert rule.parent_meter_id == parent_id
        assert s.execute(select(ApportionMember.account_id).where(ApportionMember.rule_id == rule.id)).scalar_one() \
            == site.account_id


def test_a_batch_from_an_excel_list_of_room_labels(lang, live_server, app, group, shared, tmp_path):  # noqa: F811
    locale, page = lang
    with app.app_context(), service_session() as s:
        room = label_of(s, group.group_id, "room", group.room_id)
        far_room = label_of(s, group.group_id, "room", group.room2_id)  # a room of the other property
    book = Workbook()
    book.active.append(("房间",))
    for key in (room, far_room, "Z-999"):
        book.active.append((key,))
    path = tmp_path / "rooms.xlsx"
    book.save(path)
    _admin(app, group, page, live_server)
    page.goto(f"{live_server}/batch/")
    form = page.locator("form[action$='/batch/new']")
    form.locator("select[name=property_id]").select_option(str(group.property_id))
    form.locator("select[name=action]").select_option("read_now")
    form.locator("input[name=at]").fill("2099-01-01T08:00")
    form.locator("input[name=file]").set_input_files(str(path))
    form.locator("button").last.click()
    # the confirmation lists what matched nothing before anything runs
    page.wait_for_selector("text=" + LOCALES[locale]["left_out"])
    listed = page.content()
    _shot(page, f"batch-confirm-{locale}")
    assert "Z-999" in listed and far_room in listed
    with app.app_context(), service_session() as s:
        assert s.execute(select(Batch).where(Batch.group_id == group.group_id)).first() is None
    page.locator("form button.btn-danger").click()
    page.wait_for_url("**/batch/*")
    with app.app_context(), service_session() as s:
        batch = s.execute(select(Batch).where(Batch.group_id == group.group_id)).scalar_one()
        assert batch.total >= 1 and sorted(batch.selection["unmatched"]) == sorted([far_room, "Z-999"])


def test_a_tenant_sees_the_public_area_share_in_the_portal(lang, live_server, app, group, shared,  # noqa: F811
                                                           monkeypatch):
    locale, page = lang
    site, _run, _item = shared
    codes: dict[str, str] = {}
    monkeypatch.setattr("meterhub.portal.auth.deliver_code",
                        lambda session, groups, phone, code: codes.__setitem__(phone, code) or True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server}/portal/login")
    page.fill("form[action*='/portal/code'] input[name=phone]", site.phone)
    page.click("#send-code")
    page.wait_for_selector("input[name=code]")
    from tests.portal.conftest import deliver_queued_codes

    assert deliver_queued_codes(app) == 1
    page.fill("input[name=code]", codes[site.phone])
    page.click("button.primary")
    page.wait_for_selector("#history")
    history = page.inner_text("#history")
    _shot(page, f"portal-history-{locale}")
    assert LOCALES[locale]["share"] in history and "24.79" in history, history
    assert ("Public-area" in history) == (locale == "en-US")
