"""Run an amqtt broker from a YAML config until SIGTERM/SIGINT, then shut it down cleanly.

Started by meterhub.services.mqtt as ``python <this file> <config.yaml>``: it is run by path, so it only
needs amqtt (not meterhub) to be importable.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys


async def _serve(config: dict) -> None:
    from amqtt.broker import Broker

    broker = Broker(config)
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
