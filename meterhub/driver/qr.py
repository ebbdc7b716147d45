"""QR payload parsing shared by drivers.

Supported payload formats (whitespace around values is ignored, keys are case-insensitive):

1. plain serial: ``A2301234567`` (4–32 letters, digits, ``-``/``_``);
2. key=value pairs separated by ``;``, ``&``, ``,`` or new lines: ``SN=2301234567;MODEL=DTSD1352;ADDR=5``;
3. a URL with a query string: ``https://acrel.example/q?sn=2301234567&model=ADF300&addr=1``;
4. label text, one ``key: value`` per line (ASCII or full-width colon), e.g. ``型号：DTSD1352\\n编号：2301234567``.

Recognised keys — serial: sn, serial, s/n, no, meter_no, meterno, 编号, 表号, 出厂编号;
model: model, type, 型号; address: addr, address, slave, slave_id, id, 地址, 通讯地址, 表地址.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from meterhub.i18n import _l
from meterhub.protocols.errors import QRCodeError

MAX_PAYLOAD = 1024
_SERIAL_RE = re.compile(r"^[A-Za-z0-9_-]{4,32}$")
_ALIASES = {
    "serial": {"sn", "serial", "s/n", "no", "meter_no", "meterno", "编号", "表号", "出厂编号"},
    "model": {"model", "type", "型号"},
    "address": {"addr", "address", "slave", "slave_id", "id", "地址", "通讯地址", "表地址"},
}


@dataclass(frozen=True)
class QRInfo:
    """What a QR code told us about a device."""

    serial: str
    model: str | None = None
    address: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _pairs(text: str) -> list[tuple[str, str]]:
    if re.match(r"^[a-z][a-z0-9+.-]*://", text, re.I):
        parts = urlsplit(text)
        return parse_qsl(parts.query, keep_blank_values=True)
    pairs = []
    for chunk in re.split(r"[;&,\n\r]+", text):
        if not chunk.strip():
            continue
        match = re.match(r"^\s*([^=:：]+?)\s*[=:：]\s*(.*?)\s*$", chunk)
        if not match:
            raise QRCodeError(_l(
                "QR segment %(segment)s is not “key=value”; expected a serial, key=value pairs, a URL with ?sn=…, "
                "or label text “key: value”", segment=repr(chunk.strip()[:40])))
        pairs.append((match.group(1), match.group(2)))
    return pairs


def parse_qr_payload(payload: str) -> QRInfo:
    """Parse any supported QR payload into a QRInfo; raises QRCodeError saying what was expected."""
    if not isinstance(payload, str):
        raise QRCodeError(_l("QR payload must be text, got %(type)s", type=type(payload).__name__))
    text = payload.strip().lstrip("\ufeff")
    if not text:
        raise QRCodeError(_l("QR payload is empty; scan again or type the serial number"))
    if len(text) > MAX_PAYLOAD:
        raise QRCodeError(_l("QR payload is %(length)d characters, more than %(max)d; not a meter label",
                              length=len(text), max=MAX_PAYLOAD))
    if any(ord(c) < 32 and c not in "\r\n\t" for c in text):
        raise QRCodeError(_l("QR payload contains control characters; not a meter label"))
    if _SERIAL_RE.match(text):
        return QRInfo(serial=text)
    found: dict[str, str] = {}
    extra: dict[str, str] = {}
    for key, value in _pairs(text):
        norm = key.strip().lower()
        for field_name, names in _ALIASES.items():
            if norm in names:
                found.setdefault(field_name, value.strip())
                break
        else:
            extra[norm] = value.strip()
    serial = found.get("serial", "")
    if not serial:
        raise QRCodeError(_l("QR payload has no serial number (expected a key such as SN=, serial=, 编号)"))
    if not _SERIAL_RE.match(serial):
        raise QRCodeError(_l("serial %(serial)s must be 4–32 letters, digits, “-” or “_”", serial=repr(serial[:40])))
    return QRInfo(serial, found.get("model") or None, found.get("address") or None, extra)


def format_qr(info: QRInfo) -> str:
    """The canonical key=value payload for ``info`` (what our own labels print)."""
    parts = [f"SN={info.serial}"]
    if info.model:
        parts.append(f"MODEL={info.model}")
    if info.address:
        parts.append(f"ADDR={info.address}")
    return ";".join(parts)
