"""``meterhub mqtt``: the broker's password file and ACL for Mosquitto, and gateway passwords."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import click
from flask import current_app
from flask.cli import with_appcontext


def _service_credentials():  # noqa: ANN202
    from .credentials import Credentials, service_credentials

    url = urlparse(current_app.config["MQTT_URL"])
    if url.username:
        return Credentials(unquote(url.username), unquote(url.password or ""))
    return service_credentials(current_app.instance_path)


@click.group("mqtt")
def mqtt_group() -> None:
    """Device authentication on the MQTT broker."""


@mqtt_group.command("export-auth")
@click.option("--passwd", "passwd", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Mosquitto password_file to write.")
@click.option("--acl", "acl", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Mosquitto acl_file to write.")
@with_appcontext
def export_auth_command(passwd: Path, acl: Path) -> None:
    """Write Mosquitto's password file (PBKDF2-SHA512 $7$ hashes) and ACL: the ingest's service user reads the
    readings, each MQTT gateway may use only meterhub/<client id>/. Run again after onboarding gateways, then
    send Mosquitto SIGHUP to reload."""
    from meterhub.db import service_session

    from .export import export_auth

    with service_session() as session:
        count = export_auth(session, [_service_credentials()], passwd, acl)
    click.echo(f"wrote {passwd} ({count} gateways and the service user) and {acl}")


@mqtt_group.command("gateway-password")
@click.argument("client_id")
@with_appcontext
def gateway_password_command(client_id: str) -> None:
    """Issue a new broker password to the MQTT gateway CLIENT_ID and print it once (the old one stops working)."""
    from sqlalchemy import select

    from meterhub.db import service_session
    from meterhub.devices.models import Gateway
    from meterhub.errors import ValidationError
    from meterhub.tenants import audit

    from .credentials import issue_gateway_password

    with service_session() as session:
        gateway = session.execute(select(Gateway).where(Gateway.mqtt_client_id == client_id)).scalar()
        if gateway is None:
            raise click.ClickException(f"no gateway has MQTT client id {client_id!r}")
        try:
            credentials = issue_gateway_password(gateway)
        except ValidationError as err:
            raise click.ClickException(str(err)) from err
        audit.record(session, gateway.group_id, "gateway.mqtt_password", actor="cli", object_type="gateway",
                     object_id=gateway.id, detail={"username": credentials.username})
    click.echo(f"user name: {credentials.username}\npassword:  {credentials.password}\n"
               "(shown once; it is not stored)")
