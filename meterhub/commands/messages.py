"""Why a command failed, as a stable code with parameters, shown in the reader's language (issue 21).

Every error a command can carry is one of :data:`MESSAGES`. The command stores the code and its parameters
(``commands.error_code``, ``commands.error_params``) next to the English text (``commands.error``, for logs, the
audit log and the API); a page shows :func:`describe` of them, translated when it is shown. A row written before
the codes existed (text only) is shown as its text.

    failure("command.orphaned", owner="web-1:42")   # a Failure: code, params and the English text
    from_error(err)                                 # the Failure of an exception raised while sending
    describe(command.error_code, command.error_params, command.error)   # the text in the current language

Device errors carry their code (``DeviceError.error_code``, ``meterhub.protocols.errors``); a collector's reply
carries it as ``code``/``params`` (:func:`reply_fields`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString

from ..labels import label
from ..protocols.errors import DeviceError

MESSAGES: dict[str, LazyString] = {
    # the command's life
    "command.superseded": _l("superseded by a newer command of the same kind for this meter"),
    "command.expired": _l("time-to-live passed before the meter confirmed it"),
    "command.expired_before_sending": _l("time-to-live passed before it could be sent"),
    "command.orphaned": _l("%(owner)s stopped while sending it; the meter is read before sending again"),
    "command.stale_lease": _l("result refused: another process took over the bus before it was recorded; the meter "
                              "is read before the command is sent again"),
    "command.timeout": _l("no response in time; it is tried again while attempts remain"),
    "command.unexpected": _l("unexpected error (%(detail)s); it is tried again while attempts remain"),
    # the driver
    "driver.not_installed": _l("the device's driver %(driver)s is not installed; install it or fix the device"),
    "driver.cannot": _l("this device's driver cannot “%(command)s” with its configuration; check the device's "
                        "model or variant"),
    "driver.no_valve_profile": _l("this Modbus water meter has no valve profile, so no valve register is written; "
                                  "set its valve profile"),
    # the gateway and the bus
    "gateway.unreachable": _l("the gateway cannot be reached; check its address, port, power and network"),
    "gateway.cannot_connect": _l("cannot connect to the gateway; check its address, port and power"),
    "gateway.connection_lost": _l("the connection to the gateway was lost; it is opened again"),
    "gateway.polled_only": _l("this gateway (%(framing)s) cannot take commands over the bus yet"),
    "collector.no_answer": _l("the collector of this gateway did not answer within %(seconds)s s; is a collector "
                              "running?"),
    "collector.stopping": _l("the collector was stopping; the command is sent again"),
    "collector.not_sent": _l("the collector could not send it; it is tried again"),
    "collector.lease_lost": _l("the collector lost the bus before sending it; it is tried again"),
    "collector.wrong_bus": _l("the meter is not on this gateway's bus; check the device's gateway"),
    "collector.unknown_method": _l("the collector does not know the command %(method)s; update the collector"),
    "collector.failed": _l("the collector reported a failure; see the details"),
    "collector.read_failed": _l("the meter could not be read"),
    "dialin.not_connected": _l("the 4G meter is not connected; the command is sent when it connects"),
    "dialin.wrong_meter": _l("the command is not for the meter on this connection"),
    # the device
    "device.no_reply": _l("no response from the device within %(seconds)s s; check its address, baud rate, wiring "
                          "and power"),
    "device.no_channel": _l("the device's reply has no channel %(channel)s; check the meter's channel"),
    "device.bad_frame": _l("the device's reply was garbled; check the wiring and that one master is on the bus"),
    "device.bad_checksum": _l("the device's reply failed its checksum: noise on the line, wrong parity or two "
                              "masters"),
    "device.mismatch": _l("another device answered than the one expected; check the address and model"),
    "device.bad_qr_code": _l("the QR code cannot be read"),
    "device.unsupported": _l("the device cannot carry out this command"),
    "device.not_applied": _l("the device accepted the command but does not show it; check the device"),
    "device.relay_not_applied": _l("the meter acknowledged the relay command but its relay did not change; check "
                                   "the relay"),
    "device.valve_not_applied": _l("the valve command was sent but the meter's valve did not move; check the valve"),
    "device.error": _l("the device reported an error"),
    # Modbus exception replies (meterhub.protocols.errors.MODBUS_EXCEPTION_CODES)
    "modbus.illegal_function": _l("device refused: illegal function (the device does not support it; check the "
                                  "driver and model)"),
    "modbus.illegal_data_address": _l("device refused: illegal data address (the register is not in this device's "
                                      "map; check the model or variant)"),
    "modbus.illegal_data_value": _l("device refused: illegal data value (check the range, or the purchase count "
                                    "of a top-up)"),
    "modbus.server_device_failure": _l("device failure: the device failed internally; it is tried again"),
    "modbus.acknowledge": _l("the device is still working on an earlier request; it is tried again"),
    "modbus.server_device_busy": _l("the device is busy; it is tried again"),
    "modbus.memory_parity_error": _l("device refused: memory parity error; check the device"),
    "modbus.gateway_path_unavailable": _l("the gateway has no path to the device; check the gateway's settings"),
    "modbus.gateway_target_device_failed_to_respond": _l("no response from the device behind the gateway; check its "
                                                         "slave address, wiring and power"),
    "modbus.other": _l("device refused with Modbus exception %(exception)s; check the device's manual"),
    # meter-side top-ups and their re-sync
    "topup.refused_no_count": _l("the meter refused the top-up and reports no purchase count; check the meter"),
    "topup.refused_at_count": _l("the meter refused purchase count %(count)s although its own count is "
                                 "%(meter_count)s; check the amount and the meter"),
    "topup.meter_reset": _l("the meter's purchase count %(meter_count)s is below top-ups it confirmed before "
                            "(%(counts)s): was it reset or replaced? Check it and enter the balance"),
    "topup.counts_unknown": _l("no top-up command carries purchase count(s) %(counts)s; enter them on the meter"),
    "topup.resync_refused": _l("re-sync: the meter refused purchase count %(count)s"),
    "topup.resync_interrupted": _l("re-sync interrupted at purchase count %(count)s; it is tried again"),
}
#: Parameters whose value is itself a stored value shown through a label family.
LABELLED = {"command": "command_kind"}


@dataclass(frozen=True)
class Failure:
    """Why a command failed: a code of :data:`MESSAGES`, its parameters, and the text in English."""

    code: str
    params: dict[str, Any] = field(default_factory=dict)
    text: str = ""


def _msgid(code: str) -> str:
    return MESSAGES[code]._args[-1]  # the English msgid (as meterhub.i18n does for stored messages)


def english(code: str, params: dict[str, Any] | None = None) -> str:
    """The message of ``code`` in English (the msgid, filled)."""
    msgid = _msgid(code)
    try:
        return msgid % dict(params or {}) if params else msgid
    except (KeyError, TypeError, ValueError):
        return msgid


def failure(code: str, text: str = "", **params: Any) -> Failure:
    """A failure of a known code (``text``: the English details; default the message itself)."""
    if code not in MESSAGES:
        raise KeyError(f"unknown command error code {code!r}; add it to meterhub.commands.messages.MESSAGES")
    plain = {k: v if isinstance(v, bool | int | float | str) or v is None else str(v) for k, v in params.items()}
    return Failure(code, plain, text or english(code, plain))


def from_error(err: BaseException) -> Failure:
    """The failure of an exception raised while talking to the meter (device, bus, link or anything else)."""
    if isinstance(err, DeviceError):
        known = err.error_code in MESSAGES
        return failure(err.error_code if known else "device.error", str(err), **(err.params if known else {}))
    if isinstance(err, TimeoutError):
        return failure("command.timeout", f"{type(err).__name__}: {err}")
    if isinstance(err, OSError):  # refused, reset, unreachable ...
        return failure("gateway.unreachable", f"{type(err).__name__}: {err}")
    return failure("command.unexpected", f"{type(err).__name__}: {err}", detail=f"{type(err).__name__}: {err}"[:200])


def reply_fields(err: BaseException) -> dict[str, Any]:
    """``code`` and ``params`` of an error for a collector's reply (JSON)."""
    found = from_error(err)
    return {"code": found.code, "params": found.params}


def describe(code: str | None, params: dict[str, Any] | None, text: str) -> str:
    """The error in the current language; the stored ``text`` when the code is unknown or missing (old rows)."""
    template = MESSAGES.get(code or "")
    if template is None:
        return text
    values = {k: str(label(v, LABELLED[k])) if k in LABELLED else v for k, v in (params or {}).items()}
    try:
        return str(template) % values if values else str(template)
    except (KeyError, TypeError, ValueError):  # a translation whose placeholders do not fit
        return text


def command_error(command: Any) -> str:
    """A command's error in the current language ("" when it has none)."""
    if not command.error and not command.error_code:
        return ""
    return describe(command.error_code, command.error_params, command.error or "")
