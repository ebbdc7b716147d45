"""Every dangerous console action asks first (issue 16): switch off, refund, reversal, close account, meter swap,
batch run, batch retry, token revoke. A POST without ``confirmed=yes`` (no JavaScript, a script, a replayed form)
answers with the confirmation page naming the room, tenant and amount, and changes nothing; the page's own form
(the same fields plus ``confirmed=yes``) does the action."""

from __future__ import annotations

import io
import re
from html import unescape

import pytest
from sqlalchemy import func, select

from meterhub.db import service_session
from tests.conftest import csrf_token
from tests.security.scope_world import Kit


@pytest.fixture()
def kit(app, group):
    from meterhub.tariffs import service as tariffs
    from meterhub.tariffs.models import Tariff
    from meterhub.tenants.models import Room

    with app.app_context(), service_session() as s:
        room = s.get(Room, group.room_id)
        kit = Kit(app, group.group_id, group.property_id, "P1", room.building_id, room.floor_id, group.room_id,
                  group.gateway_id, device_id=group.device_id)
    kit.tariff_id = kit.tariff()
    with app.app_context(), service_session() as s:
        tariffs.assign(s, group.group_id, "property", group.property_id, s.get(Tariff, kit.tariff_id))
    return kit


@pytest.fixture()
def admin(client, operator):
    operator("group_admin", all_properties=True)
    return csrf_token(client, "/password")


def _count(app, model, *where) -> int:
    with app.app_context(), service_session() as s:
        return s.execute(select(func.count()).select_from(model).where(*where)).scalar()


def _ask_then_do(client, url: str, form: dict, *, named: tuple[str, ...], changed) -> None:  # noqa: ANN001
    """A bare POST shows the confirmation naming ``named`` and leaves ``changed()`` as it was; the page's form acts."""
    before = changed()
    page = client.post(url, data=form)
    html = unescape(page.get_data(as_text=True))
    assert page.status_code == 200 and "mh-confirm-page" in html, (url, page.status_code)
    facts = re.search(r'<dl class="row mh-kv.*?</dl>', html, re.S).group(0)
    for text in named:
        assert text in html, f"{url}: {text} not in {re.sub(chr(60) + '[^>]*>', ' ', facts)}"
    assert changed() == before, f"{url} acted without confirmation"
    form_html = re.search(r'<section class="card border-danger mh-confirm-page".*?</form>', html, re.S).group(0)
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form_html):
        fields.setdefault(name, []).append(value)
    assert fields["confirmed"] == ["yes"]
    done = client.post(url, data=fields)
    assert done.status_code == 302, (url, done.status_code, done.get_data(as_text=True)[:400])
    assert changed() != before, f"{url} did nothing once confirmed"


def _account_state(app, account_id: int):  # noqa: ANN202
    from meterhub.ledger.models import Transfer
    from meterhub.modules.prepaid.models import PrepaidAccount

    with app.app_context(), service_session() as s:
        acc = s.get(PrepaidAccount, account_id)
        transfers = s.execute(select(func.count()).select_from(Transfer)
                              .where(Transfer.wallet_account_id == acc.wallet_account_id)).scalar()
        return acc.status, transfers


def test_refund_reversal_and_close_ask_first(app, client, kit, admin):
    acc = kit.account(balance="100.00")
    name = _customer(app, acc["account_id"])
    url = f"/prepaid/accounts/{acc['account_id']}"
    state = lambda: _account_state(app, acc["account_id"])  # noqa: E731
    _ask_then_do(client, f"{url}/refund", {"csrf_token": admin, "amount": "30", "channel": "cash", "key": "r-1",
                                           "reason": "moving out"},
                 named=(name, "¥30.00", "moving out"), changed=state)
    _ask_then_do(client, f"{url}/reverse", {"csrf_token": admin, "transfer_id": acc["transfer_id"], "key": "v-1",
                                            "reason": "wrong room"},
                 named=(name, "¥100.00", "wrong room"), changed=state)
    kit.topup(acc["account_id"])
    _ask_then_do(client, f"{url}/close", {"csrf_token": admin, "key": "c-1"}, named=(name, "Balance"), changed=state)
    assert state()[0] == "closed"


def _customer(app, account_id: int) -> str:
    from meterhub.modules.prepaid.models import PrepaidAccount

    with app.app_context(), service_session() as s:
        return s.get(PrepaidAccount, account_id).customer_name


def test_switch_off_and_meter_swap_ask_first(app, client, kit, admin):
    from meterhub.commands.models import Command
    from meterhub.modules.prepaid.models import MeterState

    acc = kit.account()
    name = _customer(app, acc["account_id"])
    meter = acc["meter_id"]
    commands = lambda: _count(app, Command, Command.meter_id == meter)  # noqa: E731
    _ask_then_do(client, f"/prepaid/meters/{meter}/command",
                 {"csrf_token": admin, "kind": "off", "account_id": acc["account_id"]},
                 named=(name, "Switch off"), changed=commands)
    before = commands()  # switching on or reading is not dangerous: no question
    assert client.post(f"/prepaid/meters/{meter}/command", data={"csrf_token": admin, "kind": "read_now"}).status_code == 302
    assert commands() == before + 1

    [spare] = kit.meters()
    bound = lambda: _count(app, MeterState, MeterState.meter_id == spare, MeterState.active)  # noqa: E731
    _ask_then_do(client, f"/prepaid/accounts/{acc['account_id']}/swap",
                 {"csrf_token": admin, "old_meter_id": meter, "new_meter_id": spare, "final_reading": "12.5",
                  "new_initial_reading": "0"},
                 named=(name, "12.5"), changed=bound)


def _account_numbers(app, kit, n: int) -> list[str]:
    """Numbers of ``n`` new accounts of the kit (one meter each): a batch names meters by them."""
    from meterhub.modules.prepaid.models import PrepaidAccount

    ids = [kit.account()["account_id"] for _ in range(n)]
    with app.app_context(), service_session() as s:
        return [s.get(PrepaidAccount, i).number for i in ids]


def test_batch_run_and_retry_ask_first_naming_how_many_meters(app, client, kit, admin):
    from meterhub.modules.batch.models import Batch, BatchItem

    numbers = _account_numbers(app, kit, 2)
    batches = lambda: _count(app, Batch, Batch.group_id == kit.group_id)  # noqa: E731
    _ask_then_do(client, "/batch/new", {"csrf_token": admin, "property_id": kit.property_id, "action": "read_now",
                                        "meters": "\n".join(numbers)},
                 named=("2 meters", "Read now"), changed=batches)

    failed = kit.batch(failed=True)
    retried = lambda: _count(app, BatchItem, BatchItem.batch_id == failed, BatchItem.status == "failed")  # noqa: E731
    _ask_then_do(client, f"/batch/{failed}/retry", {"csrf_token": admin}, named=(f"#{failed}",), changed=retried)


def test_a_batch_from_an_uploaded_list_keeps_the_list_through_the_confirmation(app, client, kit, admin):
    from openpyxl import Workbook

    from meterhub.modules.batch.models import Batch

    book = Workbook()
    for value in [*_account_numbers(app, kit, 2), "NO-SUCH-METER"]:
        book.active.append([value])
    buffer = io.BytesIO()
    book.save(buffer)
    form = {"csrf_token": admin, "property_id": kit.property_id, "action": "read_now",
            "file": (io.BytesIO(buffer.getvalue()), "list.xlsx")}
    page = unescape(client.post("/batch/new", data=form, content_type="multipart/form-data").get_data(as_text=True))
    assert "2 meters" in page and "NO-SUCH-METER" in page
    keys = re.search(r'name="keys" value="([^"]*)"', page, re.S).group(1)
    done = client.post("/batch/new", data={"csrf_token": admin, "property_id": kit.property_id, "action": "read_now",
                                           "keys": keys, "confirmed": "yes"})
    assert done.status_code == 302
    with app.app_context(), service_session() as s:
        batch = s.execute(select(Batch).where(Batch.group_id == kit.group_id).order_by(Batch.id.desc())).scalar()
        assert batch.total == 2


def test_token_revoke_asks_first(app, client, kit, admin):
    from meterhub.api.models import ApiToken

    prefix = kit.token()
    revoked = lambda: _count(app, ApiToken, ApiToken.prefix == prefix, ApiToken.revoked_at.is_not(None))  # noqa: E731
    _ask_then_do(client, f"/settings/api-tokens/{prefix}/revoke", {"csrf_token": admin},
                 named=(f"mh_{prefix}_",), changed=revoked)


def test_the_pages_put_the_dialog_on_every_dangerous_form(app, client, kit, admin):
    """With JavaScript the same facts show in a dialog before the POST: each dangerous form carries data-confirm
    and its facts (the server's page above stays the guard)."""
    acc = kit.account()
    html = client.get(f"/prepaid/accounts/{acc['account_id']}").get_data(as_text=True)
    for action in ("/refund", "/close", "/swap", "/reverse"):
        form = re.search(rf'<form[^>]*action="[^"]*{action}"[^>]*>', html)
        assert form and "data-confirm" in form.group(0), action
    off = re.search(r'<form[^>]*data-confirm[^>]*>(?:(?!</form>).)*name="kind" value="off"', html, re.S)
    assert off, "the switch-off button asks first"
    assert html.count('class="mh-confirm-facts"') >= 5


def test_a_refused_form_shows_the_error_beside_its_field_and_keeps_what_was_typed(client, admin):
    """The ``ui.field`` macro with ``webui.forms.field_errors``: the API-token form without a name."""
    page = client.post("/settings/api-tokens/", data={"csrf_token": admin, "name": " ", "scopes": ["read", "topup"],
                                                     "expires_days": "30"})
    html = unescape(page.get_data(as_text=True))
    assert page.status_code == 400
    field = re.search(r'<input class="form-control is-invalid" id="f-name"[^>]*aria-describedby="f-name-error"', html)
    assert field, "the name field is marked invalid and points to its message"
    assert re.search(r'id="f-name-error">Give the token a name', html)
    assert 'value="30"' in html and re.search(r'value="topup"\s+checked', html)  # what was typed stays
    ok = client.post("/settings/api-tokens/", data={"csrf_token": admin, "name": "meter reader", "scopes": "read"})
    assert ok.status_code == 200 and "is-invalid" not in ok.get_data(as_text=True)
