"""Acrel prepaid meters: relay commands, meter-side money, and simulated behaviour, shared with the ADF300 driver.

Two modes (config ``prepaid_mode``):

- ``platform`` (default, as the production platform in REGISTERS.md §10 [J] runs these meters): the balance
  lives on the platform; the only frames sent are cut-off [1, 1] and restore [1, 0] to 0x0057/0x0058 (FC16,
  HIGH, test vectors of §4). Keep-power is the platform's own rule (the control loop never cuts a kept meter);
  turning it on sends a restore, and nothing is read back as "keep-power" (a restored meter and a kept one
  look the same on the wire). Money registers are neither written nor polled.
- ``meter`` (explicit per meter, VERIFY ON HARDWARE): meter-side money as well — top-up as one FC16 write of
  purchase count (0x004E) + amount (0x004F–50), INFERRED (no public implementation does it; the real meter
  may need proprietary FC 0x20); thresholds and prices; keep-power as forced close [1, 0] and back to
  automatic [0, 0] (INFERRED); purchase counters polled for the anti-cheat check.

Every relay command is confirmed by reading the relay state back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from meterhub.driver import RegisterSpec, encode_value
from meterhub.driver.base import spec_index
from meterhub.protocols.errors import CommandNotApplied, ModbusExceptionReply
from meterhub.simulator.model import ElectricChannel

CUT_OFF = [1, 1]
RESTORE = [1, 0]
AUTOMATIC = [0, 0]
STATE_KEYS = ("sum_status",)  # the summary block's status word: relay state, forced control, alarm bits
RELAY_L1, FORCED, ARREARS, ALM1, ALM2 = 0x2000, 0x0008, 0x0020, 0x0040, 0x0080
#: Meter-side money: written and polled only in ``meter`` mode.
MONEY_QUANTITIES = frozenset({"remaining_money", "purchase_count", "alarm1_money", "alarm2_money", "overdraft_money"})
METER_MODE_ONLY = frozenset({"meter_side_prepaid", "prices"})


def platform_side(config: Mapping[str, Any]) -> bool:
    """True when the platform keeps the money and the meter only switches (the default)."""
    return config.get("prepaid_mode", "platform") == "platform"


def capabilities(base: frozenset[str], config: Mapping[str, Any]) -> frozenset[str]:
    """What a prepaid meter in this mode may be asked to do."""
    return base - METER_MODE_ONLY if platform_side(config) else base


def polled(specs: Sequence[RegisterSpec], config: Mapping[str, Any]) -> list[RegisterSpec]:
    """The rows a poll reads: quantities and relay state; money rows only in ``meter`` mode."""
    money = platform_side(config)
    return [s for s in specs if (s.quantity and not (money and s.quantity in MONEY_QUANTITIES))
            or s.key in STATE_KEYS]


def relay_values(raw: Mapping[str, Decimal], config: Mapping[str, Any] | None = None) -> dict[str, bool]:
    """relay_closed from the summary status word (L1 relay bit), + keep_power (forced and closed) in meter mode."""
    status = int(raw.get("sum_status", 0))
    closed = bool(status & RELAY_L1)
    if platform_side(config or {}):
        return {"relay_closed": closed}
    return {"relay_closed": closed, "keep_power": closed and bool(status & FORCED)}


#: Quantities of a reading decoded from the summary block alone (the 4G upload carries nothing else).
SUMMARY_QUANTITIES = {"sum_energy_total": "energy_kwh", "sum_energy_sharp": "energy_sharp_kwh",
                      "sum_energy_peak": "energy_peak_kwh", "sum_energy_flat": "energy_flat_kwh",
                      "sum_energy_valley": "energy_valley_kwh", "sum_p_total": "power_kw",
                      "sum_ua": "voltage_a_v", "sum_ia": "current_a_a"}


def summary_values(raw: Mapping[str, Decimal], config: Mapping[str, Any]) -> dict[str, Decimal | bool]:
    """A reading's values from a decoded summary block: energies, power, relay state (+ money in meter mode)."""
    values: dict[str, Decimal | bool] = {q: raw[k] for k, q in SUMMARY_QUANTITIES.items() if k in raw}
    if not platform_side(config):
        values.update(remaining_money=raw["sum_money"], purchase_count=raw["sum_purchase_count"])
    values.update(relay_values(raw, config))
    return values


def status_word(relay_closed: bool, phases: int, forced: bool, arrears: bool, alarm1: bool, alarm2: bool) -> int:
    """The summary status word a meter in this state reports (simulators)."""
    relays = (0x2000 | 0x4000 | 0x8000) if phases == 3 else RELAY_L1
    return ((relays if relay_closed else 0) | (FORCED if forced else 0) | (ARREARS if arrears else 0)
            | (ALM1 if alarm1 else 0) | (ALM2 if alarm2 else 0))


async def switch(transport: Any, unit: int, closed: bool, config: Mapping[str, Any]) -> None:
    """Cut off [1, 1] or restore: [1, 0] (always in platform mode), or [0, 0] when ``restore_mode`` is automatic."""
    automatic = not platform_side(config) and config.get("restore_mode") == "automatic"
    values = CUT_OFF if not closed else (AUTOMATIC if automatic else RESTORE)
    await transport.write_registers(unit, 0x0057, values)


async def keep_power(transport: Any, unit: int, on: bool, config: Mapping[str, Any]) -> bool:
    """Platform mode: a restore when turned on, nothing when turned off (the platform's rule decides the relay
    again). Meter mode: forced close / automatic. Returns whether a frame was sent."""
    if platform_side(config):
        if not on:
            return False
        await transport.write_registers(unit, 0x0057, RESTORE)
        return True
    await transport.write_registers(unit, 0x0057, RESTORE if on else AUTOMATIC)
    return True


async def confirm_relay(driver: Any, transport: Any, unit: int, specs: Sequence[RegisterSpec], closed: bool) -> None:
    """Read the relay state back; CommandNotApplied when it is not what was commanded."""
    state = [s for s in specs if s.key in STATE_KEYS]
    now_closed = relay_values(await driver.read_specs(transport, unit, state))["relay_closed"]
    if now_closed != closed:
        raise CommandNotApplied(f"relay {'restore' if closed else 'cut-off'} was acknowledged but the meter reads its "
                                f"relay {'closed' if now_closed else 'open'}", where=f"unit {unit}",
                                error_code="device.relay_not_applied")


async def write_topup(transport: Any, unit: int, specs: Sequence[RegisterSpec], amount: Decimal,
                      purchase_count: int) -> None:
    idx = spec_index(specs)
    if amount <= 0:
        raise ValueError(f"top-up amount must be positive, got {amount}")
    words = encode_value(idx["purchase_count"], purchase_count) + encode_value(idx["remaining_money"], amount)
    await transport.write_registers(unit, 0x004E, words)


async def set_thresholds(transport: Any, unit: int, specs: Sequence[RegisterSpec], alarm1: Decimal,
                         alarm2: Decimal, overdraft: Decimal) -> None:
    idx = spec_index(specs)
    words = (encode_value(idx["alarm1"], alarm1) + encode_value(idx["alarm2"], alarm2)
             + encode_value(idx["overdraft"], overdraft))
    await transport.write_registers(unit, 0x0046, words)


async def set_prices(transport: Any, unit: int, specs: Sequence[RegisterSpec], prices: Sequence[Decimal]) -> None:
    if len(prices) != 4:
        raise ValueError("four prices are needed: sharp, peak, flat, valley")
    idx = spec_index(specs)
    words: list[int] = []
    for name, price in zip(("sharp", "peak", "flat", "valley"), prices):
        words += encode_value(idx[f"price_{name}"], Decimal(price).quantize(Decimal("0.01")))
    await transport.write_registers(unit, 0x0059, words)


async def set_overload_limit(transport: Any, unit: int, specs: Sequence[RegisterSpec], limit_kw: Decimal) -> None:
    await transport.write_registers(unit, 0x0061, encode_value(spec_index(specs)["pmax"], limit_kw))


# --- simulator side --------------------------------------------------------------------------------
def sim_values(ch: ElectricChannel, type_code: int = 5) -> dict[str, Decimal | int]:
    """Register values of the prepaid rows and the summary block for a simulated channel."""
    forced = ch.forced is not None
    money = ch.money()
    summary: dict[str, Decimal | int] = {
        "sum_type": type_code, "sum_money": max(money, Decimal(0)), "sum_purchase_count": ch.purchase_count,
        "sum_status": status_word(ch.relay_closed, ch.phases, forced, ch.prepaid and money <= -ch.overdraft,
                                  ch.prepaid and money <= ch.alarm1, ch.prepaid and money <= ch.alarm2),
        "sum_energy_total": ch.total_kwh, "sum_p_total": Decimal(repr(round(ch.power_kw, 3))),
        **{f"sum_energy_{name}": ch.energy[rate] for rate, name in enumerate(("sharp", "peak", "flat", "valley"), 1)},
    }
    return summary | {
        "alarm1": ch.alarm1, "alarm2": ch.alarm2, "overdraft": ch.overdraft,
        "purchase_count": ch.purchase_count, "remaining_money": max(ch.money(), Decimal(0)),
        "load_control_state": 0 if ch.forced is not None or ch.relay_closed else 0x0100,
        "relay_forced_enable": int(forced), "relay_forced_trip": int(forced and not ch.forced),
        "price_sharp": ch.prices[0], "price_peak": ch.prices[1], "price_flat": ch.prices[2],
        "price_valley": ch.prices[3], "pmax": ch.pmax_kw, "config_word": 1,
    }


def sim_write(ch: ElectricChannel, values: dict[str, Decimal]) -> None:
    """Apply an FC16 write to the simulated prepaid rows (raises exception 03 on a bad top-up)."""
    if "relay_forced_enable" in values or "relay_forced_trip" in values:
        if set(values) != {"relay_forced_enable", "relay_forced_trip"}:
            raise ModbusExceptionReply(3)  # the two registers are written together
        enable, trip = int(values["relay_forced_enable"]), int(values["relay_forced_trip"])
        if enable not in (0, 1) or trip not in (0, 1):
            raise ModbusExceptionReply(3)
        ch.forced = None if not enable else not trip
        return
    if "remaining_money" in values:
        if "purchase_count" not in values or not ch.topup(values["remaining_money"], int(values["purchase_count"])):
            raise ModbusExceptionReply(3)
        return
    for key in ("alarm1", "alarm2", "overdraft"):
        if key in values:
            setattr(ch, key, values[key])
    for i, name in enumerate(("sharp", "peak", "flat", "valley")):
        if f"price_{name}" in values:
            ch.prices[i] = values[f"price_{name}"]
    if "pmax" in values:
        ch.pmax_kw = values["pmax"]
    if "purchase_count" in values and "remaining_money" not in values:
        raise ModbusExceptionReply(3)
