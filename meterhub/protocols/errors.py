"""Typed device and protocol errors.

Every error says what went wrong, for which device or bus, and what to do. The collector decides on
retries with ``err.retryable`` (timeouts, CRC errors and Modbus exceptions 04/06 are retryable;
illegal function/address/value are not). Each error also carries a stable ``error_code`` (and ``params``) so that a
command that failed with it is shown in the reader's language (``meterhub.commands.messages``).
"""

from __future__ import annotations

from typing import Any

from meterhub.errors import MeterhubError

MODBUS_EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}


#: The error code of each Modbus exception (``modbus.other`` for the rest).
MODBUS_EXCEPTION_CODES = {number: "modbus." + name.replace(" ", "_") for number, name in MODBUS_EXCEPTION_NAMES.items()}


class DeviceError(MeterhubError):
    """Base of all device/bus/protocol errors; ``where`` names the device or bus; ``error_code`` and ``params`` say
    what happened in words that do not depend on the language (see ``meterhub.commands.messages``)."""

    retryable = False
    error_code = "device.error"

    def __init__(self, message: str, where: str = "", *, error_code: str | None = None,
                 params: dict[str, Any] | None = None) -> None:
        self.where = where
        if error_code is not None:
            self.error_code = error_code
        self.params = dict(params or {})
        super().__init__(f"{where}: {message}" if where else message)


class DeviceTimeout(DeviceError):
    """No (complete) reply in time: device off, wrong address, wrong baud rate, or bus overloaded.

    Codes: ``device.no_reply`` (params ``seconds``), ``gateway.cannot_connect``, ``gateway.connection_lost``."""

    retryable = True
    error_code = "device.no_reply"


class FrameError(DeviceError):
    """A frame is malformed: bad length, start/end byte, unexpected unit id or function."""

    retryable = True
    error_code = "device.bad_frame"


class CrcError(FrameError):
    """A frame's CRC or checksum does not match: noise on the line, wrong parity, or two masters."""

    error_code = "device.bad_checksum"


class ModbusExceptionReply(DeviceError):
    """The device answered with a Modbus exception; ``code`` is the exception code."""

    def __init__(self, code: int, where: str = "", function: int | None = None) -> None:
        self.code = code
        self.function = function
        name = MODBUS_EXCEPTION_NAMES.get(code, "unknown exception")
        hint = {
            0x01: "the device does not support this function; check the driver and model",
            0x02: "the register is not in this device's map; check the model/variant setting",
            0x03: "the value was refused; check the range (or the purchase counter for a top-up)",
            0x04: "the device failed internally; retry, then check the device",
            0x06: "the device is busy; retry later",
            0x0B: "the gateway got no answer from the device; check slave id, wiring and power",
        }.get(code, "check the device manual")
        fn = f" to function 0x{function:02X}" if function is not None else ""
        super().__init__(f"Modbus exception {code:02X} ({name}){fn}; {hint}", where,
                         error_code=MODBUS_EXCEPTION_CODES.get(code, "modbus.other"), params={"exception": f"{code:02X}"})

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.code in (0x04, 0x06)


class DeviceMismatch(DeviceError):
    """The device that answered is not the one expected (serial or model differs)."""

    error_code = "device.mismatch"


class QRCodeError(DeviceError):
    """A scanned QR payload cannot be parsed; the message says what was expected."""

    error_code = "device.bad_qr_code"


class UnsupportedCommand(DeviceError):
    """The driver or this device configuration cannot perform the command."""

    error_code = "device.unsupported"


class CommandNotApplied(DeviceError):
    """The device accepted a command but reading its state back shows it did not take effect."""

    retryable = True
    error_code = "device.not_applied"
