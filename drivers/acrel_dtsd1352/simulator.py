"""Simulated DTSD1352 / DTSY1352 / DDSY1352: served from the driver's own register map."""

from __future__ import annotations

import random
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from drivers.acrel_dtsd1352 import prepaid
from drivers.acrel_dtsd1352.registers import VARIANTS
from meterhub.protocols.errors import ModbusExceptionReply
from meterhub.simulator.device import RegisterSimDevice
from meterhub.simulator.model import ElectricChannel, SimClock

TARIFF_RATES = {"sharp": 1, "peak": 2, "flat": 3, "valley": 4}


def electric_values(ch: ElectricChannel, phases: int, pt: int = 1, ct: int = 1) -> dict[str, Decimal | int]:
    """Secondary-side values of a channel (primary / PT / CT), keyed like the register maps."""
    ratio = Decimal(pt * ct)
    kw = Decimal(repr(round(ch.power_kw, 4)))
    volts = Decimal("220.0")
    pf = Decimal("0.950")
    amps = (kw * 1000 / (volts * pf * phases)).quantize(Decimal("0.01")) if kw else Decimal(0)
    values: dict[str, Decimal | int] = {f"energy_{t}": ch.energy[r] / ratio for t, r in TARIFF_RATES.items()}
    values["energy_total"] = ch.total_kwh / ratio
    values["import_total"] = ch.total_kwh / ratio
    values.update({f"import_{t}": ch.energy[r] / ratio for t, r in TARIFF_RATES.items()})
    values["export_total"] = ch.export_kwh / ratio
    values["reactive_total"] = ch.total_kwh * Decimal("0.33") / ratio
    for phase in "abc"[:phases]:
        values[f"u{phase}"] = volts / pt
        values[f"i{phase}"] = amps / ct
        values[f"p{phase}"] = kw / phases / ratio
        values[f"q{phase}"] = kw * Decimal("0.33") / phases / ratio
        values[f"s{phase}"] = kw / pf / phases / ratio
        values[f"pf{phase}"] = pf
        values[f"energy_{phase}"] = ch.total_kwh / phases / ratio
    values.update(uab=Decimal("380.0") / pt, ucb=Decimal("380.0") / pt, uac=Decimal("380.0") / pt)
    values.update(p_total=kw / ratio, q_total=kw * Decimal("0.33") / ratio, s_total=kw / pf / ratio, pf_total=pf)
    values.update(frequency=Decimal("50.00"), demand_import=kw, max_demand=Decimal(repr(round(ch.base_kw, 3))))
    values.update(u=volts, i=amps, p=kw, s=kw / pf, pf=pf, pt=pt, ct=ct)
    return values


class AcrelMeterSim(RegisterSimDevice):
    """One Acrel meter at slave ``address``; prepaid variants trip at zero money."""

    def __init__(self, address: int, config: Mapping[str, Any], clock: SimClock | None = None, seed: int = 1,
                 base_kw: float = 3.0, **_: Any) -> None:
        self.variant = config.get("variant", "dtsd1352")
        super().__init__(address, VARIANTS[self.variant], clock, address_space=[(0, 0x0230), (0x05DD, 0x05E3)])
        self.pt, self.ct = int(config.get("pt", 1)), int(config.get("ct", 1))
        self.phases = 1 if self.variant == "ddsy1352" else 3
        # meter-side money only when the meter is run that way; in platform mode it never trips by itself
        self.channel = ElectricChannel(random.Random(seed), base_kw=base_kw, phases=self.phases,
                                       prepaid=self.variant != "dtsd1352" and not prepaid.platform_side(config))
        self.meter_number = 2300000000 + address * 7919 + seed
        # What read_identity reports: DTSD1352 has no serial register, so its identity is its address.
        self.serial = f"DTSD1352-{address}" if self.variant == "dtsd1352" else f"{self.meter_number:012d}"
        self.channel.advance(self.clock.now())

    def meter_channels(self) -> list[Any]:
        return [self.channel]

    def current_values(self, unit: int) -> dict[str, Decimal | int]:
        self.channel.advance(self.clock.now())
        values = electric_values(self.channel, self.phases, self.pt, self.ct)
        now = self.clock.now()
        values["com1"] = self.address << 8 | 1
        values["meter_number"] = self.meter_number
        if self.variant != "dtsd1352":
            values.update(prepaid.sim_values(self.channel, 7 if self.variant == "ddsy1352" else 5))
        values["clock"] = int.from_bytes(bytes([now.second, now.minute, now.hour, now.day, now.month,
                                                now.year % 100]), "big")
        return values

    def apply_write(self, unit: int, values: dict[str, Decimal]) -> None:
        self.channel.advance(self.clock.now())
        if self.variant == "dtsd1352":
            if set(values) <= {"pt", "ct"}:
                self.pt = int(values.get("pt", self.pt))
                self.ct = int(values.get("ct", self.ct))
                return
            raise ModbusExceptionReply(2)
        prepaid.sim_write(self.channel, values)
