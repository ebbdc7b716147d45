"""Display labels for the values stored in the database (statuses, states, kinds, channels, modes ...).

Templates show a value with ``{{ value|label('family') }}``, and the core (a PDF, an export, a stored message)
with :func:`label`: the translated label of that value in that family, or
the raw value when the family or the value is unknown (a new value shows up as itself, never as an error).
The labels use the message context ``value`` so that e.g. a meter being "Offline" (离线) does not share a
translation with the alarm or column header of the same English word.
"""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_pgettext

from .alarms.kinds import KINDS as ALARM_KINDS


# webui/translations/update.py and tests/test_i18n.py extract ``lazy_pgettext`` (keyword ``lazy_pgettext:1c,2``).
LABELS: dict[str, dict[str, Any]] = {
    # gateways, devices, meters
    "status": {
        "online": lazy_pgettext("value", "Online"),
        "offline": lazy_pgettext("value", "Offline"),
        "unknown": lazy_pgettext("value", "Unknown"),
    },
    "gateway_setting": {  # gateways.bus: how the collector talks on the bus
        "baud": lazy_pgettext("value", "Baud rate"),
        "parity": lazy_pgettext("value", "Parity"),
        "bytesize": lazy_pgettext("value", "Data bits"),
        "stopbits": lazy_pgettext("value", "Stop bits"),
        "timeout": lazy_pgettext("value", "Answer timeout (s)"),
        "pause_ms": lazy_pgettext("value", "Pause between frames (ms)"),
        "interval": lazy_pgettext("value", "Reading interval"),
        "retries": lazy_pgettext("value", "Retries"),
    },
    "device_setting": {  # devices.config (the driver's configuration schema)
        "variant": lazy_pgettext("value", "Model variant"),
        "pt": lazy_pgettext("value", "PT ratio"),
        "ct": lazy_pgettext("value", "CT ratio"),
        "read_ratios": lazy_pgettext("value", "Read PT/CT from the meter"),
        "restore_mode": lazy_pgettext("value", "Switch-on mode"),
        "prepaid_mode": lazy_pgettext("value", "Where the balance is kept"),
        "topup_key": lazy_pgettext("value", "Top-up key"),
    },
    "setting_value": {  # values of gateway and device settings
        "N": lazy_pgettext("value", "None"),
        "E": lazy_pgettext("value", "Even"),
        "O": lazy_pgettext("value", "Odd"),
        "True": lazy_pgettext("value", "Yes"),
        "False": lazy_pgettext("value", "No"),
        "forced": lazy_pgettext("value", "Forced close"),
        "automatic": lazy_pgettext("value", "Automatic"),
        "platform": lazy_pgettext("value", "On the platform"),
        "meter": lazy_pgettext("value", "On the meter"),
    },
    "notifier_setting": {  # settings and secrets of the built-in notifiers (meterhub.alarms.notifiers)
        "host": lazy_pgettext("value", "SMTP server"),
        "port": lazy_pgettext("value", "Port"),
        "security": lazy_pgettext("value", "Encryption (none, starttls, tls)"),
        "username": lazy_pgettext("value", "User name"),
        "password": lazy_pgettext("value", "Password"),
        "from": lazy_pgettext("value", "Sender address"),
        "url": lazy_pgettext("value", "Webhook address"),
        "secret": lazy_pgettext("value", "Signing secret"),
        "provider": lazy_pgettext("value", "SMS provider"),
        "api_key": lazy_pgettext("value", "API key"),
    },
    "driver": {  # drivers whose manifest names them by what they are rather than by a product name
        "water_valve": lazy_pgettext("value", "Generic CJ/T 188 valve water meter"),
    },
    "object_type": {  # audit_log.object_type
        "api_token": lazy_pgettext("value", "API token"),
        "apportion_rule": lazy_pgettext("value", "Apportioning rule"),
        "apportion_run": lazy_pgettext("value", "Apportioning run"),
        "audit_log": lazy_pgettext("value", "Audit log"),
        "batch": lazy_pgettext("value", "Batch"),
        "bill": lazy_pgettext("value", "Bill"),
        "billing_item": lazy_pgettext("value", "Billing item"),
        "command": lazy_pgettext("value", "Command"),
        "gateway": lazy_pgettext("value", "Gateway"),
        "device": lazy_pgettext("value", "Device"),
        "group": lazy_pgettext("value", "Group"),
        "meter": lazy_pgettext("value", "Meter"),
        "operator": lazy_pgettext("value", "Operator"),
        "payment_channel": lazy_pgettext("value", "Payment channel"),
        "prepaid_account": lazy_pgettext("value", "Account"),
        "property": lazy_pgettext("value", "Property"),
        "transfer": lazy_pgettext("value", "Ledger transfer"),
        "room": lazy_pgettext("value", "Room"),
    },
    "import_column": {  # the columns and sheets of the gateway/device workbook (meterhub.devices.excel)
        "Gateways": lazy_pgettext("value", "Gateways"),
        "Devices": lazy_pgettext("value", "Devices"),
        "property_code": lazy_pgettext("value", "Property code"),
        "name": lazy_pgettext("value", "Name"),
        "host": lazy_pgettext("value", "Host or IP"),
        "port": lazy_pgettext("value", "Port"),
        "framing": lazy_pgettext("value", "Framing"),
        "baud": lazy_pgettext("value", "Baud rate"),
        "parity": lazy_pgettext("value", "Parity"),
        "mqtt_client_id": lazy_pgettext("value", "MQTT client id"),
        "gateway": lazy_pgettext("value", "Gateway"),
        "driver": lazy_pgettext("value", "Driver"),
        "address": lazy_pgettext("value", "Address"),
        "serial": lazy_pgettext("value", "Serial"),
        "rooms": lazy_pgettext("value", "Rooms (building/room per channel)"),
        "config_json": lazy_pgettext("value", "Config (JSON)"),
    },
    "payment_provider": {  # payment channel providers (meterhub.payments.providers)
        "sandbox": lazy_pgettext("value", "Sandbox (test payments)"),
        "wechat_v3": lazy_pgettext("value", "WeChat Pay"),
    },
    "token_scope": {  # API token scopes
        "read": lazy_pgettext("value", "Read"),
        "topup": lazy_pgettext("value", "Top up"),
        "commands": lazy_pgettext("value", "Send commands"),
    },
    "actor": {  # who did it, when not a person
        "system": lazy_pgettext("value", "System"),
        "prepaid": lazy_pgettext("value", "Prepaid control"),
        "postpaid": lazy_pgettext("value", "Post-paid billing"),
        "billing_items": lazy_pgettext("value", "Billing items"),
        "collector": lazy_pgettext("value", "Collector"),
    },
    "collector_state": {  # gateways.collector_state (meterhub.collector.liveness)
        "polling": lazy_pgettext("value", "Polling"),
        "down": lazy_pgettext("value", "Collector down"),
    },
    "process_event": {  # process_events.event (meterhub run's supervisor, systemd, rq.watch)
        "exited": lazy_pgettext("value", "Exited"),
        "restarted": lazy_pgettext("value", "Restarted"),
    },
    "framing": {
        "modbus-tcp": lazy_pgettext("value", "Modbus TCP"),
        "modbus-rtu-over-tcp": lazy_pgettext("value", "Modbus RTU over TCP"),
        "cjt188-over-tcp": lazy_pgettext("value", "CJ/T 188 over TCP"),
        "mqtt": lazy_pgettext("value", "MQTT"),
    },
    # prepaid accounts (account_state adds the alarm levels the portal and the counter show for open accounts)
    "account_status": {
        "preset": lazy_pgettext("value", "Preset"),
        "open": lazy_pgettext("value", "Open"),
        "closed": lazy_pgettext("value", "Closed"),
    },
    "account_state": {
        "preset": lazy_pgettext("value", "Preset"),
        "open": lazy_pgettext("value", "Open"),
        "opened": lazy_pgettext("value", "Open"),
        "closed": lazy_pgettext("value", "Closed"),
        "normal": lazy_pgettext("value", "Normal"),
        "alarm1": lazy_pgettext("value", "Low balance (level 1)"),
        "alarm2": lazy_pgettext("value", "Low balance (level 2)"),
        "arrears": lazy_pgettext("value", "Arrears"),
        "offline": lazy_pgettext("value", "Offline"),
    },
    # device commands
    "command_state": {
        "queued": lazy_pgettext("value", "Queued"),
        "sent": lazy_pgettext("value", "Sent"),
        "confirmed": lazy_pgettext("value", "Confirmed"),
        "failed": lazy_pgettext("value", "Failed"),
        "expired": lazy_pgettext("value", "Expired"),
        "cancelled": lazy_pgettext("value", "Cancelled"),
    },
    "command_kind": {
        "switch": lazy_pgettext("value", "Switch relay"),
        "valve": lazy_pgettext("value", "Valve"),
        "keep_power": lazy_pgettext("value", "Keep power on"),
        "resume_prepaid": lazy_pgettext("value", "Resume prepaid control"),
        "set_prices": lazy_pgettext("value", "Set prices"),
        "set_thresholds": lazy_pgettext("value", "Set alarm thresholds"),
        "set_overload_limit": lazy_pgettext("value", "Set overload limit"),
        "write_topup": lazy_pgettext("value", "Write top-up"),
        "read_now": lazy_pgettext("value", "Read now"),
    },
    # alarms and their notifications
    "alarm_state": {
        "active": lazy_pgettext("value", "Active"),
        "acknowledged": lazy_pgettext("value", "Acknowledged"),
        "cleared": lazy_pgettext("value", "Cleared"),
    },
    "alarm_filter": {  # the alarm list's state filter
        "open": lazy_pgettext("value", "Open (active or acknowledged)"),
        "active": lazy_pgettext("value", "Active"),
        "acknowledged": lazy_pgettext("value", "Acknowledged"),
        "cleared": lazy_pgettext("value", "Cleared"),
        "all": lazy_pgettext("value", "All"),
    },
    "alarm_kind": {key: kind.label for key, kind in ALARM_KINDS.items()},
    "alarm_detail": {  # the keys of an alarm's detail, on its page
        "level": lazy_pgettext("value", "Level"),
        "balance": lazy_pgettext("value", "Balance"),
        "meter_count": lazy_pgettext("value", "Purchases on the meter"),
        "our_count": lazy_pgettext("value", "Purchases on the platform"),
        "power_kw": lazy_pgettext("value", "Power (kW)"),
        "limit_kw": lazy_pgettext("value", "Limit (kW)"),
        "valve_open": lazy_pgettext("value", "Valve open"),
        "wanted_open": lazy_pgettext("value", "Valve wanted open"),
        "last_seen_at": lazy_pgettext("value", "Last heard from"),
        "collector_seen_at": lazy_pgettext("value", "Collector last seen"),
        "since": lazy_pgettext("value", "Since"),
        "usage": lazy_pgettext("value", "Usage last night"),
        "baseline": lazy_pgettext("value", "Usual night usage"),
        "night": lazy_pgettext("value", "Night of"),
        "command_id": lazy_pgettext("value", "Command"),
        "reason": lazy_pgettext("value", "Reason"),
        "amount": lazy_pgettext("value", "Amount not on the meter"),
    },
    "alarm_action": {
        "raised": lazy_pgettext("value", "Raised"),
        "acknowledged": lazy_pgettext("value", "Acknowledged"),
        "cleared": lazy_pgettext("value", "Cleared"),
    },
    "notification_status": {
        "queued": lazy_pgettext("value", "Queued"),
        "held": lazy_pgettext("value", "Held (quiet hours)"),
        "retrying": lazy_pgettext("value", "Retrying"),
        "sent": lazy_pgettext("value", "Sent"),
        "failed": lazy_pgettext("value", "Failed"),
        "throttled": lazy_pgettext("value", "Throttled"),
    },
    # money
    "utility": {
        "electricity": lazy_pgettext("value", "Electricity"),
        "water": lazy_pgettext("value", "Water"),
    },
    "channel": {
        "cash": lazy_pgettext("value", "Cash"),
        "card": lazy_pgettext("value", "Card"),
        "transfer": lazy_pgettext("value", "Bank transfer"),
        "online": lazy_pgettext("value", "Online payment"),
        "portal": lazy_pgettext("value", "Portal"),
    },
    "transfer_kind": {
        "topup": lazy_pgettext("value", "Top-up"),
        "refund": lazy_pgettext("value", "Refund"),
        "reversal": lazy_pgettext("value", "Reversal"),
        "charge": lazy_pgettext("value", "Usage charge"),
        "settlement": lazy_pgettext("value", "Settlement"),
        "apportion": lazy_pgettext("value", "Shared-area charge"),
        "fee": lazy_pgettext("value", "Fee"),
        "bill": lazy_pgettext("value", "Bill"),
        "bill_payment": lazy_pgettext("value", "Bill payment"),
    },
    "order_state": {
        "created": lazy_pgettext("value", "Awaiting payment"),
        "paid": lazy_pgettext("value", "Paid"),
        "unapplied": lazy_pgettext("value", "Paid, not yet credited"),
        "expired": lazy_pgettext("value", "Expired"),
    },
    # post-paid bills
    "bill_status": {
        "draft": lazy_pgettext("value", "Draft"),
        "confirmed": lazy_pgettext("value", "Confirmed"),
        "paid": lazy_pgettext("value", "Paid"),
        "partially_paid": lazy_pgettext("value", "Partially paid"),
        "overdue": lazy_pgettext("value", "Overdue"),
        "void": lazy_pgettext("value", "Void"),
    },
    "bill_line": {
        "usage": lazy_pgettext("value", "Usage"),
        "apportion": lazy_pgettext("value", "Shared-area charge"),
        "item": lazy_pgettext("value", "Billing item"),
        "late_fee": lazy_pgettext("value", "Late fee"),
    },
    # batches
    "batch_status": {
        "scheduled": lazy_pgettext("value", "Scheduled"),
        "running": lazy_pgettext("value", "Running"),
        "done": lazy_pgettext("value", "Finished"),
        "cancelled": lazy_pgettext("value", "Cancelled"),
    },
    "batch_result": {
        "pending": lazy_pgettext("value", "Pending"),
        "running": lazy_pgettext("value", "Running"),
        "ok": lazy_pgettext("value", "Succeeded"),
        "failed": lazy_pgettext("value", "Failed"),
        "skipped": lazy_pgettext("value", "Skipped"),
    },
    "batch_action": {
        "set_tariff": lazy_pgettext("value", "Assign price plan"),
        "push_price": lazy_pgettext("value", "Push prices to meters"),
        "switch_off": lazy_pgettext("value", "Switch off"),
        "switch_on": lazy_pgettext("value", "Switch on"),
        "keep_power": lazy_pgettext("value", "Keep power on"),
        "resume_prepaid": lazy_pgettext("value", "Resume prepaid control"),
        "set_thresholds": lazy_pgettext("value", "Set alarm thresholds"),
        "set_overload_limit": lazy_pgettext("value", "Set overload limit"),
        "topup": lazy_pgettext("value", "Top-up"),
        "read_now": lazy_pgettext("value", "Read now"),
    },
    # billing items
    "item_category": {
        "property_fee": lazy_pgettext("value", "Property management fee"),
        "rent": lazy_pgettext("value", "Rent"),
        "service": lazy_pgettext("value", "Service fee"),
        "custom": lazy_pgettext("value", "Other"),
    },
    "item_basis": {
        "fixed": lazy_pgettext("value", "Fixed amount"),
        "per_m2": lazy_pgettext("value", "Per m²"),
    },
    "recurrence": {
        "once": lazy_pgettext("value", "Once"),
        "monthly": lazy_pgettext("value", "Monthly"),
        "quarterly": lazy_pgettext("value", "Quarterly"),
        "yearly": lazy_pgettext("value", "Yearly"),
    },
    "post_mode": {  # billing items and apportioning rules
        "deduct": lazy_pgettext("value", "Deduct from balance"),
        "bill": lazy_pgettext("value", "Add to bill"),
    },
    "charge_status": {
        "deducted": lazy_pgettext("value", "Deducted"),
        "billed": lazy_pgettext("value", "Billed"),
        "skipped": lazy_pgettext("value", "Skipped"),
        "reversed": lazy_pgettext("value", "Reversed"),
    },
    # apportioning (公摊)
    "apportion_method": {
        "ratio": lazy_pgettext("value", "By fixed ratio"),
        "area": lazy_pgettext("value", "By floor area"),
        "usage": lazy_pgettext("value", "By usage"),
    },
    "run_status": {
        "posted": lazy_pgettext("value", "Posted"),
        "reversed": lazy_pgettext("value", "Reversed"),
    },
    # rooms
    "room_kind": {
        "shop": lazy_pgettext("value", "Shop"),
        "residence": lazy_pgettext("value", "Residence"),
        "dorm": lazy_pgettext("value", "Dormitory"),
        "office": lazy_pgettext("value", "Office"),
        "public": lazy_pgettext("value", "Public area"),
    },
    # reports
    "report_level": {
        "meter": lazy_pgettext("value", "Meter"),
        "room": lazy_pgettext("value", "Room"),
        "building": lazy_pgettext("value", "Building"),
        "property": lazy_pgettext("value", "Property"),
    },
    "granularity": {
        "day": lazy_pgettext("value", "Day"),
        "month": lazy_pgettext("value", "Month"),
        "year": lazy_pgettext("value", "Year"),
    },
    "export_status": {
        "queued": lazy_pgettext("value", "Queued"),
        "running": lazy_pgettext("value", "Running"),
        "done": lazy_pgettext("value", "Finished"),
        "failed": lazy_pgettext("value", "Failed"),
    },
    "frequency": {
        "daily": lazy_pgettext("value", "Daily"),
        "monthly": lazy_pgettext("value", "Monthly"),
    },
}


def key_of(text: str, family: str, locales: tuple[str, ...] = ("en", "zh_CN")) -> str:
    """The stored value whose label in ``family`` is ``text`` in any of ``locales`` (or that value itself); else
    ``text``: how a header written in the reader's language is read back."""
    from flask import has_app_context
    from flask_babel import force_locale

    wanted = text.strip()
    for key, name in LABELS.get(family, {}).items():
        if wanted.lower() == key.lower():
            return key
        if has_app_context():
            for locale in locales:
                with force_locale(locale):
                    if wanted == str(name):
                        return key
    return wanted


def label(value: Any, family: str | None = None) -> Any:
    """The label of ``value`` in ``family`` (without a family: the first family that knows it); else the value.

    ``None`` shows as an empty string.
    """
    if value is None:
        return ""
    key = str(value)
    if family is not None:
        return LABELS.get(family, {}).get(key, value)
    for labels in LABELS.values():
        if key in labels:
            return labels[key]
    return value
