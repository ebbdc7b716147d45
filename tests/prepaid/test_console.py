"""Console pages of the prepaid module: room monitor, counter with receipt, scope and permissions."""

from __future__ import annotations

import re
from decimal import Decimal

from meterhub.db import service_session
from meterhub.modules.prepaid import accounts

from ..conftest import csrf_token
from .conftest import EPOCH, write_readings


def _account(world) -> int:
    with world.app.app_context(), service_session() as s:
        write_readings(s, world.group_id, [(world.meters[0], EPOCH, Decimal(0))])
    with world.app.app_context(), service_session() as s:
        return accounts.create_account(s, world.group_id, world.property_id, [world.meters[0]], room_id=world.room_id,
                                       customer_name="Wang Fang", phone="13912345678", actor="t").id


def test_counter_topup_receipt_and_room_grid(world, client, operator):
    account_id = _account(world)
    operator("cashier")
    page = client.get("/prepaid/counter?q=1391234").get_data(as_text=True)
    assert "Wang Fang" in page
    page = client.get(f"/prepaid/accounts/{account_id}").get_data(as_text=True)
    key = re.search(r'name="key" value="(topup-[0-9a-f]+)"', page).group(1)
    token = csrf_token(client, f"/prepaid/accounts/{account_id}")
    form = {"csrf_token": token, "key": key, "amount": "50.00", "channel": "cash"}
    first = client.post(f"/prepaid/accounts/{account_id}/topup", data=form)
    again = client.post(f"/prepaid/accounts/{account_id}/topup", data=form)  # double click: same receipt
    assert first.status_code == 302 and first.location == again.location
    receipt = client.get(first.location).get_data(as_text=True)
    assert "50.00" in receipt and "Wang Fang" in receipt
    grid = client.get("/prepaid/rooms").get_data(as_text=True)
    assert "status-opened" in grid
    assert client.post(f"/prepaid/accounts/{account_id}/reverse", data=form).status_code == 404  # no money.reverse


def test_other_group_sees_nothing(world, client, other_group, login):
    account_id = _account(world)
    username, password, _ = other_group.operator("group_admin")
    login(username, password)
    assert client.get(f"/prepaid/accounts/{account_id}").status_code == 404
    assert "Wang Fang" not in client.get("/prepaid/counter?q=Wang").get_data(as_text=True)
    grid = client.get("/prepaid/rooms").get_data(as_text=True)
    assert f"/prepaid/accounts/{account_id}" not in grid and f"room_id={world.room_id}\"" not in grid
