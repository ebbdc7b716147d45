"""Valve-controlled water meter: CJ/T 188-2004 over a raw TCP stream, or Modbus with a named valve profile."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from drivers.water_valve.registers import (
    DEFAULT_MODBUS, XINTAI_MODBUS, ValveProfile, modbus_map, st_valve_open, valve_profile,
)
from meterhub.driver import ChannelReading, Driver, QRInfo, RegisterSpec, load_manifest
from meterhub.driver.base import now_utc, to_quantities
from meterhub.hookspecs import hookimpl
from meterhub.protocols import cjt188
from meterhub.protocols.errors import CommandNotApplied, DeviceError, QRCodeError, UnsupportedCommand

log = logging.getLogger(__name__)
DI_ORDERS = ("low_first", "high_first")


class WaterValve(Driver):
    """Cumulative m³ and valve open/close; every valve command is confirmed by reading the valve back."""

    registers = DEFAULT_MODBUS

    def registers_for(self, config: Mapping[str, Any]) -> tuple[RegisterSpec, ...]:
        return modbus_map(config) if config.get("protocol") == "modbus" else ()

    def register_maps(self) -> dict[str, tuple[RegisterSpec, ...]]:
        return {"modbus-read-only": DEFAULT_MODBUS, "modbus-xintai": XINTAI_MODBUS,
                "modbus-u32-coil": modbus_map({"flow_type": "u32", "flow_scale": "0.01", "valve_profile": "custom",
                                               "valve_function": 5, "valve_address": 0})}

    def validate_config(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        checked = super().validate_config(config)
        if checked.get("protocol") == "modbus":
            try:
                valve_profile(checked)
            except ValueError as err:
                import jsonschema

                raise jsonschema.ValidationError(str(err)) from err
        return checked

    def capabilities_for(self, config: Mapping[str, Any]) -> frozenset[str]:
        if config.get("protocol", "cjt188") == "modbus" and valve_profile(config) is None:
            return frozenset()
        return frozenset(self.capabilities)

    def check_address(self, address: Any) -> None:
        text = str(address)
        if not (text.isdigit() and 1 <= len(text) <= 14):
            raise QRCodeError(f"water meter address {address!r} must be 1–14 digits (CJ/T 188) or a slave id")

    def parse_qr(self, payload: str) -> QRInfo:
        """Water meter labels usually carry the CJ/T 188 address as the serial; use it as the address."""
        info = super().parse_qr(payload)
        if info.address is None and info.serial.isdigit() and len(info.serial) <= 14:
            return QRInfo(info.serial, info.model, info.serial, info.extra)
        return info

    def simulator(self, address: Any, config: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        from drivers.water_valve.simulator import WaterMeterSim

        return WaterMeterSim(address, self.validate_config(config), **kwargs)

    async def read(self, transport: Any, device: Any) -> list[ChannelReading]:
        config = self.validate_config(device.config)
        if config["protocol"] == "cjt188":
            data = await self._read_cjt188(transport, device, config)
            values: dict[str, Decimal | bool] = {"water_m3": data.flow_m3}
            valve_open = st_valve_open(data.status, config["st_convention"])
            if valve_open is not None:
                values["valve_open"] = valve_open
            return [ChannelReading(1, now_utc(), values)]
        specs = modbus_map(config)
        unit = int(device.address)
        raw = await self.read_specs(transport, unit, specs)
        values = to_quantities(specs, raw, Decimal(1), Decimal(1))
        profile = valve_profile(config)
        if profile is not None:
            state = await self._valve_state(transport, unit, profile, raw)
            if state is not None:
                values["valve_open"] = state
        values["water_m3"] = Decimal(values["water_m3"]).quantize(Decimal("0.001"))
        return [ChannelReading(1, now_utc(), values)]

    async def _read_cjt188(self, transport: Any, device: Any, config: Mapping[str, Any]) -> cjt188.MeterData:
        request = cjt188.read_request(str(device.address), config["meter_type"])
        reply = await transport.transact(request, di_order=config["di_order"])
        return cjt188.parse_meter_data(reply.data)

    async def _valve_state(self, transport: Any, unit: int, profile: ValveProfile,
                           raw: Mapping[str, Decimal] | None = None) -> bool | None:
        if profile.function == 5:
            return (await transport.read_coils(unit, profile.status_address, 1))[0]
        if raw is not None and "valve" in raw:
            return profile.state(int(raw["valve"]))
        return profile.state((await transport.read_holding_registers(unit, profile.status_address, 1))[0])

    async def read_identity(self, transport: Any, device: Any) -> str:
        """CJ/T 188: the address the meter answers with; Modbus: no serial register known, reads flow."""
        config = self.validate_config(device.config)
        if config["protocol"] == "cjt188":
            reply = await transport.transact(cjt188.read_request(str(device.address), config["meter_type"]),
                                             di_order=config["di_order"])
            return reply.address
        await self.read(transport, device)
        return f"WATER-{device.address}"

    async def detect(self, transport: Any, device: Any) -> dict[str, Any]:
        """CJ/T 188: the data-identifier byte order this meter answers (the configured one first)."""
        config = self.validate_config(device.config)
        if config["protocol"] != "cjt188":
            return {}
        tried: list[str] = []
        for order in (config["di_order"], *[o for o in DI_ORDERS if o != config["di_order"]]):
            try:
                await self._read_cjt188(transport, device, {**config, "di_order": order})
            except DeviceError as err:
                tried.append(f"{order}: {err}")
                continue
            return {"di_order": order}
        raise DeviceError("the meter answered 901F in neither data-identifier byte order (" + "; ".join(tried) + ")",
                          f"meter {device.address}")

    async def valve(self, transport: Any, device: Any, channel: int, open: bool) -> None:
        config = self.validate_config(device.config)
        if config["protocol"] == "cjt188":
            request = cjt188.valve_request(str(device.address), open, config["meter_type"])
            await transport.transact(request, di_order=config["di_order"])
            state = st_valve_open((await self._read_cjt188(transport, device, config)).status,
                                  config["st_convention"])
        else:
            profile = valve_profile(config)
            if profile is None:
                raise UnsupportedCommand(
                    "this Modbus water meter has no valve profile, so no valve register is written; set "
                    "valve_profile to 'xintai' or to 'custom' with the register from the meter's manual",
                    where=f"device {device.address}", error_code="driver.no_valve_profile")
            unit = int(device.address)
            value = profile.open_value if open else profile.close_value
            if profile.function == 5:
                await transport.write_coil(unit, profile.address, open)
            elif profile.function == 6:
                await transport.write_register(unit, profile.address, value)
            else:
                await transport.write_registers(unit, profile.address, [value])
            state = await self._valve_state(transport, unit, profile)
        if state is not open:
            shown = {True: "open", False: "closed", None: "in fault or unknown"}[state]
            raise CommandNotApplied(f"valve {'open' if open else 'close'} was sent but the meter reads its valve "
                                    f"{shown}", where=f"meter {device.address}",
                                    error_code="device.valve_not_applied")


driver = WaterValve(load_manifest(__file__))


@hookimpl
def register_drivers() -> list[Driver]:
    return [driver]
