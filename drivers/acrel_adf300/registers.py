"""ADF300 / ADF300L multi-user box: per-circuit maps and box-level registers.

Each circuit answers as its own slave id (REGISTERS.md §3, MED-HIGH). No public per-circuit table exists:
the per-circuit map is INFERRED to follow DDSY1352 (single-phase circuit) / DTSY1352 (three-phase), so
every per-circuit row is marked INFERRED here whatever its confidence on the DDSY/DTSY meters.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

from drivers.acrel_dtsd1352.registers import DDSY1352, DTSY1352
from meterhub.driver import RegisterSpec as R

BOX: tuple[R, ...] = (
    R("com_main", 0x0900, 2, "u32", D(1), "", "COM main: first slave id, baud index", "RW", "MED"),
    R("box_number", 0x0905, 3, "bcd", D(1), "", "Box meter number (BCD)", "RW", "MED"),
    R("box_mode", 0x0908, 1, "bits", D(1), "", "hi 0 prepaid / 1 metering; lo 1 = DL/T 645 enabled", "RW", "MED"),
    R("circuit_code", 0x0910, 1, "u16", D(1), "", "Circuit count code 12 / 24 / 36", "R", "MED"),
    R("com_secondary", 0x0911, 2, "u32", D(1), "", "COM secondary: first slave id, baud index", "RW", "MED"),
)


def _inferred(specs: tuple[R, ...]) -> tuple[R, ...]:
    """Per-circuit rows are INFERRED, except the summary block, which [T] polls on a circuit (type code 10)."""
    return tuple(s if s.key.startswith("sum_") else replace(s, confidence="INFERRED") for s in specs)


SINGLE_PHASE: tuple[R, ...] = _inferred(DDSY1352) + BOX
THREE_PHASE: tuple[R, ...] = _inferred(DTSY1352) + BOX
MAPS = {"single": SINGLE_PHASE, "three": THREE_PHASE}
