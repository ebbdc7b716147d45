"""Async bus clients: one TCP connection to a gateway = one bus, one outstanding request at a time.

    from meterhub.transports import ModbusClient, Cjt188Client, open_transport

    async with ModbusClient("10.0.0.5", 502, framing="rtu", timeout=0.5) as bus:
        regs = await bus.read_holding_registers(unit=1, address=0x0000, count=20)
        await bus.write_registers(unit=1, address=0x0057, values=[1, 1])

Errors: DeviceTimeout, CrcError, FrameError, ModbusExceptionReply (meterhub.protocols.errors).
After a timeout or a garbled frame the connection is dropped and re-opened on the next request, so late
bytes cannot be mistaken for the next reply. Retries are the caller's (collector's) decision.
"""

from meterhub.transports.cjt188 import Cjt188Client
from meterhub.transports.modbus import ModbusClient
from meterhub.transports.stream import StreamBus


def open_transport(host: str, port: int, framing: str, **kwargs: object) -> ModbusClient | Cjt188Client:
    """A client for a gateway's ``framing``: "tcp" (Modbus TCP), "rtu" (RTU over TCP) or "cjt188"."""
    if framing == "cjt188":
        return Cjt188Client(host, port, **kwargs)  # type: ignore[arg-type]
    return ModbusClient(host, port, framing=framing, **kwargs)  # type: ignore[arg-type]


__all__ = ["Cjt188Client", "ModbusClient", "StreamBus", "open_transport"]
