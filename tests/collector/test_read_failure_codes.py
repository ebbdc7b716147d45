"""A meter read through the collector that owns its bus fails with the device's own error code and parameters
(not only "the meter could not be read" with the collector's English text): the failed read-now command shows why
in the operator's language."""

from __future__ import annotations

from flask_babel import force_locale

from meterhub.collector.jobs import bus_owner
from meterhub.commands import worker
from meterhub.commands.messages import describe
from meterhub.commands.models import Command
from meterhub.commands.service import create_command
from meterhub.db import service_session
from meterhub.devices.models import Device, Meter
from tests.alarms.test_alarm_messages import CJK, english_words
from tests.collector.test_commands_via_collector import PrepaidBus, _point
from tests.collector.test_service import Running, _collector, _wait


def test_a_read_through_the_collector_that_gets_no_reply_stores_the_devices_code(app, group):
    bus = PrepaidBus()
    try:
        meter_id = _point(app, group, bus.server.port)
        with app.app_context(), service_session() as s:
            s.get(Device, group.device_id).address = "9"  # nothing answers at this address
        with Running(_collector(app, group, interval_s=3600)), app.app_context():
            _wait(lambda: bus_owner(group.gateway_id) is not None)
            with service_session() as s:
                command_id = create_command(s, s.get(Meter, meter_id), "read_now", {}, max_attempts=1).id
            assert worker.execute(command_id) == "failed"
            with service_session() as s:
                command = s.get(Command, command_id)
                code, params, error = command.error_code, command.error_params, command.error
    finally:
        bus.close()
    assert code == "device.no_reply" and float(params["seconds"]) > 0, (code, params, error)
    assert "no reply" in error  # the English text stays for logs and the API
    with app.app_context(), force_locale("zh_CN"):
        said = describe(code, params, error)
    assert CJK.search(said) and not english_words(said), said


def test_a_whole_read_that_failed_gives_each_meter_its_code(app, group):
    """A bus owner that could not read at all (gateway unreachable) answers every meter of the request with the
    failure's code and parameters, read back by ``wait_read_now`` and turned into the command's code by the link."""
    import asyncio

    import redis.asyncio as aioredis

    from meterhub.collector.jobs import namespace, request_read_now, send_reply, wait_read_now
    from tests.api.world import open_site

    site = open_site(app, group)
    with app.app_context():
        request_id = request_read_now([site.meter_id])
        job = {"id": request_id, "kind": "read", "meter_ids": [site.meter_id]}
        failed = {"ok": False, "error": "gateway unreachable: refused", "code": "gateway.unreachable"}

        async def answer() -> None:
            client = aioredis.from_url(app.config["REDIS_URL"])
            try:
                await send_reply(client, namespace(app), job, group.gateway_id, failed)
            finally:
                await client.aclose()

        asyncio.run(answer())
        result = wait_read_now(request_id, timeout=2)
    reply = result.meters[site.meter_id]
    assert (reply["ok"], reply["code"], reply["params"]) == (False, "gateway.unreachable", {}), reply
