"""Contract tests over every registered driver and each of its example devices."""

from __future__ import annotations

from decimal import Decimal

import jsonschema
import pytest

from meterhub.driver import CAPABILITIES, QUANTITIES, DeviceRef, check_map, format_qr, plan_blocks
from meterhub.driver.qr import QRInfo
from meterhub.driver.registers import TYPE_COUNTS
from meterhub.simulator.model import SimClock
from tests.drivers.conftest import CASES, REGISTRY, bus_with, run

DRIVERS = sorted(REGISTRY)


def test_builtin_drivers_registered():
    assert {"acrel_dtsd1352", "acrel_adf300", "water_valve"} <= set(REGISTRY)


@pytest.mark.parametrize("key", DRIVERS)
def test_metadata_and_schema(key):
    drv = REGISTRY[key]
    jsonschema.Draft202012Validator.check_schema(drv.config_schema)
    assert drv.capabilities <= CAPABILITIES
    assert drv.protocols and drv.vendor and drv.model
    assert set(drv.config_schema.get("secret", [])) <= set(drv.config_schema["properties"])
    defaults = drv.validate_config({})
    with pytest.raises(jsonschema.ValidationError):
        drv.validate_config({"no_such_option": 1})
    masked = drv.mask_config({**defaults, **{k: "s3cret" for k in drv.config_schema["secret"]}})
    for k in drv.config_schema["secret"]:
        assert masked[k] == "--------"
        assert drv.merge_secrets(masked, {k: "s3cret"})[k] == "s3cret"


@pytest.mark.parametrize("key", DRIVERS)
def test_register_maps_consistent(key):
    for name, specs in REGISTRY[key].register_maps().items():
        assert not check_map(specs), (name, check_map(specs))
        for spec in specs:
            assert spec.quantity is None or spec.quantity in QUANTITIES, spec
            if spec.type in TYPE_COUNTS:
                assert spec.count == TYPE_COUNTS[spec.type]
            assert isinstance(spec.scale, Decimal)
        for block in plan_blocks(specs):
            assert block.count <= 100
            inside = sorted(block.specs, key=lambda s: s.address)
            assert all(a.end <= b.address for a, b in zip(inside, inside[1:]))
            assert all(block.start <= s.address and s.end <= block.start + block.count for s in inside)


@pytest.mark.parametrize("key", DRIVERS)
def test_qr_round_trip(key):
    drv = REGISTRY[key]
    example = drv.examples()[0]
    info = QRInfo("2301234567", drv.models[0], str(example["address"]))
    parsed = drv.parse_qr(format_qr(info))
    assert (parsed.serial, parsed.model, parsed.address) == (info.serial, info.model, info.address)
    assert drv.parse_qr("https://label.example/q?sn=2301234567&x=1").serial == "2301234567"


@pytest.mark.parametrize(("key", "index"), CASES)
def test_simulator_round_trip(key, index):
    """Values grow; every capability changes the simulated device as the driver says."""
    drv = REGISTRY[key]
    example = drv.examples()[index]
    config = drv.validate_config(example["config"])
    clock = SimClock(acceleration=0.0)
    sim = drv.simulator(example["address"], config, clock=clock)
    device = DeviceRef(example["address"], config)
    caps = drv.capabilities_for(config)
    growing = "water_m3" if "valve" in drv.capabilities else "energy_kwh"
    flow = "flow_m3h" if "valve" in drv.capabilities else "power_kw"

    async def scenario():
        async with bus_with([sim], example["framing"]) as (_, bus):
            assert await drv.read_identity(bus, device)
            first = await drv.read(bus, device)
            assert len(first) == drv.channels(config)
            assert all(set(r.values) <= set(QUANTITIES) for r in first)
            clock.advance(6 * 3600)
            second = await drv.read(bus, device)
            assert second[-1].values[growing] > first[-1].values[growing]
            last = len(second)
            if "relay" in caps:
                await drv.switch(bus, device, last, closed=False)
                clock.advance(600)
                off = (await drv.read(bus, device))[-1].values
                assert off["relay_closed"] is False
                assert off.get(flow, Decimal(0)) == 0
                await drv.switch(bus, device, last, closed=True)
                assert (await drv.read(bus, device))[-1].values["relay_closed"] is True
            if "keep_power" in caps and config.get("prepaid_mode", "platform") == "platform":
                # keep-power lives on the platform: a restore is sent, and no reading claims keep-power
                await drv.switch(bus, device, last, closed=False)
                await drv.keep_power(bus, device, last, on=True)
                kept = (await drv.read(bus, device))[-1].values
                assert kept["relay_closed"] is True and "keep_power" not in kept
                await drv.keep_power(bus, device, last, on=False)
                assert (await drv.read(bus, device))[-1].values["relay_closed"] is True  # nothing was sent
            elif "keep_power" in caps:
                await drv.keep_power(bus, device, last, on=True)
                assert (await drv.read(bus, device))[-1].values["keep_power"] is True
                await drv.keep_power(bus, device, last, on=False)
                assert (await drv.read(bus, device))[-1].values["keep_power"] is False
            if "meter_side_prepaid" in caps:
                before = (await drv.read(bus, device))[-1].values
                count = int(before["purchase_count"]) + 1
                await drv.write_topup(bus, device, last, Decimal("50.00"), count)
                after = (await drv.read(bus, device))[-1].values
                assert after["purchase_count"] == count
                assert Decimal("49") < after["remaining_money"] - before["remaining_money"] <= Decimal("50.00")
                await drv.set_thresholds(bus, device, last, Decimal("30.00"), Decimal("15.50"), Decimal("5.00"))
                after = (await drv.read(bus, device))[-1].values
                assert (after["alarm1_money"], after["alarm2_money"], after["overdraft_money"]) == (
                    Decimal("30.00"), Decimal("15.50"), Decimal("5.00"))
            if "prices" in caps:
                await drv.set_prices(bus, device, last, [Decimal("1.5"), Decimal("1.1"), Decimal("0.8"),
                                                         Decimal("0.3")])
            if "overload_limit" in caps:
                await drv.set_overload_limit(bus, device, last, Decimal("5.000"))
            if "valve" in caps:
                await drv.valve(bus, device, 1, open=False)
                closed = (await drv.read(bus, device))[0].values
                clock.advance(3600)
                later = (await drv.read(bus, device))[0].values
                assert later["water_m3"] == closed["water_m3"]
                assert later.get("valve_open") is False
                await drv.valve(bus, device, 1, open=True)
                clock.advance(3600)
                assert (await drv.read(bus, device))[0].values["water_m3"] > later["water_m3"]

    run(scenario())


@pytest.mark.parametrize(("key", "index"), CASES)
def test_unsupported_commands_raise(key, index):
    from meterhub.protocols.errors import UnsupportedCommand

    drv = REGISTRY[key]
    config = drv.validate_config(drv.examples()[index]["config"])
    device = DeviceRef(drv.examples()[index]["address"], config)
    if "relay" not in drv.capabilities_for(config):
        with pytest.raises(UnsupportedCommand):
            run(drv.switch(None, device, 1, closed=False))
    if "valve" not in drv.capabilities_for(config):
        with pytest.raises(UnsupportedCommand):
            run(drv.valve(None, device, 1, open=False))
