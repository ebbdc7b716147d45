"""``meterhub collector [--shard i/n]``: run a polling collector (gateways spread over the live collectors by
leases in PostgreSQL, or one static shard)."""

from __future__ import annotations

import asyncio
import logging
import signal

import click
from flask import current_app
from flask.cli import with_appcontext

from meterhub.aio import run_loop
from meterhub.collector.schedule import Shard

log = logging.getLogger(__name__)


@click.command("collector")
@click.option("--shard", default=None,
              help="index/count: poll only the gateways whose id %% count == index (static placement). "
                   "Without it the gateways are spread over every running collector and move when one "
                   "starts, stops or dies.")
@click.option("--lease-ttl", "lease_ttl_s", type=float, default=None,
              help="Seconds a bus lease lives after its last renewal (default 15; renewed every third).")
@click.option("--only", default=None, help="Poll only these gateway ids (comma separated; trials and tests).")
@click.option("--interval", "interval_s", type=float, default=None,
              help="Override every property's reading interval (seconds; for tests and demos).")
@click.option("--reload", "reload_s", type=float, default=60.0, show_default=True,
              help="Seconds between reloads of the gateway/device lists.")
@click.option("--stagger", "stagger_s", type=float, default=60.0, show_default=True,
              help="Spread the first cycles of the buses over this many seconds.")
@with_appcontext
def collector_command(shard: str | None, lease_ttl_s: float | None, only: str | None, interval_s: float | None,
                      reload_s: float, stagger_s: float) -> None:
    """Poll Modbus / CJ/T 188 gateways: one task per bus, readings stored in batches."""
    from meterhub.collector.service import Collector

    from meterhub.collector.leases import LEASE_TTL_S

    try:
        parsed = Shard.parse(shard) if shard else None
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--shard") from err
    try:
        gateway_ids = {int(part) for part in only.split(",") if part.strip()} if only else None
    except ValueError as err:
        raise click.BadParameter("a comma-separated list of gateway ids", param_hint="--only") from err
    try:
        collector = Collector.from_app(current_app, shard=parsed, interval_s=interval_s, reload_s=reload_s,
                                       stagger_s=stagger_s, lease_ttl_s=lease_ttl_s or LEASE_TTL_S, only=gateway_ids)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--lease-ttl") from err

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, collector.request_stop)
        await collector.run()

    run_loop(main())


@click.command("dialin")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=5030, show_default=True, type=int, help="TCP port the 4G meters dial.")
@with_appcontext
def dialin_command(host: str, port: int) -> None:
    """Listen for Acrel 4G meters that dial in: registration, heartbeats, uploads, pass-through commands."""
    from meterhub.collector.dialin import DialinListener

    listener = DialinListener.from_app(current_app, host=host, port=port)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, listener.request_stop)
        await listener.run()

    run_loop(main())
