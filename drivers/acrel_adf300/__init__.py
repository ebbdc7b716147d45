"""Acrel ADF300 multi-user metering box: one Device, one channel (Meter) per circuit.

``device.address`` is the box's first slave id; circuit n (1-based) answers at
``address + (n - 1)`` (single-phase) or ``address + 3 (n - 1)`` (three-phase circuits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from drivers.acrel_adf300.registers import BOX, MAPS
from drivers.acrel_dtsd1352 import prepaid
from meterhub.driver import ChannelReading, Driver, RegisterSpec, load_manifest
from meterhub.driver.base import now_utc, to_quantities
from meterhub.hookspecs import hookimpl
from meterhub.protocols.errors import DeviceMismatch, QRCodeError


#: 0x0910 as a code ([T] summary block, register 47 high byte): 0 = 36, 1 = 24, 2 = 12 circuits.
CIRCUIT_CODES = {0: 36, 1: 24, 2: 12}


def circuit_count(raw: int, where: str) -> tuple[int, str]:
    """(circuits, coding) from the box's 0x0910: the literal count or the 0/1/2 code; DeviceMismatch otherwise."""
    if raw in (12, 24, 36):
        return raw, "count"
    if raw in CIRCUIT_CODES:
        return CIRCUIT_CODES[raw], "code"
    raise DeviceMismatch(f"circuit count register 0x0910 reads {raw}, neither 12/24/36 nor a code 0/1/2", where)


class AcrelAdf300(Driver):
    """ADF300 box over Modbus RTU (through a serial server) or Modbus TCP."""

    registers = MAPS["single"]

    def registers_for(self, config: Mapping[str, Any]) -> tuple[RegisterSpec, ...]:
        return MAPS[config.get("wiring", "single")]

    def register_maps(self) -> dict[str, tuple[RegisterSpec, ...]]:
        return dict(MAPS)

    def capabilities_for(self, config: Mapping[str, Any]) -> frozenset[str]:
        return prepaid.capabilities(frozenset(self.capabilities), config)

    def channels(self, config: Mapping[str, Any]) -> int:
        circuits = int(config.get("circuits", 12))
        return circuits // 3 if config.get("wiring", "single") == "three" else circuits

    def unit_of(self, device: Any, channel: int, config: Mapping[str, Any]) -> int:
        """Slave id of ``channel`` (1-based)."""
        if not 1 <= channel <= self.channels(config):
            raise ValueError(f"ADF300 box {device.address} has no channel {channel} (1..{self.channels(config)})")
        step = 3 if config.get("wiring", "single") == "three" else 1
        return int(device.address) + step * (channel - 1)

    def check_address(self, address: Any) -> None:
        super().check_address(address)
        if int(str(address)) + 11 > 247:
            raise QRCodeError(f"ADF300 first slave id {address} leaves no room for 12 circuits (max id 247)")

    def simulator(self, address: Any, config: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        from drivers.acrel_adf300.simulator import Adf300Sim

        return Adf300Sim(int(address), self.validate_config(config), **kwargs)

    async def read(self, transport: Any, device: Any) -> list[ChannelReading]:
        config = self.validate_config(device.config)
        specs = prepaid.polled(self.registers_for(config), config)
        readings = []
        for channel in range(1, self.channels(config) + 1):
            raw = await self.read_specs(transport, self.unit_of(device, channel, config), specs)
            values: dict[str, Decimal | bool] = to_quantities(specs, raw, Decimal(1), Decimal(1))
            values.update(prepaid.relay_values(raw, config))
            readings.append(ChannelReading(channel, now_utc(), values))
        return readings

    async def read_identity(self, transport: Any, device: Any) -> str:
        """Box number (0x0905, BCD); checks the box's circuit count against the config."""
        config = self.validate_config(device.config)
        raw = await self.read_specs(transport, int(device.address), [s for s in BOX if s.key in
                                                                    ("box_number", "circuit_code")])
        circuits, _ = circuit_count(int(raw["circuit_code"]), f"ADF300 at id {device.address}")
        if circuits != config["circuits"]:
            raise DeviceMismatch(f"box reports {circuits} circuits, config says {config['circuits']}; fix the config",
                                 f"ADF300 at id {device.address}")
        return f"{int(raw['box_number']):012d}"

    async def detect(self, transport: Any, device: Any) -> dict[str, Any]:
        """How this box codes its circuit count at 0x0910 (literal 12/24/36, or 0/1/2 as in the summary block)."""
        raw = await self.read_specs(transport, int(device.address), [s for s in BOX if s.key == "circuit_code"])
        return {"circuit_coding": circuit_count(int(raw["circuit_code"]), f"ADF300 at id {device.address}")[1]}

    async def switch(self, transport: Any, device: Any, channel: int, closed: bool) -> None:
        config = self.validate_config(device.config)
        unit = self.unit_of(device, channel, config)
        await prepaid.switch(transport, unit, closed, config)
        await prepaid.confirm_relay(self, transport, unit, self.registers_for(config), closed)

    async def keep_power(self, transport: Any, device: Any, channel: int, on: bool) -> None:
        config = self.validate_config(device.config)
        unit = self.unit_of(device, channel, config)
        if await prepaid.keep_power(transport, unit, on, config) and on:
            await prepaid.confirm_relay(self, transport, unit, self.registers_for(config), True)

    async def write_topup(self, transport: Any, device: Any, channel: int, amount: Decimal,
                          purchase_count: int) -> None:
        config = self.validate_config(device.config)
        await prepaid.write_topup(transport, self.unit_of(device, channel, config), self.registers_for(config),
                                  amount, purchase_count)

    async def set_thresholds(self, transport: Any, device: Any, channel: int, alarm1: Decimal, alarm2: Decimal,
                             overdraft: Decimal) -> None:
        config = self.validate_config(device.config)
        await prepaid.set_thresholds(transport, self.unit_of(device, channel, config), self.registers_for(config),
                                     alarm1, alarm2, overdraft)

    async def set_prices(self, transport: Any, device: Any, channel: int, prices: Sequence[Decimal]) -> None:
        config = self.validate_config(device.config)
        await prepaid.set_prices(transport, self.unit_of(device, channel, config), self.registers_for(config), prices)

    async def set_overload_limit(self, transport: Any, device: Any, channel: int, limit_kw: Decimal) -> None:
        config = self.validate_config(device.config)
        await prepaid.set_overload_limit(transport, self.unit_of(device, channel, config),
                                         self.registers_for(config), limit_kw)


driver = AcrelAdf300(load_manifest(__file__))


@hookimpl
def register_drivers() -> list[Driver]:
    return [driver]
