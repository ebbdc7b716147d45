"""The Acrel 4G listener: a collector role for meters that dial in (``meterhub dialin``).

A 4G meter is its own gateway: onboarded as a gateway of framing ``acrel-4g`` with one device whose serial is the
identity the meter registers with. When it dials in and registers (0x84), the listener finds that device (in any
group; an identity onboarded in two groups, or in none, is held for onboarding and attached to nothing), takes the
gateway's bus lease like a collector and serves the gateway's job queue, so relay commands and read-now go through
the same command machinery as polled buses: the driver talks Modbus through 0x90 pass-through, one outstanding
request per meter. Uploads (0x91, the 48-register summary block) become readings through the collector's sink.
Bad frames, unknown commands and floods are counted and dropped; a connection that floods is closed.

Several listeners can run behind one address: the one a meter is connected to owns its gateway; the newest
connection of a meter wins its lease, and a listener that loses a lease drops that session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis
import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from meterhub.collector import jobs as jobkeys
from meterhub.collector.bus import COMMANDS, BusDevice, DeviceOutcome, _decimal, _jsonable
from meterhub.collector.store import StorageSink
from meterhub.driver import DeviceRef
from meterhub.protocols import acrel4g
from meterhub.protocols import modbus as mb
from meterhub.protocols.errors import DeviceError, DeviceTimeout, FrameError

log = logging.getLogger(__name__)
FRAMING = "acrel-4g"
REPLY_TIMEOUT_S = 5.0
IDLE_TIMEOUT_S = 300.0          # no frame for this long: the meter is gone (heartbeats come every minute or so)
FLOOD_FRAMES_PER_S = 50         # more frames or errors than this in a second: the connection is closed
PENDING_TTL_S = 7 * 24 * 3600   # unknown identities held for onboarding
REDIS_DOWN = (redis.RedisError, OSError)  # Redis restarting or stopping: retried, never the end of the listener
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end
return 0
"""


def seen_key(ns: str) -> str:
    """Hash serial -> last registration (JSON) of every identity that dialed in: onboarding checks it."""
    return f"{ns}:dialin:seen"


def pending_key(ns: str) -> str:
    """Hash serial -> registration of identities nobody (or more than one group) onboarded."""
    return f"{ns}:dialin:pending"


@dataclass
class Attachment:
    """An onboarded 4G meter: its gateway, device and time zone."""

    gateway_id: int
    group_id: int
    device: BusDevice
    tz: str


@dataclass(eq=False)
class MeterSession:
    """One connected meter."""

    peer: str
    writer: asyncio.StreamWriter
    serial: str = ""
    attached: Attachment | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reply: asyncio.Future[bytes] | None = None
    last_frame: float = field(default_factory=time.monotonic)

    def send(self, cmd: int, body: bytes = b"") -> None:
        self.writer.write(acrel4g.encode(cmd, body))


class PassThrough:
    """The Modbus transport a driver uses for a dialed-in meter: RTU requests wrapped in 0x90 frames."""

    def __init__(self, session: MeterSession, timeout: float = REPLY_TIMEOUT_S) -> None:
        self.session, self.timeout = session, timeout
        self.name = f"4G meter {session.serial}"

    async def request(self, unit: int, pdu: bytes) -> bytes:
        where = f"{self.name} unit {unit}"
        async with self.session.lock:  # one outstanding request per meter
            loop = asyncio.get_running_loop()
            self.session.reply = loop.create_future()
            try:
                self.session.send(acrel4g.DOWNLINK, mb.rtu_frame(unit, pdu))
                await self.session.writer.drain()
                frame = await asyncio.wait_for(self.session.reply, self.timeout)
            except (TimeoutError, asyncio.TimeoutError) as err:
                raise DeviceTimeout(f"no pass-through reply within {self.timeout:.1f} s", where,
                                    params={"seconds": self.timeout}) from err
            except (ConnectionError, OSError) as err:
                raise DeviceTimeout(f"connection lost ({type(err).__name__})", where,
                                    error_code="gateway.connection_lost") from err
            finally:
                self.session.reply = None
        r_unit, reply = mb.rtu_split(frame, where)
        if r_unit != unit:
            raise FrameError(f"reply from unit {r_unit}, expected {unit}", where)
        return reply

    async def read_holding_registers(self, unit: int, address: int, count: int) -> list[int]:
        return mb.parse_read_reply(await self.request(unit, mb.read_request(address, count)), count)

    async def write_registers(self, unit: int, address: int, values: list[int]) -> None:
        pdu = mb.write_request(address, list(values))
        mb.parse_echo_reply(await self.request(unit, pdu), pdu)

    async def write_register(self, unit: int, address: int, value: int) -> None:
        pdu = mb.write_single_request(address, value)
        mb.parse_echo_reply(await self.request(unit, pdu), pdu)


def find_meter(session: Session, serial: str, registry: dict[str, Any]) -> Attachment | None:
    """The onboarded device with this identity on an ``acrel-4g`` gateway, when exactly one group has it."""
    from meterhub.devices.models import Device, Gateway, Meter
    from meterhub.tenants.models import Property

    rows = session.execute(
        select(Device, Gateway.id, Property.timezone).join(Gateway, Gateway.id == Device.gateway_id)
        .join(Property, Property.id == Gateway.property_id)
        .where(Gateway.framing == FRAMING, Gateway.enabled.is_(True), Device.serial == serial)).all()
    if len(rows) != 1:
        if len(rows) > 1:
            log.warning("4G identity %s is onboarded in %d places; attached to none", serial, len(rows))
        return None
    device, gateway_id, tz = rows[0]
    driver = registry.get(device.driver_key)
    if driver is None:
        return None
    meters = dict(session.execute(select(Meter.channel, Meter.id).where(Meter.device_id == device.id,
                                                                          Meter.active.is_(True))).all())
    ref = DeviceRef(address=device.address, config=dict(device.config or {}), serial=device.serial)
    return Attachment(gateway_id, device.group_id, BusDevice(device.id, device.group_id, driver, ref, meters), tz)


class DialinListener:
    """Accepts 4G meters, stores their uploads and serves their gateways' job queues."""

    def __init__(self, *, engine: Engine, redis_url: str, namespace: str, host: str = "0.0.0.0", port: int = 5030,
                 registry: dict[str, Any] | None = None, sink: StorageSink | None = None,
                 attach_s: float = 10.0) -> None:
        if registry is None:
            from meterhub.plugins import driver_registry

            registry = driver_registry()
        self.engine, self.redis_url, self.ns, self.registry = engine, redis_url, namespace, registry
        self.host, self.port = host, port
        self.sink = sink or StorageSink(engine)
        self.owner = f"dialin:{socket.gethostname()}:{os.getpid()}"
        self.sessions: dict[int, MeterSession] = {}  # gateway id -> attached session
        self.waiting: set[MeterSession] = set()  # registered, not onboarded (yet): looked up every attach_s
        self.attach_s = attach_s
        self.stats: Counter[str] = Counter()
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self.redis: aioredis.Redis | None = None

    @classmethod
    def from_app(cls, app: Any, **kwargs: Any) -> DialinListener:
        from meterhub.db import service_engine

        return cls(engine=service_engine(app.config.get("SERVICE_DATABASE_URL")), redis_url=app.config["REDIS_URL"],
                   namespace=app.config["REDIS_NAMESPACE"], **kwargs)

    def request_stop(self) -> None:
        self.stop_event.set()

    async def run(self) -> None:
        """Serve until :meth:`request_stop`."""
        self.redis = aioredis.from_url(self.redis_url)
        server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]
        tasks = [asyncio.create_task(self.sink.run(self.stop_event)), asyncio.create_task(self._intake()),
                 asyncio.create_task(self._renew()), asyncio.create_task(self._attach_waiting())]
        self.ready.set()
        log.info("4G listener %s on %s:%s", self.owner, self.host, self.port)
        try:
            await self.stop_event.wait()
        finally:
            server.close()
            for session in list(self.sessions.values()):
                session.writer.close()
            await server.wait_closed()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.sink.flush()
            await self._release_all()
            await self.redis.aclose()

    # --- connections ---------------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = "%s:%s" % writer.get_extra_info("peername")[:2]
        session, frames = MeterSession(peer, writer), acrel4g.FrameBuffer()
        window, in_window = time.monotonic(), 0
        self.stats["connections"] += 1
        try:
            while not self.stop_event.is_set():
                data = await asyncio.wait_for(reader.read(4096), IDLE_TIMEOUT_S)
                if not data:
                    break
                for item in frames.feed(data):
                    now = time.monotonic()
                    window, in_window = (now, 0) if now - window > 1.0 else (window, in_window)
                    in_window += 1
                    if in_window > FLOOD_FRAMES_PER_S:
                        self.stats["floods"] += 1
                        log.warning("4G connection %s floods (> %d frames/s); closed", peer, FLOOD_FRAMES_PER_S)
                        return
                    if isinstance(item, FrameError):
                        self.stats["unknown_command" if isinstance(item, acrel4g.UnknownCommand) else
                                   "bad_crc" if "CRC" in str(item) else "dropped"] += 1
                        continue
                    session.last_frame = now
                    await self._handle(session, item)
                await writer.drain()
        except (TimeoutError, asyncio.TimeoutError):
            self.stats["idle_closed"] += 1
        except (ConnectionError, OSError):
            pass
        except redis.RedisError as err:  # the meter dials again and registers once Redis is back
            self.stats["redis_errors"] += 1
            log.warning("4G connection %s closed: Redis unavailable (%s)", peer, err)
        except Exception:  # a bug must cost one connection, never the listener
            log.exception("4G connection %s failed", peer)
            self.stats["errors"] += 1
        finally:
            await self._detach(session)
            writer.close()

    async def _handle(self, session: MeterSession, frame: acrel4g.Frame) -> None:
        self.stats[f"cmd_{frame.cmd:02x}"] += 1
        try:
            if frame.cmd == acrel4g.REGISTER:
                await self._register(session, acrel4g.parse_register(frame.body))
                session.send(acrel4g.REGISTER)
            elif frame.cmd == acrel4g.HEARTBEAT:
                self._seen(session)
            elif frame.cmd == acrel4g.TIME_SYNC:
                tz = ZoneInfo(session.attached.tz if session.attached else "Asia/Shanghai")
                session.send(acrel4g.TIME_SYNC, acrel4g.time_sync_body(datetime.now(tz)))
            elif frame.cmd == acrel4g.UPLOAD:
                await self._upload(session, acrel4g.parse_upload(frame.body))
            elif frame.cmd == acrel4g.DOWNLINK:
                reply = acrel4g.parse_downlink_reply(frame.body)
                if session.reply is not None and not session.reply.done():
                    session.reply.set_result(reply)
                else:
                    self.stats["late_replies"] += 1
        except FrameError as err:
            self.stats["bad_body"] += 1
            log.info("4G meter %s (%s): %s", session.serial or "?", session.peer, err)

    async def _register(self, session: MeterSession, reg: acrel4g.Registration) -> None:
        assert self.redis is not None
        if session.attached is not None and session.serial != reg.serial:
            await self._detach(session)
        session.serial = reg.serial
        record = json.dumps({"peer": session.peer, "iccid": reg.iccid, "rssi": reg.rssi, "at": time.time(),
                             "interval_min": reg.interval_min})
        await self.redis.hset(seen_key(self.ns), reg.serial, record)
        attachment = await asyncio.to_thread(self._find, reg.serial)
        if attachment is None:
            self.stats["held_for_onboarding"] += 1
            self.waiting.add(session)
            await self.redis.hset(pending_key(self.ns), reg.serial, record)
            await self.redis.expire(pending_key(self.ns), PENDING_TTL_S)
            log.info("4G meter %s (%s) is not onboarded; held for onboarding", reg.serial, session.peer)
            return
        await self._attach(session, attachment)

    async def _attach(self, session: MeterSession, attachment: Attachment) -> None:
        assert self.redis is not None
        self.waiting.discard(session)
        await self.redis.hdel(pending_key(self.ns), session.serial)
        key = jobkeys.lease_key(self.ns, attachment.gateway_id)
        await self.redis.set(key, self.owner, px=int(jobkeys.LEASE_TTL_S * 1000))  # the newest connection wins
        old = self.sessions.get(attachment.gateway_id)
        if old is not None and old is not session:
            old.attached = None
            old.writer.close()
        session.attached = attachment
        self.sessions[attachment.gateway_id] = session
        self._seen(session)
        self.stats["attached"] += 1
        log.info("4G meter %s attached to gateway %s (%s)", session.serial, attachment.gateway_id, session.peer)

    async def _attach_waiting(self) -> None:
        """Meters onboarded while connected are attached without waiting for their next registration."""
        while not self.stop_event.is_set():
            await asyncio.sleep(self.attach_s)
            for session in list(self.waiting):
                if session.writer.is_closing():
                    self.waiting.discard(session)
                    continue
                attachment = await asyncio.to_thread(self._find, session.serial)
                if attachment is not None:
                    await self._attach(session, attachment)

    def _find(self, serial: str) -> Attachment | None:
        with Session(self.engine) as db:
            return find_meter(db, serial, self.registry)

    def _seen(self, session: MeterSession) -> None:
        if session.attached is not None:
            a = session.attached
            self.sink.device_done(DeviceOutcome(a.gateway_id, a.device, datetime.now(UTC), [], None, 0, "poll"))

    async def _upload(self, session: MeterSession, upload: acrel4g.Upload) -> None:
        if upload.serial and upload.serial != session.serial:
            self.stats["upload_identity_mismatch"] += 1
            return
        if session.attached is None:
            self.stats["unattached_uploads"] += 1
            return
        a = session.attached
        try:
            readings = a.device.driver.decode_summary(a.device.ref, upload.registers)
        except (AttributeError, ValueError) as err:
            self.stats["undecodable_uploads"] += 1
            log.warning("4G meter %s: upload not decoded (%s)", session.serial, err)
            return
        self.sink.device_done(DeviceOutcome(a.gateway_id, a.device, readings[0].timestamp, readings, None, 0))
        self.stats["uploads"] += 1
        session.send(acrel4g.UPLOAD)

    async def _detach(self, session: MeterSession) -> None:
        self.waiting.discard(session)
        a = session.attached
        if a is None or self.sessions.get(a.gateway_id) is not session:
            return
        del self.sessions[a.gateway_id]
        session.attached = None
        if self.redis is not None:
            try:
                await self.redis.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', "
                                      "KEYS[1]) end return 0", 1, jobkeys.lease_key(self.ns, a.gateway_id), self.owner)
            except REDIS_DOWN as err:  # the lease expires by itself
                log.debug("4G meter %s: lease not released (%s)", session.serial, err)

    async def _release_all(self) -> None:
        for session in list(self.sessions.values()):
            await self._detach(session)

    async def _renew(self) -> None:
        """Keep the leases of attached meters; a lease another listener took means its meter reconnected there."""
        assert self.redis is not None
        while not self.stop_event.is_set():
            await asyncio.sleep(jobkeys.LEASE_TTL_S / 3)
            for gateway_id, session in list(self.sessions.items()):
                try:
                    kept = await self.redis.eval(_RENEW, 1, jobkeys.lease_key(self.ns, gateway_id), self.owner,
                                                 int(jobkeys.LEASE_TTL_S * 1000))
                except REDIS_DOWN as err:
                    log.warning("4G listener: leases not renewed (%s); retrying", err)
                    break
                if not kept:
                    log.info("4G meter %s reconnected elsewhere; dropping this session", session.serial)
                    self.sessions.pop(gateway_id, None)
                    session.attached = None
                    session.writer.close()

    # --- jobs ------------------------------------------------------------------------------------------------
    async def _intake(self) -> None:
        assert self.redis is not None
        running: set[asyncio.Task[None]] = set()
        while not self.stop_event.is_set():
            keys = [jobkeys.jobs_key(self.ns, gid) for gid in self.sessions]
            if not keys:
                await asyncio.sleep(0.2)
                continue
            try:
                item = await self.redis.blpop(keys, timeout=1)
            except REDIS_DOWN as err:
                log.debug("4G listener: Redis unavailable for jobs (%s); retrying", err)
                await asyncio.sleep(1.0)
                continue
            if item is None:
                continue
            key, raw = item
            gateway_id, job = int(key.decode().rsplit(":", 2)[-2]), json.loads(raw)
            task = asyncio.create_task(self._run_job(gateway_id, job))
            running.add(task)
            task.add_done_callback(running.discard)

    async def _run_job(self, gateway_id: int, job: dict[str, Any]) -> None:
        session = self.sessions.get(gateway_id)
        if session is None or session.attached is None or time.time() - float(job.get("at", 0)) > jobkeys.JOB_TTL_S:
            result: dict[str, Any] = {"ok": False, "error": "the 4G meter is not connected", "retryable": True,
                                      "code": "dialin.not_connected"}
        elif job["kind"] == "read":
            result = await self._read_now(session, job)
        else:
            result = await self._command(session, job)
        await self._reply(job, gateway_id, result)

    async def _command(self, session: MeterSession, job: dict[str, Any]) -> dict[str, Any]:
        assert session.attached is not None
        device = session.attached.device
        channel = next((ch for ch, mid in device.meters.items() if mid in job.get("meter_ids", [])), None)
        if channel is None or job.get("method") not in COMMANDS:
            return {"ok": False, "error": "not a command for this meter", "retryable": False,
                    "code": "dialin.wrong_meter"}
        params = {k: _decimal(k, v) for k, v in (job.get("params") or {}).items()}
        try:
            await getattr(device.driver, job["method"])(PassThrough(session), device.ref, channel=channel, **params)
        except DeviceError as err:
            return {"ok": False, "error": str(err), "retryable": bool(err.retryable), "code": err.error_code,
                    "params": err.params}
        return {"ok": True}

    async def _read_now(self, session: MeterSession, job: dict[str, Any]) -> dict[str, Any]:
        assert session.attached is not None
        a = session.attached
        try:
            words = await PassThrough(session).read_holding_registers(int(a.device.ref.address), 0x0200, 48)
            readings = a.device.driver.decode_summary(a.device.ref, words)
        except (DeviceError, ValueError) as err:
            code = ({"code": err.error_code, "params": err.params} if isinstance(err, DeviceError)
                    else {"code": "device.bad_frame", "params": {}})
            return {"ok": False, "meters": {str(m): {"ok": False, "error": str(err), **code} for m in job["meter_ids"]}}
        self.sink.device_done(DeviceOutcome(a.gateway_id, a.device, readings[0].timestamp, readings, None, 0,
                                            "readnow"))
        meters = {str(mid): {"ok": True, "ts": readings[0].timestamp.isoformat(),
                             "values": _jsonable(readings[0].values)}
                  for ch, mid in a.device.meters.items() if mid in job["meter_ids"]}
        return {"ok": True, "meters": meters}

    async def _reply(self, job: dict[str, Any], gateway_id: int, result: dict[str, Any]) -> None:
        assert self.redis is not None
        try:
            await jobkeys.send_reply(self.redis, self.ns, job, gateway_id, result)
        except REDIS_DOWN as err:  # the requester times out and retries
            log.warning("4G listener: no reply to job %s (%s)", job.get("id"), err)
