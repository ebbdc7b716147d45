"""Click commands ``meterhub plugins`` and ``meterhub simulate`` (no app context needed)."""

from __future__ import annotations

import asyncio
import logging

import click

from meterhub.aio import run_loop

log = logging.getLogger(__name__)


@click.command("plugins")
def plugins_command() -> None:
    """List installed plugins, their versions and the hooks they implement."""
    from meterhub.plugins import get_plugin_manager, list_plugins

    rows = list_plugins(get_plugin_manager())
    width = max([len(r["name"]) for r in rows] + [6])
    click.echo(f"{'plugin':<{width}}  {'version':<10} hooks")
    for row in rows:
        click.echo(f"{row['name']:<{width}}  {row['version'] or '-':<10} {', '.join(row['hooks']) or '-'}")


@click.command("simulate")
@click.option("--gateways", default=1, show_default=True, type=click.IntRange(1, 500))
@click.option("--devices", default=3, show_default=True, type=click.IntRange(1, 247), help="devices per gateway")
@click.option("--driver", "drivers", default="acrel_dtsd1352", show_default=True,
              help="driver key(s), comma separated; gateways cycle through them")
@click.option("--base-port", default=15020, show_default=True, type=click.IntRange(0, 32767))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--line-timing/--no-line-timing", default=False, help="simulate RS485 timing")
@click.option("--acceleration", default=1.0, show_default=True, help="simulated seconds per real second")
@click.option("--onboarding-file", type=click.Path(dir_okay=False), help="write gateways/devices (.json or .xlsx)")
@click.option("--installed/--new", default=False, show_default=True,
              help="start meters with the counters of meters in use since 2024 (and list their load profiles)")
def simulate_command(gateways: int, devices: int, drivers: str, base_port: int, host: str, line_timing: bool,
                     acceleration: float, onboarding_file: str | None, installed: bool) -> None:
    """Run a simulated fleet of gateways and devices until Ctrl-C."""
    from meterhub.plugins import driver_registry
    from meterhub.simulator.fleet import Fleet

    try:
        fleet = Fleet(driver_registry(), gateways=gateways, devices=devices,
                      drivers=[k.strip() for k in drivers.split(",") if k.strip()], base_port=base_port, host=host,
                      line_timing=line_timing, acceleration=acceleration, installed=installed)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err

    async def run() -> None:
        await fleet.start()
        try:
            if onboarding_file:
                fleet.write_onboarding(onboarding_file)
                click.echo(f"onboarding file written to {onboarding_file}")
            for gw in fleet.gateways:
                count = sum(1 for d in fleet.devices if d["gateway"] == gw["name"])
                click.echo(f"{gw['name']}: {gw['framing']} on {gw['host']}:{gw['port']} ({count} devices)")
            click.echo("simulating; press Ctrl-C to stop")
            await asyncio.Event().wait()
        finally:
            await fleet.stop()

    try:
        run_loop(run())
    except KeyboardInterrupt:
        click.echo("stopped")
