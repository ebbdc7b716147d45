"""The alarm kinds: a catalogue of data (label, severity, colour and room-monitor status per kind)."""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import lazy_gettext as _l


@dataclass(frozen=True)
class AlarmKind:
    """One kind of alarm; ``subject`` says what it is about (meter, account, device or gateway)."""

    key: str
    label: object
    severity: str  # info | warning | critical
    colour: str  # CSS colour for the room monitor and alarm lists
    monitor_status: str  # room-monitor status this alarm puts a room in
    priority: int  # higher wins when a room has several alarms
    subject: str
    sms_template: object  # a lazy message with {placeholders}: str() gives it in the current language


KINDS: dict[str, AlarmKind] = {k.key: k for k in (
    AlarmKind("low_balance_1", _l("Low balance (alarm 1)"), "info", "#f5c542", "alarm1", 30, "account",
              _l("[{group}] {account}: balance {balance} is below alarm level 1. Please top up.")),
    AlarmKind("low_balance_2", _l("Low balance (alarm 2)"), "warning", "#f28c28", "alarm2", 40, "account",
              _l("[{group}] {account}: balance {balance} is below alarm level 2. Power will be cut soon.")),
    AlarmKind("arrears", _l("Arrears / tripped"), "critical", "#d62728", "arrears", 50, "account",
              _l("[{group}] {account}: balance {balance} is in arrears; supply is switched off until top-up.")),
    AlarmKind("overload", _l("Overload"), "critical", "#9467bd", "alarm", 45, "meter",
              _l("[{group}] {meter}: power {power_kw} kW over the limit {limit_kw} kW.")),
    AlarmKind("offline", _l("Offline"), "warning", "#7f7f7f", "offline", 60, "meter",
              _l("[{group}] {meter} is offline since {since}.")),
    AlarmKind("comm_fault", _l("Communication fault"), "warning", "#8c564b", "offline", 55, "device",
              _l("[{group}] communication fault on {subject}.")),
    AlarmKind("collector_down", _l("Collector down"), "critical", "#5c6bc0", "offline", 58, "gateway",
              _l("[{group}] no collector polls {subject}: its meters are not read (the gateway may be fine).")),
    AlarmKind("purchase_mismatch", _l("Purchase counter mismatch"), "critical", "#e377c2", "alarm", 48, "meter",
              _l("[{group}] {meter}: purchase counter on the meter {meter_count} differs from ours {our_count}.")),
    AlarmKind("topup_not_on_meter", _l("Top-up not on the meter"), "critical", "#c2185b", "alarm", 49, "meter",
              _l("[{group}] {meter}: top-ups of {amount} are not on the meter (meter count {meter_count}, ours "
              "{our_count}): {reason}")),
    AlarmKind("valve_fault", _l("Valve fault"), "critical", "#17becf", "alarm", 47, "meter",
              _l("[{group}] {meter}: the valve is not in the wanted position.")),
    AlarmKind("abnormal_usage", _l("Abnormal usage"), "warning", "#bcbd22", "alarm", 35, "meter",
              _l("[{group}] {meter}: night usage {usage} is far above its usual {baseline}.")),
)}
STATES = ("active", "acknowledged", "cleared")
OPEN_STATES = ("active", "acknowledged")


def kind(key: str) -> AlarmKind:
    """The kind ``key`` or ValueError naming the known kinds."""
    try:
        return KINDS[key]
    except KeyError:
        raise ValueError(f"Unknown alarm kind {key!r}: use one of {', '.join(KINDS)}.") from None
