"""Water meter maps: CJ/T 188 data identifiers, the Modbus flow registers and the valve profiles.

CJ/T 188 (REGISTERS.md §7, HIGH for framing; §10 [K]): 901F = current cumulative flow, A017 = valve control
(55H open, 99H close). The DI byte order and the ST valve bits differ between meters: both are detected at
onboarding and stored with the device. Modbus (REGISTERS.md §10 [P], Kaifeng Xintai, MED): Float32 DCBA at
0x0001 cumulative m³, 0x0005 instantaneous flow.

Valves are never written at a guessed address: a Modbus water meter switches its valve only through a named
profile. ``xintai`` is sourced ([P]): register 0x001C written 1 open / 2 close with FC06, read as a bit field
(0x01 open, 0x02 closed, 0x04 fault, 0x08 low battery); 0x000F–0x0011 hold the meter's communication
parameters and are never written. ``custom`` takes every value from the device's config (from the meter's
own manual). Without a profile the meter is read, and a valve command is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from meterhub.driver import RegisterSpec as R

CJT188_DIS = {"meter_data": 0x901F, "valve": 0xA017}
#: ST byte 0 conventions: (mask, value meaning open, value meaning closed).
ST_CONVENTIONS = {
    "d0d1": (0x03, 0x00, 0x01),   # [K] D0–D1: 00 open, 01 closed, 11 fault
    "bit6": (0x40, 0x00, 0x40),   # one master masks 0x40 = closed (the mirror image of D1)
}


def st_valve_open(status: int, convention: str) -> bool | None:
    """Valve state from the CJ/T 188 ST byte 0 under the meter's convention; None for fault/unknown."""
    mask, opened, closed = ST_CONVENTIONS[convention]
    bits = status & mask
    return True if bits == opened else False if bits == closed else None


def st_byte(open_valve: bool, convention: str) -> int:
    """ST byte 0 a meter of this convention reports (simulator side)."""
    _, opened, closed = ST_CONVENTIONS[convention]
    return opened if open_valve else closed
#: Communication parameters of the Xintai meter ([P]): a write here can take the meter off its bus.
XINTAI_COMM_PARAMS = range(0x000F, 0x0012)


@dataclass(frozen=True)
class ValveProfile:
    """How one family of Modbus water meters opens, closes and reports its valve."""

    name: str
    function: int               # 5 (coil), 6 (single register) or 16 (multiple registers)
    address: int                # control register / coil
    open_value: int
    close_value: int
    status_address: int         # read with FC03 (FC01 for coil profiles)
    open_mask: int | None       # status bits meaning open; None: status equals open_value
    closed_mask: int | None
    fault_mask: int = 0
    low_battery_mask: int = 0
    source: str = "device config"

    def state(self, status: int) -> bool | None:
        """True open, False closed, None fault or unknown."""
        if self.fault_mask and status & self.fault_mask:
            return None
        if self.open_mask is None or self.closed_mask is None:
            return True if status == self.open_value else False if status == self.close_value else None
        is_open, is_closed = bool(status & self.open_mask), bool(status & self.closed_mask)
        return None if is_open == is_closed else is_open

    def status_word(self, open_valve: bool, low_battery: bool = False) -> int:
        """The status a meter of this profile reports (simulator side)."""
        if self.open_mask is None or self.closed_mask is None:
            return self.open_value if open_valve else self.close_value
        return (self.open_mask if open_valve else self.closed_mask) | (self.low_battery_mask if low_battery else 0)


XINTAI = ValveProfile("xintai", 6, 0x001C, 1, 2, 0x001C, 0x01, 0x02, 0x04, 0x08,
                      "REGISTERS.md §10 [P] (PouCon XintaiWaterMeter)")
NAMED_PROFILES = {"xintai": XINTAI}


def valve_profile(config: Mapping[str, Any]) -> ValveProfile | None:
    """The valve profile of a Modbus water meter, or None when it has none (then no valve is written)."""
    name = config.get("valve_profile", "none")
    if name in NAMED_PROFILES:
        return NAMED_PROFILES[name]
    if name != "custom":
        return None
    missing = [k for k in ("valve_address", "valve_open_value", "valve_close_value") if config.get(k) is None]
    function = int(config.get("valve_function", 6))
    if function == 5:
        missing = [k for k in missing if k == "valve_address"]
    if missing:
        raise ValueError(f"valve_profile 'custom' needs {', '.join(missing)} (from the meter's manual)")
    address = int(config["valve_address"])
    return ValveProfile("custom", function, address,
                        int(config.get("valve_open_value", 1)), int(config.get("valve_close_value", 0)),
                        int(config.get("valve_status_address", address)),
                        config.get("valve_open_mask"), config.get("valve_closed_mask"),
                        int(config.get("valve_fault_mask", 0)), int(config.get("valve_low_battery_mask", 0)))


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
    profile = valve_profile(config)
    if profile is not None and profile.function != 5:
        rows.append(R("valve", profile.status_address, 1, "u16", Decimal(1), "",
                      f"Valve status/control ({profile.name} profile)", "RW",
                      "MED" if profile.name in NAMED_PROFILES else "INFERRED"))
    return tuple(rows)


DEFAULT_MODBUS = modbus_map({})
XINTAI_MODBUS = modbus_map({"valve_profile": "xintai"})
