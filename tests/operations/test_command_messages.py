"""Issue 21: why a device command failed is shown in the operator's language, on a batch's page and in an
account's command history, for every error a command can carry (``meterhub.commands.messages``).

The catalog is checked code by code (a new code without a zh_CN translation fails here), every code the sources
set is checked to be in the catalog, each place that fails a command is run for real and must store a code, and
both pages are rendered in zh_CN with a command failed by each code."""

from __future__ import annotations

import ast
import html
import re
from datetime import timedelta
from pathlib import Path

import pytest
from flask_babel import force_locale
from sqlalchemy import select, text

from meterhub.commands import ownership
from meterhub.commands.messages import LABELLED, MESSAGES, _msgid, describe, english, failure
from meterhub.commands.models import Command
from meterhub.commands.service import create_command, expire_overdue, transition
from meterhub.commands.worker import execute
from meterhub.db import service_session
from meterhub.devices.models import Meter
from meterhub.models import utcnow
from meterhub.modules.batch.models import BatchItem
from meterhub.modules.batch.service import create_batch, start_batch, sync_batch
from meterhub.protocols import errors as device_errors
from tests.operations.test_batch import Bus

ROOT = Path(__file__).resolve().parents[2]
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
CJK = re.compile(r"[\u4e00-\u9fff]")
SAMPLE = {"command": "valve"}  # a parameter shown through a label; the others are shown as they are


def _params(code: str) -> dict:
    return {name: SAMPLE.get(name, "7") for name in re.findall(r"%\((\w+)\)s", _msgid(code))}


def _zh(code: str) -> str:
    return describe(code, _params(code), "the stored English text")


# --- the catalog ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("code", sorted(MESSAGES))
def test_every_code_reads_in_chinese(app, code):
    """A code added without a zh_CN translation (or with placeholders that do not fit) fails here."""
    with app.test_request_context("/", headers=ZH):
        shown = _zh(code)
    assert CJK.search(shown), f"{code}: no Chinese in {shown!r}; translate it in messages.po"
    assert "%(" not in shown and shown != "the stored English text", shown
    assert english(code, _params(code)) not in shown
    for name in LABELLED:
        if name in _params(code):
            assert SAMPLE[name] not in shown, shown  # the kind as its Chinese label, not its key


def test_english_is_the_message_filled_and_an_old_row_is_its_text(app):
    with app.test_request_context("/", headers={"Accept-Language": "en"}):
        assert describe("command.orphaned", {"owner": "web-1:42"}, "") == \
            "web-1:42 stopped while sending it; the meter is read before sending again"
        assert describe(None, None, "TimeoutError: no answer") == "TimeoutError: no answer"  # written before codes
        assert describe("no.such_code", {}, "as stored") == "as stored"
    with pytest.raises(KeyError, match="add it to"):
        failure("no.such_code")


def _codes_set_in_sources() -> dict[str, str]:
    """Every literal error code the sources set: failure("…"), error_code="…", a reply's "code": "…"."""
    found: dict[str, str] = {}
    for folder in ("meterhub", "drivers"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                literal = None
                if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "failure" \
                        and node.args and isinstance(node.args[0], ast.Constant):
                    literal = node.args[0].value
                elif isinstance(node, ast.keyword) and node.arg == "error_code" and isinstance(node.value, ast.Constant):
                    literal = node.value.value
                elif isinstance(node, ast.Dict):
                    for key, value in zip(node.keys, node.values, strict=True):
                        if isinstance(key, ast.Constant) and key.value == "code" and isinstance(value, ast.Constant) \
                                and "." in str(value.value):
                            literal = value.value
                elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "error_code" for t in node.targets) \
                        and isinstance(node.value, ast.Constant):
                    literal = node.value.value
                if isinstance(literal, str):
                    found[literal] = str(path.relative_to(ROOT))
    return found


def test_every_code_the_sources_set_is_in_the_catalog():
    found = _codes_set_in_sources()
    assert len(found) > 30, found
    missing = {code: where for code, where in found.items() if code not in MESSAGES}
    assert not missing, f"add these codes to meterhub/commands/messages.py MESSAGES (and translate them): {missing}"
    classes = [device_errors.DeviceError, *_subclasses(device_errors.DeviceError)]
    assert {c.error_code for c in classes} <= set(MESSAGES)
    assert set(device_errors.MODBUS_EXCEPTION_CODES.values()) | {"modbus.other"} <= set(MESSAGES)


def _subclasses(cls: type) -> list[type]:
    return [sub for child in cls.__subclasses__() for sub in (child, *_subclasses(child))]


def test_no_command_error_or_batch_reason_is_set_as_bare_text():
    """A command's error goes through ``transition(error=failure(...))`` and a batch item's reason is a message:
    a plain string would show in English."""
    for folder in ("meterhub", "drivers"):
        for path in (ROOT / folder).rglob("*.py"):
            source = path.read_text(encoding="utf-8")
            assert not re.search(r"transition\([^)]*error=f?[\"']", source), path
    worker = (ROOT / "meterhub" / "commands" / "worker.py").read_text(encoding="utf-8")
    assert "Outcome(" in worker and not re.search(r"Outcome\(f?[\"']", worker)
    actions = (ROOT / "meterhub" / "modules" / "batch" / "actions.py").read_text(encoding="utf-8")
    assert "Outcome(" in actions and not re.search(r"Outcome\(\"\w+\", f?[\"']", actions)


# --- each place that fails a command, for real ------------------------------------------------------------

class RaisingDevice:
    """The device side of a command: ``switch`` raises the given error."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def supports(self, command, config) -> bool:
        return True

    async def switch(self, transport, device, channel, closed) -> None:
        raise self.error


def _quiet(site) -> None:
    with site.app.app_context(), service_session() as s:
        s.execute(text("UPDATE commands SET state = 'confirmed' WHERE meter_id = ANY(:m) AND state IN "
                       "('queued', 'sent')"), {"m": site.meters})


def _command(site, kind: str = "switch", params: dict | None = None, **options) -> int:
    with site.app.app_context(), service_session() as s:
        meter = s.get(Meter, site.meters[0])
        return create_command(s, meter, kind, {"closed": False} if params is None else params, **options).id


def _error(site, command_id: int) -> tuple[str, str | None, dict | None, str]:
    with site.app.app_context(), service_session() as s:
        c = s.get(Command, command_id)
        return c.state, c.error_code, c.error_params, c.error


@pytest.mark.parametrize("error, code", [
    (device_errors.ModbusExceptionReply(0x02, "unit 5", 0x10), "modbus.illegal_data_address"),
    (device_errors.ModbusExceptionReply(0x01, "unit 5"), "modbus.illegal_function"),
    (device_errors.ModbusExceptionReply(0x0C, "unit 5"), "modbus.other"),
    (device_errors.DeviceTimeout("no reply within 1.000 s", "unit 5", params={"seconds": 1.0}), "device.no_reply"),
    (device_errors.CrcError("CRC 1234 != 4321"), "device.bad_checksum"),
    (device_errors.FrameError("reply from unit 4, expected 5"), "device.bad_frame"),
    (TimeoutError("no answer"), "command.timeout"),
    (ConnectionResetError("gateway dropped the connection"), "gateway.unreachable"),
    (ValueError("top-up amount must be positive"), "command.unexpected"),
])
def test_a_failed_send_stores_its_code(site, error, code):
    _quiet(site)
    command_id = _command(site, max_attempts=1)
    with site.app.app_context():
        assert execute(command_id, registry={"acrel_dtsd1352": RaisingDevice(error)},
                       transport_factory=lambda gw: Bus()) == "failed"
    state, stored, params, text_ = _error(site, command_id)
    assert (state, stored) == ("failed", code) and text_, text_
    with site.app.test_request_context("/", headers=ZH):
        assert CJK.search(describe(stored, params, text_))


def test_the_real_driver_and_transport_failures_store_their_codes(site):
    from meterhub.plugins import driver_registry

    _quiet(site)
    registry = driver_registry()
    valve = _command(site, "valve", {"open": True}, max_attempts=1)  # a DTSD1352 has no valve
    with site.app.app_context():
        assert execute(valve, registry=registry, transport_factory=lambda gw: Bus()) == "failed"
    assert _error(site, valve)[1:3] == ("driver.cannot", {"command": "valve"})
    missing = _command(site, max_attempts=1)
    with site.app.app_context():
        assert execute(missing, registry={}, transport_factory=lambda gw: Bus()) == "failed"
    assert _error(site, missing)[1:3] == ("driver.not_installed", {"driver": "acrel_dtsd1352"})
    unreachable = _command(site, max_attempts=1)  # the site's gateway is 127.0.0.1:1: nothing listens
    with site.app.app_context():
        assert execute(unreachable, registry=registry) == "failed"
    assert _error(site, unreachable)[1] in ("gateway.cannot_connect", "gateway.polled_only")


def test_superseded_expired_and_orphaned_commands_store_their_codes(site):
    _quiet(site)
    first = _command(site)
    second = _command(site, params={"closed": True})
    assert _error(site, first)[:2] == ("cancelled", "command.superseded")

    late = _command(site, "read_now", {}, ttl=timedelta(seconds=-1))
    with site.app.app_context():
        assert execute(late) == "expired"
    assert _error(site, late)[:2] == ("expired", "command.expired_before_sending")

    with site.app.app_context(), service_session() as s:
        transition(s, s.get(Command, second), "sent")
        s.get(Command, second).expires_at = utcnow() - timedelta(seconds=1)
        assert second in expire_overdue(s)
    assert _error(site, second)[:2] == ("expired", "command.expired")

    orphan = _command(site, params={"closed": True})
    with site.app.app_context(), service_session() as s:
        command = s.get(Command, orphan)
        transition(s, command, "sent")
        command.owner, command.heartbeat_at = "worker-host:4242", utcnow() - timedelta(minutes=5)
    with site.app.app_context(), service_session() as s:
        assert orphan in ownership.sweep(s)["orphaned"]
    state, code, params, error = _error(site, orphan)
    assert (state, code, params) == ("queued", "command.orphaned", {"owner": "worker-host:4242"})
    assert "stopped while sending it" in error  # the English text stays for logs and the API


# --- the pages -----------------------------------------------------------------------------------------------

def _fail(s, command: Command, code: str) -> None:
    transition(s, command, "sent")
    transition(s, command, "failed", error=failure(code, f"English details of {code}", **_params(code)))


def test_batch_page_shows_every_error_in_chinese(site, client, operator):
    """One read-now batch per three codes (a batch holds each meter once); every reason in zh_CN."""
    operator("group_admin")
    _quiet(site)
    codes, batches = sorted(MESSAGES), []
    for start in range(0, len(codes), len(site.meters)):
        chunk = codes[start:start + len(site.meters)]
        with site.app.app_context(), service_session() as s:
            batch = create_batch(s, site.group_id, site.property_id, "read_now", {}, {"meter_ids": site.meters},
                                 actor="amy")
            start_batch(s, batch)
            items = s.execute(select(BatchItem).where(BatchItem.batch_id == batch.id).order_by(BatchItem.id)).scalars()
            for item, code in zip(items, chunk, strict=False):
                _fail(s, s.get(Command, item.command_id), code)
            sync_batch(s, batch)
            batches.append((batch.id, chunk))
    missing = []
    for batch_id, chunk in batches:
        page = html.unescape(client.get(f"/batch/{batch_id}", headers=ZH).get_data(as_text=True))
        with site.app.test_request_context("/", headers=ZH):
            wanted = {code: _zh(code) for code in chunk}
        missing += [(code, shown) for code, shown in wanted.items() if shown not in page]
        assert "English details of" not in page
    assert not missing, missing


def test_batch_export_gives_the_reason_in_the_readers_language(site):
    from meterhub.modules.batch.export import results_rows

    _quiet(site)
    with site.app.app_context(), service_session() as s:
        batch = create_batch(s, site.group_id, site.property_id, "read_now", {}, {"meter_ids": site.meters},
                             actor="amy")
        start_batch(s, batch)
        for item in s.execute(select(BatchItem).where(BatchItem.batch_id == batch.id)).scalars():
            _fail(s, s.get(Command, item.command_id), "modbus.illegal_data_address")
        sync_batch(s, batch)
        batch_id = batch.id
    with site.app.app_context(), service_session() as s, force_locale("zh_CN"):
        reasons = {row[5] for row in results_rows(s, batch_id)}
    with site.app.app_context(), service_session() as s, force_locale("en"):
        english_reasons = {row[5] for row in results_rows(s, batch_id)}
    assert len(reasons) == 1 and reasons.pop().startswith("仪表拒绝：非法数据地址")
    assert english_reasons == {"device refused: illegal data address (the register is not in this device's "
                               "map; check the model or variant)"}


def test_an_expired_or_cancelled_command_says_so_before_why(site):
    from meterhub.modules.batch.export import results_rows

    _quiet(site)
    with site.app.app_context(), service_session() as s:
        batch = create_batch(s, site.group_id, site.property_id, "read_now", {}, {"meter_ids": site.meters[:1]},
                             actor="amy")
        start_batch(s, batch)
        command = s.get(Command, s.execute(select(BatchItem.command_id).where(BatchItem.batch_id == batch.id))
                        .scalar_one())
        command.expires_at = utcnow() - timedelta(seconds=1)
        expire_overdue(s)
        sync_batch(s, batch)
        batch_id = batch.id
    with site.app.app_context(), service_session() as s, force_locale("zh_CN"):
        assert [row[5] for row in results_rows(s, batch_id)] == ["已过期：表计确认之前已超过有效期"]


def test_account_command_history_shows_every_error_in_chinese(site, client, operator):
    """Each account's meter gets a read-now command failed with a code, up to the page's 30 newest."""
    operator("group_admin")
    _quiet(site)
    codes = sorted(MESSAGES)
    per = -(-len(codes) // len(site.accounts))
    assert per <= 30
    missing = []
    for n, (account_id, meter_id) in enumerate(zip(site.accounts, site.meters, strict=True)):
        chunk = codes[n * per:(n + 1) * per]
        with site.app.app_context(), service_session() as s:
            meter = s.get(Meter, meter_id)
            for code in chunk:
                _fail(s, create_command(s, meter, "read_now", {}), code)
        page = html.unescape(client.get(f"/prepaid/accounts/{account_id}", headers=ZH).get_data(as_text=True))
        assert "English details of" not in page
        with site.app.test_request_context("/", headers=ZH):
            missing += [(code, _zh(code)) for code in chunk if _zh(code) not in page]
    assert not missing, missing


def test_old_rows_without_a_code_show_their_text(site, client, operator):
    operator("group_admin")
    _quiet(site)
    with site.app.app_context(), service_session() as s:
        command = create_command(s, s.get(Meter, site.meters[0]), "read_now", {})
        transition(s, command, "sent")
        transition(s, command, "failed")
        command.error = "TimeoutError: written before codes existed"
    page = html.unescape(client.get(f"/prepaid/accounts/{site.accounts[0]}", headers=ZH).get_data(as_text=True))
    assert "TimeoutError: written before codes existed" in page


def test_batch_page_gives_why_a_meter_was_skipped_in_chinese(site, client, operator):
    operator("group_admin")
    _quiet(site)
    with site.app.app_context(), service_session() as s:
        s.get(Meter, site.meters[0]).keep_power = True
        batch = create_batch(s, site.group_id, site.property_id, "switch_off", {}, {"meter_ids": site.meters},
                             actor="amy")
        start_batch(s, batch)
        batch_id = batch.id
    page = html.unescape(client.get(f"/batch/{batch_id}", headers=ZH).get_data(as_text=True))
    assert "该表计处于保电状态；请先恢复预付费" in page and "keep-power is on" not in page
    english = html.unescape(client.get(f"/batch/{batch_id}", headers={"Accept-Language": "en"}).get_data(as_text=True))
    assert "keep-power is on; resume prepaid first" in english
