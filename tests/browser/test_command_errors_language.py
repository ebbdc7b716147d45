"""Issue 21 in Chromium, zh_CN and English: a batch whose commands failed on the device and an account's command
history give why in the operator's language (screenshots in test-artifacts/issue21/ to be looked at)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from meterhub.commands.messages import failure
from meterhub.commands.models import Command
from meterhub.commands.service import create_command, transition
from meterhub.db import service_session
from meterhub.devices.models import Meter
from meterhub.modules.batch.models import BatchItem
from meterhub.modules.batch.service import create_batch, start_batch, sync_batch
from tests.browser.conftest import sign_in
from tests.browser.test_operations_language import _shot
from tests.operations.conftest import site  # noqa: F401 (a fixture: three accounts, each on its own meter)

FAILURES = (failure("modbus.illegal_data_address", "unit 5: Modbus exception 02 (illegal data address)"),
            failure("device.no_reply", "unit 6: no reply within 1.000 s", seconds=1.0),
            failure("gateway.connection_lost", "gw: connection lost (ConnectionResetError); will reconnect"))
LOCALES = {"zh-CN": ("仪表拒绝：非法数据地址", "仪表在 1.0 秒内无响应", "与网关的连接已断开"),
           "en-US": ("device refused: illegal data address", "no response from the device within 1.0 s",
                     "the connection to the gateway was lost")}


@pytest.fixture(params=sorted(LOCALES))
def lang(request, browser):  # noqa: ANN001, ANN201
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=request.param)
    page = context.new_page()
    page.set_default_timeout(15000)
    yield request.param, page
    context.close()


def _fail(s, command: Command, why) -> None:  # noqa: ANN001
    transition(s, command, "sent")
    transition(s, command, "failed", error=why)


def test_failed_commands_read_in_the_operators_language(lang, live_server, app, group, site):  # noqa: F811
    locale, page = lang
    with app.app_context(), service_session() as s:
        s.execute(Command.__table__.update().where(Command.meter_id.in_(site.meters),
                                                   Command.state.in_(("queued", "sent"))).values(state="confirmed"))
        batch = create_batch(s, site.group_id, site.property_id, "read_now", {}, {"meter_ids": site.meters},
                             actor="amy")
        start_batch(s, batch)
        items = s.execute(select(BatchItem).where(BatchItem.batch_id == batch.id).order_by(BatchItem.id)).scalars()
        for item, why in zip(items, FAILURES, strict=True):
            _fail(s, s.get(Command, item.command_id), why)
        sync_batch(s, batch)
        batch_id = batch.id
        meter = s.get(Meter, site.meters[0])
        for why in FAILURES:
            _fail(s, create_command(s, meter, "read_now", {}), why)
    username, password, _ = group.operator("group_admin", all_properties=True)
    sign_in(page, live_server, username, password)

    page.goto(f"{live_server}/batch/{batch_id}")
    table = page.locator("table").last.inner_text()
    texts = LOCALES[locale]
    for text in texts:
        assert text in table, table
    assert "Modbus exception" not in table and "ConnectionResetError" not in table
    _shot(page, f"batch-failed-commands-{locale}")

    page.goto(f"{live_server}/prepaid/accounts/{site.accounts[0]}")
    history = page.locator("#commands").inner_text()
    for text in texts:
        assert text in history, history
    assert "Modbus exception" not in history
    _shot(page, f"account-command-errors-{locale}")
