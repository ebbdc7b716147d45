"""Acrel DTSD1352 three-phase meter, with the DTSY1352/DDSY1352 prepaid variants (config ``variant``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any

from drivers.acrel_dtsd1352 import prepaid
from drivers.acrel_dtsd1352.registers import DTSD1352, VARIANTS
from meterhub.driver import ChannelReading, Driver, RegisterSpec, load_manifest
from meterhub.driver.base import now_utc, spec_index, to_quantities
from meterhub.hookspecs import hookimpl
from meterhub.protocols.errors import DeviceMismatch


@lru_cache(maxsize=None)
def _polled(variant: str, read_ratios: bool, prepaid_mode: str) -> tuple[RegisterSpec, ...]:
    """The registers a poll reads: quantities and the relay state (money rows in meter mode; PT/CT when asked)."""
    specs = VARIANTS[variant]
    wanted = prepaid.polled(specs, {"prepaid_mode": prepaid_mode})
    if read_ratios and variant == "dtsd1352":
        wanted += [s for s in specs if s.key in ("pt", "ct")]
    return tuple(wanted)


class AcrelDtsd1352(Driver):
    """DTSD1352 / DTSY1352 / DDSY1352 over Modbus (RTU through a serial server, or TCP)."""

    registers = DTSD1352

    def registers_for(self, config: Mapping[str, Any]) -> tuple[RegisterSpec, ...]:
        return VARIANTS[config.get("variant", "dtsd1352")]

    def register_maps(self) -> dict[str, tuple[RegisterSpec, ...]]:
        return dict(VARIANTS)

    def capabilities_for(self, config: Mapping[str, Any]) -> frozenset[str]:
        base = frozenset(self.manifest["capabilities_by_variant"][config.get("variant", "dtsd1352")])
        return prepaid.capabilities(base, config)

    def simulator(self, address: Any, config: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        from drivers.acrel_dtsd1352.simulator import AcrelMeterSim

        return AcrelMeterSim(int(address), self.validate_config(config), **kwargs)

    async def read(self, transport: Any, device: Any) -> list[ChannelReading]:
        config = self.validate_config(device.config)
        specs = self.registers_for(config)
        wanted = _polled(config["variant"], bool(config["read_ratios"]), config["prepaid_mode"])
        raw = await self.read_specs(transport, int(device.address), wanted)
        pt = raw.get("pt", Decimal(config["pt"])) if config["variant"] == "dtsd1352" else Decimal(1)
        ct = raw.get("ct", Decimal(config["ct"])) if config["variant"] == "dtsd1352" else Decimal(1)
        values: dict[str, Decimal | bool] = to_quantities(specs, raw, pt, ct)
        if "relay" in self.capabilities_for(config):
            values.update(prepaid.relay_values(raw, config))
        return [ChannelReading(1, now_utc(), values)]

    def decode_summary(self, device: Any, registers: list[int]) -> list[ChannelReading]:
        """A reading from the 48 registers of the summary block as a 4G meter uploads them (0x0200 x48)."""
        from drivers.acrel_dtsd1352.registers import SUMMARY, SUMMARY_BASE, SUMMARY_COUNT
        from meterhub.driver.registers import decode_block

        config = self.validate_config(device.config)
        if config["variant"] == "dtsd1352" or len(registers) != SUMMARY_COUNT:
            raise ValueError(f"a {config['variant']} has no {SUMMARY_COUNT}-register summary block to decode")
        raw = decode_block(SUMMARY, SUMMARY_BASE, registers)
        return [ChannelReading(1, now_utc(), prepaid.summary_values(raw, config))]

    async def read_identity(self, transport: Any, device: Any) -> str:
        """Meter number (0x0043) on prepaid variants; on DTSD1352 (no serial register known) the COM1
        address is checked against the slave id and ``DTSD1352-<id>`` returned."""
        config = self.validate_config(device.config)
        unit = int(device.address)
        if config["variant"] == "dtsd1352":
            words = await transport.read_holding_registers(unit, 0x003F, 1)
            if words[0] >> 8 != unit:
                raise DeviceMismatch(f"COM1 address register says {words[0] >> 8}, expected {unit}",
                                     f"device {unit}")
            return f"DTSD1352-{unit}"
        spec = spec_index(self.registers_for(config))["meter_number"]
        raw = await self.read_specs(transport, unit, [spec])
        return f"{int(raw['meter_number']):012d}"

    async def detect(self, transport: Any, device: Any) -> dict[str, Any]:
        """PT and CT as the meter holds them (DTSD1352: 0x008D/0x008E; prepaid variants: 0x0037/0x0038)."""
        config = self.validate_config(device.config)
        specs = [s for s in self.registers_for(config) if s.key in ("pt", "ct")]
        raw = await self.read_specs(transport, int(device.address), specs)
        return {"pt": max(int(raw["pt"]), 1), "ct": max(int(raw["ct"]), 1)}

    async def switch(self, transport: Any, device: Any, channel: int, closed: bool) -> None:
        config = self._command_config(device, "switch")
        unit = int(device.address)
        await prepaid.switch(transport, unit, closed, config)
        await prepaid.confirm_relay(self, transport, unit, self.registers_for(config), closed)

    async def keep_power(self, transport: Any, device: Any, channel: int, on: bool) -> None:
        config = self._command_config(device, "keep_power")
        unit = int(device.address)
        if await prepaid.keep_power(transport, unit, on, config) and on:
            await prepaid.confirm_relay(self, transport, unit, self.registers_for(config), True)

    async def write_topup(self, transport: Any, device: Any, channel: int, amount: Decimal,
                          purchase_count: int) -> None:
        config = self._command_config(device, "write_topup")
        await prepaid.write_topup(transport, int(device.address), self.registers_for(config), amount, purchase_count)

    async def set_thresholds(self, transport: Any, device: Any, channel: int, alarm1: Decimal, alarm2: Decimal,
                             overdraft: Decimal) -> None:
        config = self._command_config(device, "set_thresholds")
        await prepaid.set_thresholds(transport, int(device.address), self.registers_for(config),
                                     alarm1, alarm2, overdraft)

    async def set_prices(self, transport: Any, device: Any, channel: int, prices: Sequence[Decimal]) -> None:
        config = self._command_config(device, "set_prices")
        await prepaid.set_prices(transport, int(device.address), self.registers_for(config), prices)

    async def set_overload_limit(self, transport: Any, device: Any, channel: int, limit_kw: Decimal) -> None:
        config = self._command_config(device, "set_overload_limit")
        await prepaid.set_overload_limit(transport, int(device.address), self.registers_for(config), limit_kw)

    def _command_config(self, device: Any, command: str) -> dict[str, Any]:
        config = self.validate_config(device.config)
        if not self.supports(command, config):
            self._unsupported(command, device)
        return config


driver = AcrelDtsd1352(load_manifest(__file__))


@hookimpl
def register_drivers() -> list[Driver]:
    return [driver]
