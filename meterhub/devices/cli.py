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
@click.option("--first-gateway", default=1, show_default=True, type=click.IntRange(1, 10_000),
              help="number of this process's first bus: a second `simulate` for more buses starts after the first "
                   "one's, so its gateway names and device serials differ and both can be onboarded")
def simulate_command(gateways: int, devices: int, drivers: str, base_port: int, host: str, line_timing: bool,
                     acceleration: float, onboarding_file: str | None, installed: bool, first_gateway: int) -> None:
    """Run a simulated fleet of gateways and devices until Ctrl-C."""
    from meterhub.plugins import driver_registry
    from meterhub.simulator.fleet import Fleet

    try:
        fleet = Fleet(driver_registry(), gateways=gateways, devices=devices,
                      drivers=[k.strip() for k in drivers.split(",") if k.strip()], base_port=base_port, host=host,
                      line_timing=line_timing, acceleration=acceleration, installed=installed,
                      first_gateway=first_gateway)
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


@click.command("simulate-4g")
@click.option("--server", required=True, help="host:port of the `meterhub dialin` listener to dial.")
@click.option("--serial", required=True, help="The identity the meter registers with.")
@click.option("--variant", default="ddsy1352", show_default=True, type=click.Choice(["ddsy1352", "dtsy1352"]))
@click.option("--upload-s", default=60.0, show_default=True, help="Seconds between uploads of the summary block.")
@click.option("--heartbeat-s", default=30.0, show_default=True, help="Seconds between heartbeats.")
def simulate_4g_command(server: str, serial: str, variant: str, upload_s: float, heartbeat_s: float) -> None:
    """Run a simulated Acrel 4G meter that dials in (registers, heartbeats, uploads, answers pass-through)."""
    import signal

    from meterhub.plugins import driver_registry
    from meterhub.simulator.dialin import DialinMeterSim

    host, _, port = server.rpartition(":")
    if not host or not port.isdecimal():
        raise click.BadParameter("use host:port, e.g. 127.0.0.1:5030", param_hint="--server")
    device = driver_registry()["acrel_dtsd1352"].simulator(1, {"variant": variant}, seed=int(serial[-6:] or 1)
                                                           if serial[-6:].isdecimal() else 1)
    for channel in device.meter_channels():  # counters of a meter in use, not a new meter's zeros
        channel.install(device.clock.now())
    meter = DialinMeterSim(device, serial, upload_s=upload_s, heartbeat_s=heartbeat_s, reconnect_s=2.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, meter.stop)
        click.echo(f"4G meter {serial} dialing {server}")
        await meter.run(host, int(port))

    run_loop(main())
    click.echo("stopped")
