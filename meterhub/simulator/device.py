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
MEASUREMENT_REFRESH_S = 1.0  # device-clock seconds between register image refreshes


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

    def write_single(self, unit: int, address: int, value: int) -> None:
        """FC06; devices that take only FC16 (Acrel) answer exception 01."""
        raise ModbusExceptionReply(ILLEGAL_FUNCTION)

    def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        raise ModbusExceptionReply(ILLEGAL_FUNCTION)

    def write_coil(self, unit: int, address: int, on: bool) -> None:
        raise ModbusExceptionReply(ILLEGAL_FUNCTION)

    def handle_cjt188(self, frame: Any) -> Any:
        """Reply frame for a CJ/T 188 request, or None for no reply."""
        return None

    def meter_channels(self) -> list[Any]:
        """The physical channels (``ElectricChannel``/``WaterChannel``) in the driver's channel order: what
        :class:`~meterhub.simulator.fleet.Fleet` installs and describes; none by default."""
        return []


class RegisterSimDevice(SimDevice):
    """Serves a register map; addresses outside ``address_space`` answer exception 02."""

    def __init__(self, address: Any, specs: Sequence[RegisterSpec], clock: SimClock | None = None,
                 address_space: Sequence[tuple[int, int]] | None = None) -> None:
        super().__init__(address, clock)
        self._images: dict[int, tuple[int, dict[int, int]]] = {}
        self.specs_by_unit: dict[int, tuple[RegisterSpec, ...]] = {}
        self.set_map(specs)
        end = max((s.end for s in specs), default=0)
        self.address_space = tuple(address_space or [(0, end)])

    def set_map(self, specs: Sequence[RegisterSpec], unit: int | None = None) -> None:
        self.specs_by_unit[self.address if unit is None else unit] = tuple(specs)
        self._images.clear()

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
        """Register words ``address .. address+count-1`` (0 where the map defines nothing)."""
        words = self._words(unit)
        return [words.get(a, 0) for a in range(address, address + count)]

    def _words(self, unit: int) -> dict[int, int]:
        """The unit's whole register image, refreshed once per device-clock second and after any write —
        as a real meter refreshes its measurement registers (and it keeps a bus cycle's reads consistent)."""
        tick = int(self.clock.elapsed() // MEASUREMENT_REFRESH_S)
        cached = self._images.get(unit)
        if cached is not None and cached[0] == tick:
            return cached[1]
        values = self.current_values(unit)
        words: dict[int, int] = {}
        for spec in self.specs(unit):
            if spec.key in values:
                for i, word in enumerate(_encode(spec, values[spec.key])):
                    words[spec.address + i] = word
        self._images[unit] = (tick, words)
        return words

    def invalidate(self) -> None:
        """Forget the register images (state changed: a write, a relay, a top-up)."""
        self._images.clear()

    def read_registers(self, unit: int, address: int, count: int) -> list[int]:
        self._check_range(address, count)
        return self.image(unit, address, count)

    def write_registers(self, unit: int, address: int, values: Sequence[int]) -> None:
        self.invalidate()
        self._check_range(address, len(values))
        end = address + len(values)
        touched = [s for s in self.specs(unit) if s.address < end and s.end > address]
        if not touched or any("W" not in s.rw or s.address < address or s.end > end for s in touched):
            raise ModbusExceptionReply(ILLEGAL_ADDRESS)
        writable = [RegisterSpec(s.key, s.address, s.count, s.type, s.scale, rw="RW") for s in touched]
        self.apply_write(unit, decode_block(writable, address, list(values)))


_UNSIGNED, _SIGNED = frozenset({"u16", "u32", "bits"}), frozenset({"i16", "i32"})


def _encode(spec: RegisterSpec, value: Decimal | int | bool) -> list[int]:
    """``encode_value(spec, _fit(spec, value))``; integer registers take a short path (image refreshes)."""
    t = spec.type
    if t in _UNSIGNED or t in _SIGNED:
        dec = Decimal(int(value)) if isinstance(value, bool) else Decimal(value)
        raw = int((dec / spec.scale).to_integral_value())
        bits = 16 * spec.count
        if raw < 0 if t in _UNSIGNED else not -(1 << (bits - 1)) <= raw < 1 << (bits - 1):
            return encode_value(spec, _fit(spec, value))  # raises the generic out-of-range error
        if t in _UNSIGNED:
            raw %= 1 << bits  # counters wrap like a real meter's
        raw &= (1 << bits) - 1
        return [raw >> 16 & 0xFFFF, raw & 0xFFFF] if spec.count == 2 else [raw]
    return encode_value(spec, _fit(spec, value))


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
