"""Valve-controlled water meter: CJ/T 188-2004 over a raw TCP stream, or a configurable Modbus map."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from drivers.water_valve.registers import DEFAULT_MODBUS, modbus_map
from meterhub.driver import ChannelReading, Driver, QRInfo, RegisterSpec, load_manifest
from meterhub.driver.base import now_utc, to_quantities
from meterhub.hookspecs import hookimpl
from meterhub.protocols import cjt188
from meterhub.protocols.errors import QRCodeError

log = logging.getLogger(__name__)


class WaterValve(Driver):
    """Cumulative m³ and valve open/close."""

    registers = DEFAULT_MODBUS

    def registers_for(self, config: Mapping[str, Any]) -> tuple[RegisterSpec, ...]:
        return modbus_map(config) if config.get("protocol") == "modbus" else ()

    def register_maps(self) -> dict[str, tuple[RegisterSpec, ...]]:
        return {"modbus-default": DEFAULT_MODBUS,
                "modbus-coil-u32": modbus_map({"flow_type": "u32", "flow_scale": "0.01", "valve_kind": "coil"})}

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
            request = cjt188.read_request(str(device.address), config["meter_type"])
            reply = await transport.transact(request, di_order=config["di_order"])
            data = cjt188.parse_meter_data(reply.data)
            values: dict[str, Decimal | bool] = {"water_m3": data.flow_m3}
            if data.valve_open is not None:
                values["valve_open"] = data.valve_open
            return [ChannelReading(1, now_utc(), values)]
        specs = modbus_map(config)
        unit = int(device.address)
        raw = await self.read_specs(transport, unit, specs)
        values = to_quantities(specs, raw, Decimal(1), Decimal(1))
        if config["valve_kind"] == "register":
            values["valve_open"] = int(raw["valve"]) == config["valve_open_value"]
        else:
            values["valve_open"] = (await transport.read_coils(unit, config["valve_address"], 1))[0]
        values["water_m3"] = Decimal(values["water_m3"]).quantize(Decimal("0.001"))
        return [ChannelReading(1, now_utc(), values)]

    async def read_identity(self, transport: Any, device: Any) -> str:
        """CJ/T 188: the address the meter answers with; Modbus: no serial register known, reads flow."""
        config = self.validate_config(device.config)
        if config["protocol"] == "cjt188":
            reply = await transport.transact(cjt188.read_request(str(device.address), config["meter_type"]),
                                             di_order=config["di_order"])
            return reply.address
        await self.read(transport, device)
        return f"WATER-{device.address}"

    async def valve(self, transport: Any, device: Any, channel: int, open: bool) -> None:
        config = self.validate_config(device.config)
        if config["protocol"] == "cjt188":
            request = cjt188.valve_request(str(device.address), open, config["meter_type"])
            reply = await transport.transact(request, di_order=config["di_order"])
            status = reply.data[0] if reply.data else None
            log.info("valve %s on meter %s, ST=%s", "open" if open else "close", device.address, status)
            return
        if config["valve_kind"] == "coil":
            await transport.write_coil(int(device.address), config["valve_address"], open)
        else:
            value = config["valve_open_value"] if open else config["valve_close_value"]
            await transport.write_registers(int(device.address), config["valve_address"], [value])


driver = WaterValve(load_manifest(__file__))


@hookimpl
def register_drivers() -> list[Driver]:
    return [driver]
