"""Register maps as data, one generic table-driven decoder, and a block planner.

Public API::

    RegisterSpec(key, address, count, type, scale, unit, meaning, rw="R", confidence="HIGH",
                 quantity=None, ratio="")
    plan_blocks(specs, max_count=100, max_gap=8) -> list[Block]   # contiguous FC03 reads
    decode_block(specs, start, registers) -> dict[key, Decimal]    # every spec fully inside the block
    encode_value(spec, value) -> list[int]                          # registers to write for a value
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from decimal import Decimal
from typing import Any

from meterhub.protocols.bcd import bcd_to_int, int_to_bcd
from meterhub.protocols.errors import FrameError

TYPE_COUNTS = {"u16": 1, "i16": 1, "bits": 1, "u32": 2, "i32": 2,
               "f32_abcd": 2, "f32_dcba": 2, "f32_cdab": 2, "f32_badc": 2}
VARIABLE_TYPES = {"bcd", "bytes", "block"}
CONFIDENCES = ("HIGH", "MED", "LOW", "INFERRED")
_F32_ORDER = {"f32_abcd": (0, 1, 2, 3), "f32_dcba": (3, 2, 1, 0), "f32_cdab": (2, 3, 0, 1),
              "f32_badc": (1, 0, 3, 2)}


@dataclass(frozen=True)
class RegisterSpec:
    """One row of a register map: where a value lives, how to decode it, and how sure we are."""

    key: str
    address: int
    count: int
    type: str
    scale: Decimal = Decimal(1)
    unit: str = ""
    meaning: str = ""
    rw: str = "R"
    confidence: str = "HIGH"
    quantity: str | None = None
    ratio: str = ""  # "", "pt", "ct" or "ptct": multiply by the device's transformer ratios

    def __post_init__(self) -> None:
        expected = TYPE_COUNTS.get(self.type)
        if expected is None and self.type not in VARIABLE_TYPES:
            raise ValueError(f"register {self.key}: unknown type {self.type!r}")
        if expected is not None and self.count != expected:
            raise ValueError(f"register {self.key}: type {self.type} needs {expected} registers, not {self.count}")
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"register {self.key}: confidence must be one of {CONFIDENCES}")
        if not 0 <= self.address <= 0xFFFF or self.count < 1 or self.rw not in ("R", "W", "RW"):
            raise ValueError(f"register {self.key}: bad address/count/rw")
        if self.ratio not in ("", "pt", "ct", "ptct"):
            raise ValueError(f"register {self.key}: bad ratio {self.ratio!r}")

    @property
    def end(self) -> int:
        """First address after this register."""
        return self.address + self.count

    @property
    def readable(self) -> bool:
        return "R" in self.rw and self.type != "block"


@dataclass(frozen=True)
class Block:
    """One contiguous read."""

    start: int
    count: int
    specs: tuple[RegisterSpec, ...]

    def decode(self, registers: Sequence[int]) -> dict[str, Decimal]:
        """``decode_block(self.specs, self.start, registers)``, with the per-spec work done once per block."""
        if len(registers) != self.count:
            return decode_block(self.specs, self.start, registers)
        return {key: (fast(registers, lo) if fast else _raw(spec, registers[lo:hi])) * scale
                for key, lo, hi, fast, scale, spec in self._decoders}

    @cached_property
    def _decoders(self) -> list[tuple[str, int, int, Any, Decimal, RegisterSpec]]:
        end = self.start + self.count
        return [(s.key, s.address - self.start, s.end - self.start, _FAST.get(s.type), s.scale, s)
                for s in self.specs if s.readable and s.address >= self.start and s.end <= end]


def _i16(words: Sequence[int], i: int) -> Decimal:
    w = words[i]
    return Decimal(w - 0x10000 if w & 0x8000 else w)


def _i32(words: Sequence[int], i: int) -> Decimal:
    value = words[i] << 16 | words[i + 1]
    return Decimal(value - (1 << 32) if value & 0x80000000 else value)


_FAST = {"u16": lambda words, i: Decimal(words[i]), "bits": lambda words, i: Decimal(words[i]), "i16": _i16,
         "u32": lambda words, i: Decimal(words[i] << 16 | words[i + 1]), "i32": _i32}


def plan_blocks(specs: Iterable[RegisterSpec], max_count: int = 100, max_gap: int = 8) -> list[Block]:
    """Group readable specs into contiguous reads of at most ``max_count`` registers.

    Specs closer than ``max_gap`` registers share a read (the gap registers are read and ignored).
    """
    ordered = sorted((s for s in specs if s.readable), key=lambda s: s.address)
    blocks: list[Block] = []
    current: list[RegisterSpec] = []
    for spec in ordered:
        if spec.count > max_count:
            raise ValueError(f"register {spec.key} ({spec.count} registers) exceeds max read {max_count}")
        if current:
            start, end = current[0].address, max(s.end for s in current)
            if spec.address - end <= max_gap and max(end, spec.end) - start <= max_count:
                current.append(spec)
                continue
            blocks.append(Block(start, end - start, tuple(current)))
        current = [spec]
    if current:
        start, end = current[0].address, max(s.end for s in current)
        blocks.append(Block(start, end - start, tuple(current)))
    return blocks


def _raw(spec: RegisterSpec, words: Sequence[int]) -> Decimal:
    t = spec.type
    if t in ("u16", "bits", "bytes"):
        return Decimal(words[0] if t != "bytes" else int.from_bytes(struct.pack(f">{len(words)}H", *words)))
    if t == "i16":
        return Decimal(words[0] - 0x10000 if words[0] & 0x8000 else words[0])
    if t in ("u32", "i32"):
        value = words[0] << 16 | words[1]
        if t == "i32" and value & 0x80000000:
            value -= 1 << 32
        return Decimal(value)
    if t == "bcd":
        return Decimal(bcd_to_int(struct.pack(f">{len(words)}H", *words), little_endian=False))
    raw = struct.pack(">HH", *words)
    ordered = bytes(raw[_F32_ORDER[t].index(i)] for i in range(4))
    value = struct.unpack(">f", ordered)[0]
    if not math.isfinite(value):
        raise FrameError(f"register {spec.key} holds a non-finite float")
    return Decimal(repr(value))


def decode_block(specs: Iterable[RegisterSpec], start: int, registers: Sequence[int]) -> dict[str, Decimal]:
    """Decode every readable spec that lies entirely inside ``registers`` (read from ``start``)."""
    end = start + len(registers)
    values: dict[str, Decimal] = {}
    for spec in specs:
        if not spec.readable or spec.address < start or spec.end > end:
            continue
        words = registers[spec.address - start : spec.end - start]
        values[spec.key] = _raw(spec, words) * spec.scale
    return values


def encode_value(spec: RegisterSpec, value: Decimal | int) -> list[int]:
    """Registers that hold ``value`` (in engineering units) for ``spec``; raises ValueError if out of range."""
    raw_dec = Decimal(value) / spec.scale
    t = spec.type
    if t.startswith("f32"):
        packed = struct.pack(">f", float(raw_dec))
        order = _F32_ORDER[t]
        wire = bytes(packed[order[i]] for i in range(4))
        return list(struct.unpack(">HH", wire))
    raw = int(raw_dec.to_integral_value())
    if raw != raw_dec:
        raise ValueError(f"{value} is not a multiple of {spec.scale} for register {spec.key}")
    if t == "bcd":
        return list(struct.unpack(f">{spec.count}H", int_to_bcd(raw, 2 * spec.count, little_endian=False)))
    bits = 16 * spec.count
    signed = t in ("i16", "i32")
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= raw <= high:
        raise ValueError(f"{value} out of range for register {spec.key} ({t})")
    raw &= (1 << bits) - 1
    return [(raw >> (16 * (spec.count - 1 - i))) & 0xFFFF for i in range(spec.count)]


def check_map(specs: Sequence[RegisterSpec]) -> list[str]:
    """Problems in a register map: duplicate keys, overlapping registers."""
    problems = []
    keys = [s.key for s in specs]
    problems += [f"duplicate key {k}" for k in sorted({k for k in keys if keys.count(k) > 1})]
    ordered = sorted(specs, key=lambda s: s.address)
    for a, b in zip(ordered, ordered[1:]):
        if b.address < a.end:
            problems.append(f"{a.key} (0x{a.address:04X}+{a.count}) overlaps {b.key} (0x{b.address:04X})")
    return problems
