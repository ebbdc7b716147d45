"""Water meter maps: CJ/T 188 data identifiers, and the configurable Modbus map.

CJ/T 188 (REGISTERS.md §7, HIGH for framing; ST valve bits LOW): 901F = current cumulative flow,
A017 = valve control (55H open, 99H close). Modbus (one vendor, MED): Float32 DCBA at 0x0001 cumulative
m³, 0x0005 instantaneous flow; the valve register/coil address is INFERRED (configurable).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from meterhub.driver import RegisterSpec as R

CJT188_DIS = {"meter_data": 0x901F, "valve": 0xA017}


def modbus_map(config: Mapping[str, Any]) -> tuple[R, ...]:
    """The Modbus register map for a water meter with this config."""
    flow_type = config.get("flow_type", "f32_dcba")
    scale = Decimal(str(config.get("flow_scale", "1")))
    rows = [R("flow_total", int(config.get("flow_address", 1)), 2, flow_type, scale, "m3",
              "Forward cumulative flow", confidence="MED", quantity="water_m3")]
    rate = config.get("rate_address", 5)
    if rate is not None:
        rows.append(R("flow_rate", int(rate), 2, flow_type if flow_type != "u32" else "f32_dcba", Decimal(1),
                      "m3/h", "Instantaneous flow", confidence="MED", quantity="flow_m3h"))
    if config.get("valve_kind", "register") == "register":
        rows.append(R("valve", int(config.get("valve_address", 16)), 1, "u16", Decimal(1), "",
                      "Valve state/control (open/close values configurable)", "RW", "INFERRED"))
    return tuple(rows)


DEFAULT_MODBUS = modbus_map({})
