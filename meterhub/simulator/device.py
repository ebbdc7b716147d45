"""Simulated devices as the server sees them: Modbus register images and CJ/T 188 handlers.

A driver's ``simulator(address, config, clock=..., seed=...)`` returns a ``SimDevice``. For Modbus maps,
subclass ``RegisterSimDevice`` and implement ``current_values()`` (register key -> engineering value,
computed from the physical model) and ``apply_write(values)``; the image is encoded with the driver's
own register map, so the simulator and the driver cannot disagree about addresses or types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from meterhub.driver.registers import RegisterSpec, decode_block, encode_value
from meterhub.protocols.errors import ModbusExceptionReply
from meterhub.simulator.model import SimClock

ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, DEVICE_FAILURE = 1, 2, 3, 4


class SimDevice:
    """One bus address. Modbus methods raise ModbusExceptionReply; the server turns it into a reply."""

    def __init__(self, address: Any, clock: SimClock | None = None) -> None:
        self.address = address
        self.clock = clock or SimClock()

    @property
    def unit_ids(self) -> tuple[Any, ...]:
        """Bus addresses this device answers (an ADF300 box answers a block of slave ids)."""
        return (self.address,)

    def read_registers(self, unit: int, address: int, count: int) -> list[int]:
        raise ModbusExceptionReply(ILLEGAL_FUNCTION)

    def write_registers(self, unit: int, address: int, values: Sequence[int]) -> None:
        raise ModbusExceptionReply(ILLEGAL_FUNCTION)

    def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        raise ModbusExceptionReply(ILLEGAL_FUNCTION)

    def write_coil(self, unit: int, address: int, on: bool) -> None:
        raise ModbusExceptionReply(ILLEGAL_FUNCTION)

    def handle_cjt188(self, frame: Any) -> Any:
        """Reply frame for a CJ/T 188 request, or None for no reply."""
        return None


class RegisterSimDevice(SimDevice):
    """Serves a register map; addresses outside ``address_space`` answer exception 02."""

    def __init__(self, address: Any, specs: Sequence[RegisterSpec], clock: SimClock | None = None,
                 address_space: Sequence[tuple[int, int]] | None = None) -> None:
        super().__init__(address, clock)
        self.specs_by_unit: dict[int, tuple[RegisterSpec, ...]] = {}
        self.set_map(specs)
        end = max((s.end for s in specs), default=0)
        self.address_space = tuple(address_space or [(0, end)])

    def set_map(self, specs: Sequence[RegisterSpec], unit: int | None = None) -> None:
        self.specs_by_unit[self.address if unit is None else unit] = tuple(specs)

    def specs(self, unit: int) -> tuple[RegisterSpec, ...]:
        return self.specs_by_unit.get(unit) or next(iter(self.specs_by_unit.values()))

    def current_values(self, unit: int) -> Mapping[str, Decimal | int]:
        raise NotImplementedError

    def apply_write(self, unit: int, values: dict[str, Decimal]) -> None:
        raise ModbusExceptionReply(ILLEGAL_ADDRESS)

    def _check_range(self, address: int, count: int) -> None:
        if not any(lo <= address and address + count <= hi for lo, hi in self.address_space):
            raise ModbusExceptionReply(ILLEGAL_ADDRESS)

    def image(self, unit: int, address: int, count: int) -> list[int]:
        words = [0] * count
        values = self.current_values(unit)
        for spec in self.specs(unit):
            if spec.end <= address or spec.address >= address + count or spec.key not in values:
                continue
            encoded = encode_value(spec, _fit(spec, values[spec.key]))
            for i, word in enumerate(encoded):
                if address <= spec.address + i < address + count:
                    words[spec.address + i - address] = word
        return words

    def read_registers(self, unit: int, address: int, count: int) -> list[int]:
        self._check_range(address, count)
        return self.image(unit, address, count)

    def write_registers(self, unit: int, address: int, values: Sequence[int]) -> None:
        self._check_range(address, len(values))
        end = address + len(values)
        touched = [s for s in self.specs(unit) if s.address < end and s.end > address]
        if not touched or any("W" not in s.rw or s.address < address or s.end > end for s in touched):
            raise ModbusExceptionReply(ILLEGAL_ADDRESS)
        writable = [RegisterSpec(s.key, s.address, s.count, s.type, s.scale, rw="RW") for s in touched]
        self.apply_write(unit, decode_block(writable, address, list(values)))


def _fit(spec: RegisterSpec, value: Decimal | int | bool) -> Decimal:
    """Quantize to the register's resolution and wrap counters like a real meter."""
    dec = Decimal(int(value)) if isinstance(value, bool) else Decimal(value)
    if spec.type.startswith("f32"):
        return dec
    raw = (dec / spec.scale).to_integral_value()
    bits = 16 * spec.count if spec.type != "bcd" else 0
    if spec.type in ("u16", "u32", "bits") and bits:
        raw = raw % (1 << bits)
    return raw * spec.scale
