"""Register maps of the Acrel DTSD1352 (metering) and DTSY1352 / DDSY1352 (prepaid) meters.

Source: /shared/devices/REGISTERS.md §1, §2, §4. Addresses are PDU addresses (hex), 32-bit values high
word first. Rows marked LOW or INFERRED must be verified on hardware (see README.md).
"""

from __future__ import annotations

from decimal import Decimal as D

from meterhub.driver import RegisterSpec as R

C01, C001, C1 = D("0.01"), D("0.001"), D("0.1")
TARIFFS = ("sharp", "peak", "flat", "valley")


def _energy_block(prefix: str, start: int, meaning: str, quantities: dict[str, str], ratio: str,
                  unit: str = "kWh", conf: str = "HIGH") -> list[R]:
    rows = [R(f"{prefix}_total", start, 2, "u32", C01, unit, f"{meaning} total", confidence=conf,
              quantity=quantities.get("total"), ratio=ratio)]
    for i, tariff in enumerate(TARIFFS):
        rows.append(R(f"{prefix}_{tariff}", start + 2 + 2 * i, 2, "u32", C01, unit, f"{meaning} {tariff}",
                      confidence=conf, quantity=quantities.get(tariff), ratio=ratio))
    return rows


DTSD1352: tuple[R, ...] = tuple(
    _energy_block("energy", 0x0000, "Combined active energy", {
        "total": "energy_kwh", "sharp": "energy_sharp_kwh", "peak": "energy_peak_kwh",
        "flat": "energy_flat_kwh", "valley": "energy_valley_kwh"}, "ptct")
    + _energy_block("import", 0x000A, "Forward active energy", {"total": "energy_import_kwh"}, "ptct")
    + _energy_block("export", 0x0014, "Reverse active energy", {"total": "energy_export_kwh"}, "ptct")
    + _energy_block("reactive", 0x001E, "Combined reactive energy", {"total": "energy_reactive_kvarh"},
                    "ptct", "kvarh")
    + _energy_block("reactive_import", 0x0028, "Forward reactive energy", {}, "ptct", "kvarh")
    + _energy_block("reactive_export", 0x0032, "Reverse reactive energy", {}, "ptct", "kvarh")
    + [
        R("clock", 0x003C, 3, "bytes", D(1), "", "Clock sec,min / hour,day / month,year", "RW"),
        R("com1", 0x003F, 1, "bits", D(1), "", "COM1 address (hi) / baud index (lo)", "RW"),
        R("pulse_constant", 0x0040, 1, "u16", D(1), "imp/kWh", "Pulse constant"),
        R("time_zones", 0x0041, 6, "bytes", D(1), "", "Time zones 1-4 (month, day, plan) per [J]", "RW"),
        R("tariff_table_1", 0x0047, 26, "block", D(1), "", "Daily tariff table 1 (14 periods)", "RW"),
        R("ua", 0x0061, 1, "u16", C1, "V", "Phase A voltage", quantity="voltage_a_v", ratio="pt"),
        R("ub", 0x0062, 1, "u16", C1, "V", "Phase B voltage", quantity="voltage_b_v", ratio="pt"),
        R("uc", 0x0063, 1, "u16", C1, "V", "Phase C voltage", quantity="voltage_c_v", ratio="pt"),
        R("ia", 0x0064, 1, "u16", C01, "A", "Phase A current", quantity="current_a_a", ratio="ct"),
        R("ib", 0x0065, 1, "u16", C01, "A", "Phase B current", quantity="current_b_a", ratio="ct"),
        R("ic", 0x0066, 1, "u16", C01, "A", "Phase C current", quantity="current_c_a", ratio="ct"),
        R("frequency", 0x0077, 1, "u16", C01, "Hz", "Frequency", quantity="frequency_hz"),
        R("uab", 0x0078, 1, "u16", C1, "V", "Line voltage AB", quantity="voltage_ab_v", ratio="pt"),
        R("ucb", 0x0079, 1, "u16", C1, "V", "Line voltage CB", quantity="voltage_bc_v", ratio="pt"),
        R("uac", 0x007A, 1, "u16", C1, "V", "Line voltage AC", quantity="voltage_ca_v", ratio="pt"),
        R("max_demand", 0x007B, 1, "u16", C001, "kW", "Forward active max demand", quantity="max_demand_kw"),
        R("energy_a", 0x0087, 2, "u32", C01, "kWh", "Forward active energy phase A", ratio="ptct"),
        R("energy_b", 0x0089, 2, "u32", C01, "kWh", "Forward active energy phase B", ratio="ptct"),
        R("energy_c", 0x008B, 2, "u32", C01, "kWh", "Forward active energy phase C", ratio="ptct"),
        R("pt", 0x008D, 1, "u16", D(1), "", "PT ratio", "RW"),
        R("ct", 0x008E, 1, "u16", D(1), "", "CT ratio", "RW"),
        R("status", 0x008F, 1, "bits", D(1), "", "DI/DO state, over-voltage, loss of voltage (bits not detailed)"),
        R("voltage_imbalance", 0x0093, 1, "u16", C1, "%", "Voltage imbalance"),
        R("current_imbalance", 0x0094, 1, "u16", C1, "%", "Current imbalance"),
        R("tariff_table_2", 0x00B2, 18, "block", D(1), "", "Daily tariff table 2 (continued)", "RW"),
        R("pa", 0x0164, 2, "i32", C001, "kW", "Phase A active power", quantity="power_a_kw", ratio="ptct"),
        R("pb", 0x0166, 2, "i32", C001, "kW", "Phase B active power", quantity="power_b_kw", ratio="ptct"),
        R("pc", 0x0168, 2, "i32", C001, "kW", "Phase C active power", quantity="power_c_kw", ratio="ptct"),
        R("p_total", 0x016A, 2, "i32", C001, "kW", "Total active power", quantity="power_kw", ratio="ptct"),
        R("qa", 0x016C, 2, "i32", C001, "kvar", "Phase A reactive power", ratio="ptct"),
        R("qb", 0x016E, 2, "i32", C001, "kvar", "Phase B reactive power", ratio="ptct"),
        R("qc", 0x0170, 2, "i32", C001, "kvar", "Phase C reactive power", ratio="ptct"),
        R("q_total", 0x0172, 2, "i32", C001, "kvar", "Total reactive power", quantity="reactive_kvar", ratio="ptct"),
        R("sa", 0x0174, 2, "u32", C001, "kVA", "Phase A apparent power", ratio="ptct"),
        R("sb", 0x0176, 2, "u32", C001, "kVA", "Phase B apparent power", ratio="ptct"),
        R("sc", 0x0178, 2, "u32", C001, "kVA", "Phase C apparent power", ratio="ptct"),
        R("s_total", 0x017A, 2, "u32", C001, "kVA", "Total apparent power", quantity="apparent_kva", ratio="ptct"),
        R("pfa", 0x017C, 1, "i16", C001, "", "Phase A power factor"),
        R("pfb", 0x017D, 1, "i16", C001, "", "Phase B power factor"),
        R("pfc", 0x017E, 1, "i16", C001, "", "Phase C power factor"),
        R("pf_total", 0x017F, 1, "i16", C001, "", "Total power factor", quantity="power_factor"),
        R("demand_import", 0x0198, 1, "u16", C001, "kW", "Current forward active demand", quantity="demand_kw"),
        R("demand_export", 0x0199, 1, "u16", C001, "kW", "Current reverse active demand"),
    ]
    + [R(f"thd_{n}", 0x05DD + i, 1, "i16", C001, "", f"THD {n}")
       for i, n in enumerate(("ua", "ub", "uc", "ia", "ib", "ic"))]
)

#: Prepaid rows shared by DTSY1352, DDSY1352 and (INFERRED) ADF300 circuits. Money ×0.01 CNY (MED).
PREPAID: tuple[R, ...] = (
    R("config_word", 0x0022, 1, "bits", D(1), "", "b0 multi-tariff, b3 external relay, b5 encryption, b7 3P3W",
      "RW", "MED"),
    R("pt", 0x0037, 1, "u16", D(1), "", "PT ratio (0x0038 is CT per [J], so this is most likely PT)", "RW", "MED"),
    R("ct", 0x0038, 1, "u16", D(1), "", "CT ratio ([J] reads and writes CT here)", "RW", "HIGH"),
    R("meter_number", 0x0043, 3, "bcd", D(1), "", "Meter number, 12 BCD digits", "RW", "MED"),
    R("alarm1", 0x0046, 2, "u32", C01, "CNY", "Alarm amount 1", "RW", "MED", "alarm1_money"),
    R("alarm2", 0x0048, 2, "u32", C01, "CNY", "Alarm amount 2", "RW", "MED", "alarm2_money"),
    R("overdraft", 0x004A, 2, "u32", C01, "CNY", "Overdraft (赊欠) amount", "RW", "MED", "overdraft_money"),
    R("purchase_count", 0x004E, 1, "u16", D(1), "", "Purchase count; written with a top-up (INFERRED)",
      "RW", "MED"),
    R("remaining_money", 0x004F, 2, "u32", C01, "CNY",
      "Remaining money; a write together with 0x004E is a top-up amount (INFERRED)", "RW", "MED"),
    R("load_control_state", 0x0055, 1, "u16", D(1), "", "Hi byte load-control state (nonzero = tripped: INFERRED)",
      "R", "MED"),
    R("relay_forced_enable", 0x0057, 1, "u16", D(1), "", "Relay forced control 1 on / 0 automatic", "RW", "HIGH"),
    R("relay_forced_trip", 0x0058, 1, "u16", D(1), "", "1 force trip / 0 force close", "RW", "HIGH"),
    R("price_sharp", 0x0059, 2, "u32", C01, "CNY/kWh", "Price sharp (scale LOW)", "RW", "LOW"),
    R("price_peak", 0x005B, 2, "u32", C01, "CNY/kWh", "Price peak (scale LOW)", "RW", "LOW"),
    R("price_flat", 0x005D, 2, "u32", C01, "CNY/kWh", "Price flat (scale LOW)", "RW", "LOW"),
    R("price_valley", 0x005F, 2, "u32", C01, "CNY/kWh", "Price valley (scale LOW)", "RW", "LOW"),
    R("pmax", 0x0061, 1, "u16", C001, "kW", "Power limit PMAX (unit unknown)", "RW", "LOW"),
)

#: The 48-register summary block (FC03 0x0200 x48, REGISTERS.md §2 field order, §10: [T] Variable.cs reads it at
#: 512 x48, [J]'s 4G upload carries the same registers, [G] parses the same order). The polled source of balance,
#: purchase count and relay state. Offsets not listed (40–46 clock) are not read.
SUMMARY_BASE = 0x0200
SUMMARY_COUNT = 48
_S = SUMMARY_BASE
SUMMARY: tuple[R, ...] = (
    R("sum_type", _S, 1, "u16", D(1), "", "Summary 0: type code (7 DDSY, 5 DTSY, 10 ADF300)"),
    *(R(f"sum_u{p}", _S + 1 + i, 1, "u16", C1, "V", f"Summary: phase {p.upper()} voltage") for i, p in enumerate("abc")),
    *(R(f"sum_i{p}", _S + 4 + i, 1, "u16", C01, "A", f"Summary: phase {p.upper()} current") for i, p in enumerate("abc")),
    *(R(f"sum_p_{p}", _S + 7 + i, 1, "i16", C001, "kW", f"Summary: active power {p}")
      for i, p in enumerate(("a", "b", "c", "total"))),
    R("sum_pt", _S + 19, 1, "u16", D(1), "", "Summary 19: PT"),
    R("sum_ct", _S + 20, 1, "u16", D(1), "", "Summary 20: CT"),
    R("sum_energy_total", _S + 21, 2, "u32", C01, "kWh", "Summary 21-22: total energy"),
    *(R(f"sum_energy_{t}", _S + 23 + 2 * i, 2, "u32", C01, "kWh", f"Summary: energy {t}") for i, t in enumerate(TARIFFS)),
    R("sum_money", _S + 31, 2, "u32", C01, "CNY", "Summary 31-32: remaining money", quantity="remaining_money"),
    R("sum_purchase_count", _S + 33, 1, "u16", D(1), "", "Summary 33: purchase count", quantity="purchase_count"),
    R("sum_trip_count", _S + 34, 1, "u16", D(1), "", "Summary 34: load-control trip count"),
    R("sum_status", _S + 36, 1, "bits", D(1), "",
      "Summary 36: hi bits 5-7 L1-L3 relay closed; lo bit3 forced control, bit5 arrears, bit6 ALM1, bit7 ALM2",
      confidence="MED"),
    R("sum_base_energy", _S + 38, 2, "u32", C01, "kWh", "Summary 38-39: base energy"),
    R("sum_circuit_code", _S + 47, 1, "u16", D(1), "", "Summary 47: hi byte ADF300 circuit code 0/1/2 = 36/24/12",
      confidence="MED"),
)

_PREPAID_ENERGY = _energy_block("energy", 0x0000, "Total active energy", {
    "total": "energy_kwh", "sharp": "energy_sharp_kwh", "peak": "energy_peak_kwh",
    "flat": "energy_flat_kwh", "valley": "energy_valley_kwh"}, "")

DTSY1352: tuple[R, ...] = tuple(_PREPAID_ENERGY) + PREPAID + SUMMARY

DDSY1352: tuple[R, ...] = tuple(_PREPAID_ENERGY) + (
    R("u", 0x000B, 1, "u16", C1, "V", "Voltage", quantity="voltage_a_v"),
    R("i", 0x000C, 1, "u16", C01, "A", "Current", quantity="current_a_a"),
    R("p", 0x000D, 1, "i16", C001, "kW", "Active power", quantity="power_kw"),
    R("s", 0x000F, 1, "u16", C001, "kVA", "Apparent power", quantity="apparent_kva"),
    R("pf", 0x0010, 1, "i16", C001, "", "Power factor", quantity="power_factor"),
) + PREPAID + SUMMARY

VARIANTS = {"dtsd1352": DTSD1352, "dtsy1352": DTSY1352, "ddsy1352": DDSY1352}
