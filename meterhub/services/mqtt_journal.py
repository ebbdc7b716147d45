"""The embedded amqtt broker's message journal: QoS 1/2 messages survive a broker restart or kill -9.

amqtt keeps sessions and the messages queued for them in memory only (its ``SessionDBPlugin`` stores no
in-flight message and nothing of signed-in clients), so a restart lost messages it had acknowledged to the
gateway. ``meterhub.services.mqtt_journal.JournalPlugin`` commits every QoS 1/2 reading a client may publish to
a SQLite file before the broker acknowledges it (``meterhub.mqtt_auth.amqtt_broker``), and the persistent
sessions' subscriptions. After a restart the broker has forgotten those sessions; when a client that held one subscribes again to the same topic, it gets
the journal of the last ``keep_s`` seconds, within the topic rules: the previous run's messages, and this run's
that came before its subscription existed (after a kill -9 a gateway usually reconnects before the ingest).
Later messages reach the subscription itself. A new subscriber gets no history, as MQTT has it. Delivery is at
least once: the ingest drops repeats by (gateway, sequence).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BasePlugin

log = logging.getLogger(__name__)


@dataclass
class JournalConfig:
    """Plugin configuration: the journal file, how long messages are kept, which topics (readings only:
    an old command delivered again could undo a newer one)."""

    path: str = "journal.sqlite3"
    keep_s: float = 900.0
    topics: list[str] = field(default_factory=lambda: ["meterhub/+/readings"])


def topic_matches(topic: str, a_filter: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    levels, wanted = topic.split("/"), a_filter.split("/")
    for i, level in enumerate(wanted):
        if level == "#":
            return True
        if i >= len(levels) or level not in ("+", levels[i]):
            return False
    return len(levels) == len(wanted)


class JournalPlugin(BasePlugin[BaseContext]):
    """Journals QoS 1/2 messages and replays the previous run's journal to subscribers."""

    Config = JournalConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.db = sqlite3.connect(self.config.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS journal (id INTEGER PRIMARY KEY, at REAL NOT NULL, "
                        "topic TEXT NOT NULL, data BLOB NOT NULL, qos INTEGER NOT NULL)")
        cutoff = time.time() - self.config.keep_s
        self.db.execute("DELETE FROM journal WHERE at < ?", (cutoff,))
        self.db.execute("CREATE TABLE IF NOT EXISTS subscribers (client_id TEXT NOT NULL, topic TEXT NOT NULL, "
                        "PRIMARY KEY (client_id, topic))")
        # the persistent sessions' subscriptions of the previous runs: the ones owed the journal this run
        self.owed: set[tuple[str, str]] = set(self.db.execute("SELECT client_id, topic FROM subscribers"))
        self._trimmed = time.monotonic()
        kept = self.db.execute("SELECT count(*) FROM journal").fetchone()[0]
        if kept and self.owed:
            log.info("mqtt journal: %d message(s) of the previous run to deliver again to %d subscription(s)",
                     kept, len(self.owed))

    def journal_incoming(self, topic: str, data: bytes, qos: int) -> None:
        """A QoS 1/2 message a client may publish, before the broker acknowledges it (``AuthFirstBroker``)."""
        if qos < 1 or not any(topic_matches(topic, t) for t in self.config.topics):
            return
        self.db.execute("INSERT INTO journal (at, topic, data, qos) VALUES (?, ?, ?, ?)", (time.time(), topic, data, qos))
        if time.monotonic() - self._trimmed > 60:
            self._trimmed = time.monotonic()
            self.db.execute("DELETE FROM journal WHERE at < ?", (time.time() - self.config.keep_s,))

    async def on_broker_client_subscribed(self, *, client_id: str, topic: str, qos: int) -> None:
        """Remember a persistent session's subscription; deliver the journal to one the previous run held.

        The subscription exists when this runs, and a message is journaled before it is acknowledged, so before
        it is routed: every message is either in the rows read here or routed to the subscription (or both)."""
        session = self.context.get_session(client_id)  # type: ignore[attr-defined]
        if session is None:
            return
        if session.clean_session:  # a clean session is owed nothing after a restart
            self.db.execute("DELETE FROM subscribers WHERE client_id = ?", (client_id,))
            return
        self.db.execute("INSERT OR IGNORE INTO subscribers (client_id, topic) VALUES (?, ?)", (client_id, topic))
        if (client_id, topic) not in self.owed:
            return
        broker = self.context._broker_instance  # type: ignore[attr-defined]
        handler = broker._get_handler(session)
        if handler is None:
            return
        self.owed.discard((client_id, topic))
        rows = self.db.execute("SELECT topic, data, qos FROM journal WHERE at >= ? ORDER BY id",
                               (time.time() - self.config.keep_s,)).fetchall()
        sent = 0
        for message_topic, data, message_qos in rows:
            if not topic_matches(message_topic, topic):
                continue
            if not await broker._topic_filtering(session, topic=message_topic, action=Action.RECEIVE):
                continue
            await handler.mqtt_publish(message_topic, bytes(data), min(message_qos, qos), retain=False)
            sent += 1
        if sent:
            log.info("mqtt journal: %d message(s) delivered again to %s", sent, client_id)

    async def on_broker_client_unsubscribed(self, *, client_id: str, topic: str) -> None:
        """An unsubscribed topic is owed nothing after a restart."""
        self.db.execute("DELETE FROM subscribers WHERE client_id = ? AND topic = ?", (client_id, topic))

    async def on_broker_post_shutdown(self) -> None:
        self.db.close()
