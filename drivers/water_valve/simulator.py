"""Simulated valve water meter speaking CJ/T 188 or the configured Modbus map."""

from __future__ import annotations

import random
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from drivers.water_valve.registers import modbus_map, st_byte, valve_profile
from meterhub.protocols import cjt188
from meterhub.protocols.errors import ModbusExceptionReply
from meterhub.simulator.device import RegisterSimDevice
from meterhub.simulator.model import SimClock, WaterChannel


class WaterMeterSim(RegisterSimDevice):
    """Volume grows while the valve is open; closing the valve stops flow.

    ``stuck`` models a valve whose motor does not move (the write is acknowledged, the state stays): what
    the driver's read-back must catch. A CJ/T 188 meter stays silent on a request in the other DI byte order.
    """

    def __init__(self, address: Any, config: Mapping[str, Any], clock: SimClock | None = None, seed: int = 1,
                 base_m3h: float = 0.5, **_: Any) -> None:
        self.config = dict(config)
        self.protocol = config.get("protocol", "cjt188")
        specs = modbus_map(config) if self.protocol == "modbus" else ()
        addr = int(address) if self.protocol == "modbus" else str(address)
        super().__init__(addr, specs, clock, address_space=[(0, 0x0040)])
        self.channel = WaterChannel(random.Random(seed), base_m3h=base_m3h)
        self.serial = str(address)
        self.channel.advance(self.clock.now())
        self.profile = valve_profile(self.config) if self.protocol == "modbus" else None
        self.stuck = False
        self.low_battery = False

    @property
    def unit_ids(self) -> tuple[Any, ...]:
        if self.protocol == "cjt188":
            return (str(self.address).lstrip("0") or "0",)
        return (self.address,)

    def meter_channels(self) -> list[Any]:
        return [self.channel]

    def current_values(self, unit: int) -> dict[str, Decimal | int]:
        self.channel.advance(self.clock.now())
        values: dict[str, Decimal | int] = {"flow_total": self.channel.volume_m3,
                                            "flow_rate": Decimal(repr(round(self.channel.flow_m3h, 4)))}
        if self.profile is not None and self.profile.function != 5:
            values["valve"] = self.profile.status_word(self.channel.valve_open, self.low_battery)
        return values

    def apply_write(self, unit: int, values: dict[str, Decimal]) -> None:
        if self.profile is None or self.profile.function != 16 or set(values) != {"valve"}:
            raise ModbusExceptionReply(2)
        self._command(int(values["valve"]))

    def write_single(self, unit: int, address: int, value: int) -> None:
        if self.profile is None or self.profile.function != 6 or address != self.profile.address:
            raise ModbusExceptionReply(2)
        self._command(value)

    def _command(self, value: int) -> None:
        assert self.profile is not None
        if value not in (self.profile.open_value, self.profile.close_value):
            raise ModbusExceptionReply(3)
        self.set_valve(value == self.profile.open_value)

    def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        if self.profile is None or self.profile.function != 5 or address != self.profile.address or count != 1:
            raise ModbusExceptionReply(2)
        return [self.channel.valve_open]

    def write_coil(self, unit: int, address: int, on: bool) -> None:
        if self.profile is None or self.profile.function != 5 or address != self.profile.address:
            raise ModbusExceptionReply(2)
        self.set_valve(on)

    def set_valve(self, open_valve: bool) -> None:
        if self.stuck:
            return
        self.channel.advance(self.clock.now())
        self.channel.valve_open = open_valve
        self.invalidate()

    def status(self) -> int:
        return st_byte(self.channel.valve_open, self.config.get("st_convention", "d0d1"))

    def handle_cjt188(self, frame: cjt188.Cjt188Frame) -> cjt188.Cjt188Frame | None:
        if frame.meter_type not in (self.config["meter_type"], cjt188.WILDCARD_TYPE):
            return None
        reply_type = self.config["meter_type"]
        if frame.control == cjt188.READ_DATA and frame.di == cjt188.DI_METER_DATA:
            self.channel.advance(self.clock.now())
            payload = cjt188.meter_data_payload(self.channel.volume_m3, self.channel.settlement_m3,
                                                self.clock.now(), self.status())
            return cjt188.Cjt188Frame(reply_type, self.serial, 0x81, frame.di, frame.ser, payload)
        if frame.control == cjt188.WRITE_DATA and frame.di == cjt188.DI_VALVE and len(frame.data) == 1:
            if frame.data[0] in (cjt188.VALVE_OPEN, cjt188.VALVE_CLOSE):
                self.set_valve(frame.data[0] == cjt188.VALVE_OPEN)
                return cjt188.Cjt188Frame(reply_type, self.serial, 0x84, frame.di, frame.ser,
                                          bytes([self.status(), 0]))
        if frame.di not in (cjt188.DI_METER_DATA, cjt188.DI_VALVE):
            return None  # an identifier it does not know (e.g. the other byte order): the meter stays silent
        return cjt188.Cjt188Frame(reply_type, self.serial, frame.control | 0xC0, None, 0, b"\x01")


