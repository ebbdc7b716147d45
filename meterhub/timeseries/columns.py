"""The standard quantity columns of ``readings`` and ``meter_latest``, shared by ingest, rollups and queries."""

from __future__ import annotations

#: Cumulative counters stored exactly (NUMERIC); usage is their delta.
COUNTERS: tuple[str, ...] = (
    "energy_kwh", "energy_sharp_kwh", "energy_peak_kwh", "energy_flat_kwh", "energy_valley_kwh",
    "energy_export_kwh", "water_m3",
)
#: Other exact values (money as the meter reports it, purchase counter).
EXACT: tuple[str, ...] = ("remaining_money", "purchase_count")
#: Instantaneous values (double precision).
INSTANT: tuple[str, ...] = (
    "power_kw", "voltage_a_v", "voltage_b_v", "voltage_c_v", "current_a_a", "current_b_a", "current_c_a",
    "power_factor", "frequency_hz",
)
#: States.
STATES: tuple[str, ...] = ("relay_closed", "valve_open")
#: Every quantity with a column of its own, in table order; all other keys go to ``extra``.
QUANTITY_COLUMNS: tuple[str, ...] = COUNTERS + EXACT + INSTANT + STATES

#: ``readings.quality``: 0 good, 1 suspect (stored, not used for health), 2 bad (e.g. failed plausibility).
QUALITY_GOOD, QUALITY_SUSPECT, QUALITY_BAD = 0, 1, 2
