"""The driver contract: metadata as data, async I/O against a transport, commands by capability.

A driver is one instance of a ``Driver`` subclass, returned by a plugin's ``register_drivers()`` hook.
The collector calls, for each device on a bus (one call at a time per bus)::

    readings = await driver.read(transport, device)       # list[ChannelReading]
    serial = await driver.read_identity(transport, device)
    await driver.switch(transport, device, channel=1, closed=False)   # etc., see COMMANDS

``transport`` is a ``meterhub.transports`` client (ModbusClient or Cjt188Client) connected to the
device's gateway; ``device`` is anything with ``.address`` (slave id or CJ/T 188 address) and
``.config`` (dict validated against ``config_schema``), e.g. ``DeviceRef``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Protocol

import jsonschema

from meterhub.driver.qr import QRInfo, parse_qr_payload
from meterhub.i18n import _l
from meterhub.driver.registers import Block, RegisterSpec, encode_value, plan_blocks
from meterhub.protocols.errors import QRCodeError, UnsupportedCommand

SECRET_MASK = "--------"
CONFIG_CACHE_SIZE = 1024  # distinct device configs / read plans remembered per driver
CAPABILITIES = frozenset(
    {"relay", "keep_power", "meter_side_prepaid", "valve", "tou_registers", "overload_limit", "prices"}
)
COMMANDS = {
    "switch": "relay", "keep_power": "keep_power", "write_topup": "meter_side_prepaid",
    "set_thresholds": "meter_side_prepaid", "set_prices": "prices", "set_overload_limit": "overload_limit",
    "valve": "valve",
}
#: Standard quantity keys in ChannelReading.values, with units.
QUANTITIES: dict[str, str] = {
    "energy_kwh": "kWh", "energy_sharp_kwh": "kWh", "energy_peak_kwh": "kWh", "energy_flat_kwh": "kWh",
    "energy_valley_kwh": "kWh", "energy_import_kwh": "kWh", "energy_export_kwh": "kWh",
    "energy_reactive_kvarh": "kvarh",
    "voltage_a_v": "V", "voltage_b_v": "V", "voltage_c_v": "V",
    "voltage_ab_v": "V", "voltage_bc_v": "V", "voltage_ca_v": "V",
    "current_a_a": "A", "current_b_a": "A", "current_c_a": "A",
    "power_kw": "kW", "power_a_kw": "kW", "power_b_kw": "kW", "power_c_kw": "kW",
    "reactive_kvar": "kvar", "apparent_kva": "kVA", "power_factor": "", "frequency_hz": "Hz",
    "demand_kw": "kW", "max_demand_kw": "kW", "water_m3": "m3", "flow_m3h": "m3/h",
    "remaining_money": "CNY", "purchase_count": "", "alarm1_money": "CNY", "alarm2_money": "CNY",
    "overdraft_money": "CNY", "relay_closed": "bool", "keep_power": "bool", "valve_open": "bool",
}


class DeviceLike(Protocol):
    address: Any
    config: Mapping[str, Any]


@dataclass
class DeviceRef:
    """Minimal device description for drivers: bus address and validated config."""

    address: Any
    config: dict[str, Any] = field(default_factory=dict)
    serial: str | None = None
    name: str = ""


@dataclass(frozen=True)
class ChannelReading:
    """One channel's values at one time; values use QUANTITIES keys (Decimal, or bool for states)."""

    channel: int
    timestamp: datetime
    values: dict[str, Decimal | bool]


def load_manifest(package_file: str) -> dict[str, Any]:
    """Read ``manifest.json`` next to a driver package's ``__init__.py``."""
    return json.loads((Path(package_file).parent / "manifest.json").read_text(encoding="utf-8"))


def now_utc() -> datetime:
    return datetime.now(UTC)


class Driver:
    """Base class; subclasses set ``registers`` and implement ``read`` and the commands they support."""

    registers: ClassVar[tuple[RegisterSpec, ...]] = ()

    def __init__(self, manifest: Mapping[str, Any]) -> None:
        self.manifest = dict(manifest)
        self.key: str = manifest["key"]
        self.vendor: str = manifest["vendor"]
        self.model: str = manifest["model"]
        self.models: tuple[str, ...] = tuple(manifest.get("models", [self.model]))
        self.protocols: tuple[str, ...] = tuple(manifest["protocols"])
        self.capabilities: frozenset[str] = frozenset(manifest["capabilities"])
        self.config_schema: dict[str, Any] = manifest["config_schema"]
        self.default_channels: int = manifest.get("channels", 1)
        # Checking the schema once here (not on every read) keeps validation at ~0.05 ms per device read.
        validator_cls = jsonschema.validators.validator_for(self.config_schema)
        validator_cls.check_schema(self.config_schema)
        self._validator = validator_cls(self.config_schema)
        self._valid_configs: dict[str, dict[str, Any]] = {}  # canonical JSON -> validated config
        self._seen_configs: dict[int, tuple[Any, dict[str, Any], dict[str, Any]]] = {}  # id -> (obj, copy, valid)
        self._plans: dict[tuple, tuple[tuple[RegisterSpec, ...], list[Block]]] = {}
        unknown = self.capabilities - CAPABILITIES
        if unknown:
            raise ValueError(f"driver {self.key}: unknown capabilities {sorted(unknown)}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key}>"

    # --- configuration ------------------------------------------------------------------------
    def validate_config(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        """Config with schema defaults applied (a fresh copy); raises jsonschema.ValidationError if invalid.

        Valid configs are remembered, by object (the collector polls the same device's config thousands of
        times; an unchanged object is recognised by equality with its snapshot) and by canonical JSON:
        schema validation would cost more than decoding the read.
        """
        seen = self._seen_configs.get(id(config))
        if seen is not None and seen[0] is config and seen[1] == config:
            valid = seen[2]
        else:
            valid = self._validate(config)
            if valid is not None:
                if len(self._seen_configs) >= CONFIG_CACHE_SIZE:
                    self._seen_configs.clear()
                self._seen_configs[id(config)] = (config, copy.deepcopy(dict(config or {})), valid)
            else:  # not JSON: validated, not remembered
                valid = self._apply_defaults(config)
        if any(isinstance(v, (dict, list)) for v in valid.values()):
            return copy.deepcopy(valid)
        return dict(valid)  # flat: a shallow copy is already independent

    def _validate(self, config: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The validated config from the JSON-keyed cache (validating on a miss); None if not JSON."""
        try:
            key = json.dumps(config or {}, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):
            return None
        valid = self._valid_configs.get(key)
        if valid is None:
            valid = self._apply_defaults(config)
            if len(self._valid_configs) >= CONFIG_CACHE_SIZE:
                self._valid_configs.clear()
            self._valid_configs[key] = valid
        return valid

    def _apply_defaults(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        valid = {k: copy.deepcopy(v["default"]) for k, v in self.config_schema.get("properties", {}).items()
                 if "default" in v}
        valid.update(config or {})
        self._validator.validate(valid)
        return valid

    def mask_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Config safe to show: secret values replaced by the mask."""
        secrets = set(self.config_schema.get("secret", []))
        return {k: (SECRET_MASK if k in secrets and v else v) for k, v in config.items()}

    def merge_secrets(self, posted: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
        """Posting the mask back keeps the stored secret."""
        secrets = set(self.config_schema.get("secret", []))
        return {k: (stored.get(k) if k in secrets and v == SECRET_MASK else v) for k, v in posted.items()}

    def channels(self, config: Mapping[str, Any]) -> int:
        """Number of channels (Meters) of a device with this config."""
        return self.default_channels

    def capabilities_for(self, config: Mapping[str, Any]) -> frozenset[str]:
        """Capabilities of a device with this config (a variant may have fewer)."""
        return self.capabilities

    def registers_for(self, config: Mapping[str, Any]) -> tuple[RegisterSpec, ...]:
        """The register map used for a device with this config."""
        return self.registers

    def register_maps(self) -> dict[str, tuple[RegisterSpec, ...]]:
        """Every register map this driver may use, by variant name (for docs and tests)."""
        return {"default": self.registers}

    def examples(self) -> list[dict[str, Any]]:
        """Example devices (address, framing, config) for docs, tests and the simulated fleet."""
        return list(self.manifest.get("examples", [{"address": 1, "framing": "rtu", "config": {}}]))

    def supports(self, command: str, config: Mapping[str, Any]) -> bool:
        return COMMANDS.get(command) in self.capabilities_for(config)

    # --- onboarding ---------------------------------------------------------------------------
    def parse_qr(self, payload: str) -> QRInfo:
        """Parse a label QR code (formats: meterhub.driver.qr); rejects other models' labels."""
        info = parse_qr_payload(payload)
        if info.model and not any(info.model.upper().startswith(m.upper()) for m in self.models):
            raise QRCodeError(_l("QR code is for model %(model)s, but driver %(driver)s handles %(models)s; pick the "
                                 "matching driver", model=repr(info.model), driver=self.key, models=", ".join(self.models)))
        if info.address is not None:
            self.check_address(info.address)
        return info

    def check_address(self, address: Any) -> None:
        """Raise QRCodeError if ``address`` is not a valid bus address for this driver."""
        try:
            value = int(str(address))
        except ValueError:
            value = -1
        if not 1 <= value <= 247:
            raise QRCodeError(_l("Modbus slave address %(address)s must be an integer 1–247", address=repr(address)))

    def simulator(self, address: Any, config: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """A simulated device (meterhub.simulator.SimDevice) at ``address``."""
        raise NotImplementedError

    # --- I/O ----------------------------------------------------------------------------------
    async def read(self, transport: Any, device: DeviceLike) -> list[ChannelReading]:
        raise NotImplementedError

    async def read_identity(self, transport: Any, device: DeviceLike) -> str:
        raise NotImplementedError

    async def detect(self, transport: Any, device: DeviceLike) -> dict[str, Any]:
        """Config values read off the device at onboarding (how it talks, how it is built); stored with it."""
        return {}

    async def switch(self, transport: Any, device: DeviceLike, channel: int, closed: bool) -> None:
        self._unsupported("switch", device)

    async def keep_power(self, transport: Any, device: DeviceLike, channel: int, on: bool) -> None:
        self._unsupported("keep_power", device)

    async def write_topup(
        self, transport: Any, device: DeviceLike, channel: int, amount: Decimal, purchase_count: int
    ) -> None:
        self._unsupported("write_topup", device)

    async def set_thresholds(
        self, transport: Any, device: DeviceLike, channel: int,
        alarm1: Decimal, alarm2: Decimal, overdraft: Decimal,
    ) -> None:
        self._unsupported("set_thresholds", device)

    async def set_overload_limit(self, transport: Any, device: DeviceLike, channel: int, limit_kw: Decimal) -> None:
        self._unsupported("set_overload_limit", device)

    async def set_prices(self, transport: Any, device: DeviceLike, channel: int, prices: Sequence[Decimal]) -> None:
        """``prices``: sharp, peak, flat, valley (CNY/kWh)."""
        self._unsupported("set_prices", device)

    async def valve(self, transport: Any, device: DeviceLike, channel: int, open: bool) -> None:
        self._unsupported("valve", device)

    def _unsupported(self, command: str, device: DeviceLike) -> None:
        raise UnsupportedCommand(
            f"driver {self.key} cannot {command} with this configuration; check the device's variant/model",
            where=f"device {device.address}", error_code="driver.cannot", params={"command": command},
        )

    # --- Modbus helpers for subclasses ---------------------------------------------------------
    async def read_specs(
        self, transport: Any, unit: int, specs: Sequence[RegisterSpec], max_count: int = 100, max_gap: int = 8
    ) -> dict[str, Decimal]:
        """Read ``specs`` from ``unit`` in as few contiguous FC03 reads as possible and decode them."""
        values: dict[str, Decimal] = {}
        for block in self._plan(specs, max_count, max_gap):
            registers = await transport.read_holding_registers(unit, block.start, block.count)
            values.update(block.decode(registers))
        return values

    def _plan(self, specs: Sequence[RegisterSpec], max_count: int, max_gap: int) -> list[Block]:
        """``plan_blocks`` remembered per list of spec objects (specs are immutable module constants)."""
        key = (max_count, max_gap, *map(id, specs))
        hit = self._plans.get(key)
        if hit is None:
            if len(self._plans) >= CONFIG_CACHE_SIZE:
                self._plans.clear()
            hit = self._plans[key] = (tuple(specs), plan_blocks(specs, max_count, max_gap))  # keeps ids alive
        return hit[1]

    async def write_spec(self, transport: Any, unit: int, spec: RegisterSpec, value: Decimal | int) -> None:
        """Write one value with FC16."""
        await transport.write_registers(unit, spec.address, encode_value(spec, value))


def spec_index(specs: Sequence[RegisterSpec]) -> dict[str, RegisterSpec]:
    return {s.key: s for s in specs}


def to_quantities(specs: Sequence[RegisterSpec], raw: Mapping[str, Decimal], pt: Decimal, ct: Decimal) -> dict:
    """Apply PT/CT ratios and rename register keys to quantity keys."""
    factors = {"": 1, "pt": pt, "ct": ct, "ptct": pt * ct}
    return {quantity: raw[key] * factors[ratio] for quantity, key, ratio in _quantity_specs(specs) if key in raw}


_QUANTITY_SPECS: dict[int, tuple[Sequence[RegisterSpec], list[tuple[str, str, str]]]] = {}


def _quantity_specs(specs: Sequence[RegisterSpec]) -> list[tuple[str, str, str]]:
    """(quantity, key, ratio) of the specs that carry a quantity; remembered per map (maps are constants)."""
    hit = _QUANTITY_SPECS.get(id(specs))
    if hit is None or hit[0] is not specs:
        if len(_QUANTITY_SPECS) >= CONFIG_CACHE_SIZE:
            _QUANTITY_SPECS.clear()
        hit = _QUANTITY_SPECS[id(specs)] = (specs, [(s.quantity, s.key, s.ratio) for s in specs if s.quantity])
    return hit[1]
