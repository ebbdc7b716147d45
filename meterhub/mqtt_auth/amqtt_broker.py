"""The embedded broker: amqtt's ``Broker`` with every CONNECT authenticated before it can touch a session.

amqtt 0.12.1 looks up (and, for a clean session, deletes) the existing session of a client id, and takes over
a connected one, before it asks the auth plugins: a client with no credentials at all could disconnect the
ingest or wipe its persistent session (the QoS 1 messages queued for it) just by using its client id. Here the
plugins answer first; a refused client gets CONNACK "not authorized" and never reaches the session table.
amqtt also publishes a client's will message without asking the topic plugins, so a gateway could leave a
"reading" on another gateway's topic as its will: a will the topic rules would not let the client publish is
refused at CONNECT, as Mosquitto does.
The rest of ``_initialize_client_session`` is amqtt's own (amqtt is pinned; re-check on upgrade).

amqtt acknowledges an incoming QoS 1/2 message (PUBACK/PUBREC) before it routes it, and plugins hear of it only
when routed: a kill -9 in between lost a message the gateway had been told was safe. Each client's handler here
journals the message first (:class:`JournalFirstHandler`, the journal plugin's ``journal_incoming``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import INCOMING, ApplicationMessage, Session
from amqtt.utils import format_client_message, gen_client_id


class JournalFirstHandler(BrokerProtocolHandler):
    """amqtt's handler, but an incoming QoS 1/2 message goes through ``before_ack`` before it is acknowledged."""

    before_ack: Callable[[Session | None, ApplicationMessage], Awaitable[None]] | None = None

    async def _handle_qos1_message_flow(self, app_message: Any) -> None:
        if app_message.direction == INCOMING and self.before_ack is not None:
            await self.before_ack(self.session, app_message)
        await super()._handle_qos1_message_flow(app_message)

    async def _handle_qos2_message_flow(self, app_message: Any) -> None:
        if app_message.direction == INCOMING and self.before_ack is not None and app_message.pubrec_packet is None:
            await self.before_ack(self.session, app_message)
        await super()._handle_qos2_message_flow(app_message)


class AuthFirstBroker(Broker):
    """A broker that refuses unauthenticated clients before looking at any existing session."""

    async def _initialize_client_session(self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str,
                                         remote_port: int) -> tuple[BrokerProtocolHandler, Session]:
        where = format_client_message(address=remote_address, port=remote_port)
        try:
            handler, client_session = await BrokerProtocolHandler.init_from_connect(reader, writer,
                                                                                  self.plugins_manager)
        except AMQTTError as exc:
            self.logger.warning(f"[MQTT-3.1.0-1] {where}: Can't read first packet as CONNECT: {exc}")
            raise AMQTTError(exc) from exc
        except MQTTError as exc:
            self.logger.warning(f"Invalid connection from {where}")
            await writer.close()
            raise MQTTError(exc) from exc
        except NoDataError as exc:
            self.logger.error(f"No data from {where} : {exc}")  # noqa: G004
            raise AMQTTError(exc) from exc

        handler.__class__ = JournalFirstHandler
        handler.before_ack = self._journal_before_ack  # type: ignore[attr-defined]
        if not await self._authenticate(client_session, None):  # type: ignore[arg-type]
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"{where} (client id {client_session.client_id!r}) not authorized")
        if client_session.will_flag and not await self._topic_filtering(
                client_session, client_session.will_topic or "", Action.PUBLISH):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"{where} (user {client_session.username!r}) may not publish its will on "
                            f"{client_session.will_topic!r}")

        # --- from here on amqtt 0.12.1's Broker._initialize_client_session -------------------------------
        if client_session.clean_session:
            if client_session.client_id is not None and client_session.client_id != "":
                await self._delete_session(client_session.client_id)
            else:
                client_session.client_id = gen_client_id()
            client_session.parent = 0
        elif client_session.client_id in self._sessions:
            existing_client_session, _ = self._sessions[client_session.client_id]
            existing_client_session.will_flag = client_session.will_flag
            existing_client_session.will_message = client_session.will_message
            existing_client_session.will_topic = client_session.will_topic
            existing_client_session.will_qos = client_session.will_qos
            existing_client_session.keep_alive = client_session.keep_alive
            existing_client_session.username = client_session.username
            existing_client_session.password = client_session.password
            client_session = existing_client_session
            client_session.parent = 1
        else:
            client_session.parent = 0

        timeout_disconnect_delay = self.config.get("timeout-disconnect-delay", 0)
        if client_session.keep_alive > 0 and isinstance(timeout_disconnect_delay, int):
            client_session.keep_alive += timeout_disconnect_delay
        return handler, client_session

    async def _journal_before_ack(self, session: Session | None, message: ApplicationMessage) -> None:
        """Journal a message the client may publish (the topic rules asked first), before amqtt acknowledges it."""
        journal = next((p for p in self.plugins_manager.plugins if hasattr(p, "journal_incoming")), None)
        topic = message.topic or ""
        if journal is None or session is None or not topic or "+" in topic or "#" in topic or topic.startswith("$"):
            return  # amqtt refuses such a topic when it routes the message
        if await self._topic_filtering(session, topic=topic, action=Action.PUBLISH):
            journal.journal_incoming(topic, bytes(message.data or b""), int(message.qos or 0))
