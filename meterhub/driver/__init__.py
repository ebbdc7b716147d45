"""Driver contract: register maps as data, generic decoder, QR parsing, Driver base class."""

from meterhub.driver.base import (
    CAPABILITIES,
    COMMANDS,
    QUANTITIES,
    SECRET_MASK,
    ChannelReading,
    DeviceRef,
    Driver,
    load_manifest,
)
from meterhub.driver.qr import QRInfo, format_qr, parse_qr_payload
from meterhub.driver.registers import Block, RegisterSpec, check_map, decode_block, encode_value, plan_blocks

__all__ = [
    "CAPABILITIES", "COMMANDS", "QUANTITIES", "SECRET_MASK", "Block", "ChannelReading", "DeviceRef", "Driver",
    "QRInfo", "RegisterSpec", "check_map", "decode_block", "encode_value", "format_qr", "load_manifest",
    "parse_qr_payload", "plan_blocks",
]
