"""Simulated ADF300 box: one ElectricChannel per circuit, each circuit at its own slave id."""

from __future__ import annotations

import random
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from drivers.acrel_adf300.registers import MAPS
from drivers.acrel_dtsd1352 import prepaid
from drivers.acrel_dtsd1352.simulator import electric_values
from meterhub.simulator.device import RegisterSimDevice
from meterhub.simulator.model import ElectricChannel, SimClock


class Adf300Sim(RegisterSimDevice):
    """A box at first slave id ``address`` answering ``circuits`` consecutive ids."""

    def __init__(self, address: int, config: Mapping[str, Any], clock: SimClock | None = None, seed: int = 1,
                 base_kw: float = 1.5, **_: Any) -> None:
        self.wiring = config.get("wiring", "single")
        self.circuits = int(config.get("circuits", 12))
        # how the box codes 0x0910: the literal count, or 0/1/2 = 36/24/12 (REGISTERS.md §10 [T])
        self.circuit_code = self.circuits if config.get("circuit_coding", "count") == "count" else \
            {36: 0, 24: 1, 12: 2}[self.circuits]
        super().__init__(address, MAPS[self.wiring], clock, address_space=[(0, 0x0100), (0x0200, 0x0230), (0x0900, 0x0960)])
        self.step = 3 if self.wiring == "three" else 1
        rng = random.Random(seed)
        self.channels = [
            ElectricChannel(random.Random(rng.random()), base_kw=base_kw * rng.uniform(0.5, 1.5),
                            phases=self.step, prepaid=not prepaid.platform_side(config))
            for _ in range(self.circuits // self.step)
        ]
        for ch in self.channels:
            ch.advance(self.clock.now())
        self.serial = f"{3000000000 + address * 104729 + seed:012d}"

    @property
    def unit_ids(self) -> tuple[int, ...]:
        return tuple(range(self.address, self.address + self.circuits))

    def channel_of(self, unit: int) -> ElectricChannel:
        """Phase ids of a three-phase circuit answer with the circuit's values."""
        return self.channels[(unit - self.address) // self.step]

    def meter_channels(self) -> list[Any]:
        return list(self.channels)

    def current_values(self, unit: int) -> dict[str, Decimal | int]:
        ch = self.channel_of(unit)
        ch.advance(self.clock.now())
        values = electric_values(ch, 1)
        values.update(prepaid.sim_values(ch, 10))
        values["sum_circuit_code"] = {36: 0, 24: 1, 12: 2}[self.circuits] << 8
        values.update(box_number=int(self.serial), circuit_code=self.circuit_code, box_mode=0,
                      com_main=self.address << 16 | 1, com_secondary=self.address << 16 | 1,
                      meter_number=int(self.serial) + unit - self.address + 1)
        return values

    def apply_write(self, unit: int, values: dict[str, Decimal]) -> None:
        ch = self.channel_of(unit)
        ch.advance(self.clock.now())
        prepaid.sim_write(ch, values)
