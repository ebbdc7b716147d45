"""The embedded amqtt broker's authentication and topic plugins (loaded by the broker from its config).

``meterhub.mqtt_auth.amqtt_plugin.GatewayAuthPlugin`` signs in the service users listed in its config (user
name -> ``$7$`` hash) and push gateways by their ``gateways.mqtt_password_hash`` (read as the service role at
each CONNECT, so a new or reset password works at once and a disabled gateway is refused); a gateway's MQTT
client id must be its user name. Anonymous clients and everyone else are refused.
``meterhub.mqtt_auth.amqtt_plugin.TopicRulesPlugin`` applies :mod:`meterhub.mqtt_auth.rules` to every publish,
subscription and delivery. This module runs inside the broker process and imports only amqtt, psycopg2 and
the rules.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from .passwords import verify_password
from .rules import PUBLISH, RECEIVE, SUBSCRIBE, gateway_may, service_may

log = logging.getLogger(__name__)

_GATEWAY_HASH = ("SELECT mqtt_password_hash FROM gateways "
                 "WHERE mqtt_client_id = %s AND enabled AND framing = 'mqtt' AND mqtt_password_hash IS NOT NULL")


@dataclass
class AuthConfig:
    """Plugin configuration: the service users' hashes and the database holding the gateways' hashes."""

    service_users: dict[str, str] = field(default_factory=dict)
    database_url: str | None = None


class GatewayDirectory:
    """Gateway password hashes from the database, one connection kept open (reopened after an error)."""

    def __init__(self, database_url: str | None) -> None:
        self.dsn = database_url.replace("postgresql+psycopg2://", "postgresql://", 1) if database_url else None
        self._conn: Any = None
        self._lock = threading.Lock()

    def password_hash(self, client_id: str) -> str | None:
        """The hash of an enabled MQTT gateway's password, or None (unknown, disabled, no password, no database)."""
        if self.dsn is None:
            return None
        import psycopg2

        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = psycopg2.connect(self.dsn, connect_timeout=5, application_name="meterhub-broker")
                        self._conn.autocommit = True
                    with self._conn.cursor() as cur:
                        cur.execute(_GATEWAY_HASH, (client_id,))
                        row = cur.fetchone()
                    return row[0] if row else None
                except psycopg2.Error:
                    log.warning("gateway look-up failed (attempt %d)", attempt, exc_info=attempt == 2)
                    try:
                        if self._conn is not None:
                            self._conn.close()
                    except psycopg2.Error:
                        pass
                    self._conn = None
        return None


class GatewayAuthPlugin(BaseAuthPlugin):
    """Signs in service users and push gateways; refuses anonymous and unknown clients."""

    Config = AuthConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.service_users: dict[str, str] = dict(self.config.service_users)
        self.gateways = GatewayDirectory(self.config.database_url)
        if self.config.database_url is None:
            log.warning("no database configured for the broker: push gateways cannot sign in")

    def _check(self, username: str, password: str | None, client_id: str | None) -> bool:
        if username in self.service_users:
            return verify_password(password, self.service_users[username])
        if client_id != username:
            log.info("MQTT client %r refused: a gateway's client id must be its user name %r", client_id, username)
            return False
        return verify_password(password, self.gateways.password_hash(username))

    async def authenticate(self, *, session: Session) -> bool:
        """True only for a known user with the right password."""
        username = session.username if session else None
        if not username:
            log.info("anonymous MQTT client %r refused", session.client_id if session else None)
            return False
        ok = await asyncio.to_thread(self._check, username, session.password, session.client_id)
        if not ok:
            log.info("MQTT user %r (client %r) refused: wrong user name or password", username, session.client_id)
        return ok


_ACTIONS = {Action.PUBLISH: PUBLISH, Action.SUBSCRIBE: SUBSCRIBE, Action.RECEIVE: RECEIVE}


class TopicRulesPlugin(BaseTopicPlugin):
    """Gateways only under their own topic, the service users only the readings, nobody anything else."""

    Config = AuthConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.service_users = frozenset(self.config.service_users)

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        """Whether ``session``'s user may ``action`` on ``topic``."""
        username = session.username if session else None
        kind = _ACTIONS.get(action) if action is not None else None
        if not username or not topic or kind is None:
            return False
        allowed = service_may(topic, kind) if username in self.service_users else gateway_may(username, topic, kind)
        if not allowed and kind != RECEIVE:
            log.info("MQTT user %r may not %s %r", username, kind, topic)
        return allowed
