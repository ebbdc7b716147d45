"""meterhub: open, multi-tenant prepaid electricity and water for properties.

The public surface for plugin authors::

    from meterhub import hookimpl, Driver, RegisterSpec, ChannelReading, DeviceError
"""

from meterhub.driver import ChannelReading, DeviceRef, Driver, QRInfo, RegisterSpec, load_manifest
from meterhub.hookspecs import hookimpl
from meterhub.plugins import StartupError
from meterhub.protocols.errors import (
    CrcError,
    DeviceError,
    DeviceMismatch,
    DeviceTimeout,
    FrameError,
    ModbusExceptionReply,
    QRCodeError,
    UnsupportedCommand,
)

__version__ = "0.1.0"
__all__ = [
    "ChannelReading", "CrcError", "DeviceError", "DeviceMismatch", "DeviceRef", "DeviceTimeout", "Driver",
    "FrameError", "ModbusExceptionReply", "QRCodeError", "QRInfo", "RegisterSpec", "StartupError",
    "UnsupportedCommand", "hookimpl", "load_manifest",
]
