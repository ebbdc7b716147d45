"""Credentials on the broker: a gateway's password (issued at onboarding, shown once, stored as a hash) and the
ingest service's user (configured in ``MQTT_URL`` or generated into the instance folder like the secret key)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlparse, urlunparse

from meterhub.errors import ConfigError, ValidationError

from .passwords import hash_password, new_password
from .rules import SERVICE_USER, check_client_id

SERVICE_PASSWORD_FILE = "mqtt_service_password"


@dataclass(frozen=True)
class Credentials:
    """A broker user name and its password in clear (shown once, or read from the instance folder)."""

    username: str
    password: str


def issue_gateway_password(gateway: object) -> Credentials:
    """Give a push gateway a new broker password (the old one stops working); returns it for showing once."""
    client_id = getattr(gateway, "mqtt_client_id", None)
    if getattr(gateway, "framing", None) != "mqtt" or not client_id:
        raise ValidationError(f"Gateway {getattr(gateway, 'name', '?')} is not an MQTT gateway with a client id; "
                              "only MQTT gateways sign in to the broker.", {"framing": "not mqtt"})
    check_client_id(client_id)
    password = new_password()
    gateway.mqtt_password_hash = hash_password(password)  # type: ignore[attr-defined]
    return Credentials(client_id, password)


def service_credentials(instance_path: str | Path) -> Credentials:
    """The ingest service's broker user, its password created on first use in ``<instance>/mqtt_service_password``."""
    path = Path(instance_path) / SERVICE_PASSWORD_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24) + "\n")
            try:
                os.link(scratch, path)  # atomic: processes starting together agree on one password
            except FileExistsError:
                pass
        finally:
            scratch.unlink(missing_ok=True)
    password = path.read_text().strip()
    if not password:
        raise ConfigError(f"{path} is empty: delete it to generate a new MQTT service password (then restart the "
                          "broker and the ingest), or set the user and password in MQTT_URL")
    return Credentials(SERVICE_USER, password)


def with_credentials(url: str, credentials: Credentials) -> str:
    """``url`` with ``credentials`` as its user and password, unless it names a user already."""
    parsed = urlparse(url)
    if parsed.username:
        return url
    netloc = f"{quote(credentials.username, safe='')}:{quote(credentials.password, safe='')}@{parsed.netloc}"
    return urlunparse(parsed._replace(netloc=netloc))
