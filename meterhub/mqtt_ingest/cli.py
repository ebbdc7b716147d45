"""``meterhub mqtt-ingest``: run the MQTT ingest worker (start several with ``--shared`` to scale out)."""

from __future__ import annotations

import logging
import signal
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from .worker import DEFAULT_CLIENT_ID, MqttIngestWorker, Settings

log = logging.getLogger(__name__)


@click.command("mqtt-ingest")
@click.option("--url", default=None, help="Broker URL (default: the MQTT_URL setting); without a user name in it, "
              "the instance's MQTT service user signs in.")
@click.option("--client-id", default=DEFAULT_CLIENT_ID, show_default=True,
              help="Fixed client id of the persistent session; unique per worker.")
@click.option("--shared/--no-shared", default=False, show_default=True, envvar="METERHUB_MQTT_SHARED",
              help="Subscribe through $share/<group>/... so several workers split the messages (a broker with "
                   "shared subscriptions, e.g. Mosquitto; not the embedded amqtt broker). Give each worker its "
                   "own --client-id.")
@click.option("--share-group", default="meterhub", show_default=True, envvar="METERHUB_MQTT_SHARE_GROUP",
              help="Name of the shared subscription group (workers of one deployment use the same).")
@click.option("--batch-size", default=500, show_default=True, help="Messages per database transaction.")
@click.option("--batch-ms", default=50, show_default=True, help="Longest wait to fill a batch (ms).")
@with_appcontext
def mqtt_ingest_command(url: str | None, client_id: str, shared: bool, share_group: str, batch_size: int,
                        batch_ms: int) -> None:
    """Store readings pushed by MQTT gateways; acknowledges each message only after the database commit."""
    from meterhub.db import service_engine
    from meterhub.mqtt_auth.credentials import service_credentials, with_credentials
    from meterhub.redis_conn import get_redis, redis_key

    broker_url = with_credentials(url or current_app.config["MQTT_URL"], service_credentials(current_app.instance_path))
    if "/" in share_group or "+" in share_group or "#" in share_group or not share_group:
        raise click.BadParameter("a share group name cannot be empty or contain / + #", param_hint="--share-group")
    settings = Settings(broker_url, client_id, shared, batch_size, batch_ms, share_group=share_group)
    worker = MqttIngestWorker(settings, service_engine(), get_redis(), redis_key("mqtt", "rejected"))

    def stop(signum: int, frame: Any) -> None:
        log.info("signal %s: stopping after the current batch", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run()
