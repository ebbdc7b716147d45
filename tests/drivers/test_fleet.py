"""The simulated fleet serves every device listed in its onboarding file."""

from __future__ import annotations

import json

from openpyxl import load_workbook

from meterhub.driver import DeviceRef
from meterhub.simulator.fleet import FORMAT, Fleet
from meterhub.transports import open_transport
from tests.drivers.conftest import REGISTRY, run


def test_fleet_onboarding_lists_readable_devices(tmp_path):
    fleet = Fleet(REGISTRY, gateways=3, devices=2, drivers=["acrel_dtsd1352", "water_valve", "acrel_adf300"],
                  acceleration=0.0)

    async def go():
        await fleet.start()
        try:
            data = fleet.onboarding()
            assert data["format"] == FORMAT and len(data["devices"]) == 6
            gateways = {g["name"]: g for g in data["gateways"]}
            for dev in data["devices"]:
                gw = gateways[dev["gateway"]]
                assert 0 < gw["port"] < 65536
                driver = REGISTRY[dev["driver"]]
                async with open_transport(gw["host"], gw["port"], gw["framing"], timeout=1.0) as bus:
                    readings = await driver.read(bus, DeviceRef(dev["address"], dev["config"]))
                    assert len(readings) == dev["channels"]
            json_path = fleet.write_onboarding(tmp_path / "fleet.json")
            assert json.loads(json_path.read_text())["devices"][0]["driver"] == "acrel_dtsd1352"
            book = load_workbook(fleet.write_onboarding(tmp_path / "fleet.xlsx"))
            assert book["devices"].max_row == 7 and book["gateways"].max_row == 4
        finally:
            await fleet.stop()

    run(go())
