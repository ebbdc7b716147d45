"""Run an amqtt broker from a YAML config until SIGTERM/SIGINT, then shut it down cleanly.

Started by meterhub.services.mqtt as ``python <this file> <config.yaml>`` (run by path, without this package's
directory on ``sys.path``). The broker is :class:`meterhub.mqtt_auth.amqtt_broker.AuthFirstBroker` (amqtt's,
authenticating each CONNECT before it can touch a session) with meterhub's auth and topic plugins.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys


async def _serve(config: dict) -> None:
    from meterhub.mqtt_auth.amqtt_broker import AuthFirstBroker

    broker = AuthFirstBroker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("meterhub: amqtt broker ready", flush=True)
    await stop.wait()
    await broker.shutdown()


def main() -> int:
    import yaml

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(sys.argv[1], encoding="utf-8") as f:
        config = yaml.safe_load(f)
    asyncio.run(_serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
