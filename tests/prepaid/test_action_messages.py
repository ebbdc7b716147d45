"""Issue 21 item 8 in the console: every relay button answers with what was done to which room, and a command
that failed while its meter was away reads "waiting for the meter to come back" while its state is kept."""

from __future__ import annotations

import html

from sqlalchemy import text

from meterhub.db import service_session
from meterhub.tenants.models import Room

from ..conftest import csrf_token
from .test_console import _account


def test_switch_off_answers_with_the_room_and_a_failed_one_waits_for_the_meter(world, client, operator):
    account_id = _account(world)
    meter_id = world.meters[0]
    with world.app.app_context(), service_session() as s:
        room = s.get(Room, world.room_id).number
        s.execute(text("UPDATE devices SET driver_key = 'acrel_dtsd1352', config = '{\"variant\": \"dtsy1352\"}' "
                       "WHERE id = (SELECT device_id FROM meters WHERE id = :m)"), {"m": meter_id})
    operator("group_admin")
    token = csrf_token(client, f"/prepaid/accounts/{account_id}")
    page = client.post(f"/prepaid/meters/{meter_id}/command", data={"csrf_token": token, "kind": "off", "confirmed": "yes",
                                                                      "account_id": account_id},
                       follow_redirects=True)
    body = html.unescape(page.get_data(as_text=True))
    assert page.status_code == 200
    assert "Switch-off sent to" in body and room in body, body[:3000]
    # the gateway was offline: the command failed after its attempts; the desired state stays off
    with world.app.app_context(), service_session() as s:
        s.execute(text("UPDATE commands SET state = 'failed', error = 'TimeoutError: no answer', attempts = 3 "
                       "WHERE id = (SELECT max(id) FROM commands WHERE meter_id = :m AND kind = 'switch')"), {"m": meter_id})
    body = html.unescape(client.get(f"/prepaid/accounts/{account_id}").get_data(as_text=True))
    assert "waiting for the meter to come back — will switch off when it does" in body
    assert "TimeoutError: no answer" not in body
    page = client.post(f"/prepaid/meters/{meter_id}/command", data={"csrf_token": token, "kind": "read_now",
                                                                      "account_id": account_id},
                       follow_redirects=True)
    assert "reading requested" in html.unescape(page.get_data(as_text=True))
