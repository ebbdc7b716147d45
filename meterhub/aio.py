"""The event loop for meterhub's asyncio processes (collector, simulators).

    run_loop(main())     # uvloop when installed (the default on Linux), else the standard asyncio loop

uvloop roughly halves the per-transaction CPU of the collector (each Modbus transaction is a few small
socket operations); ``METERHUB_UVLOOP=0`` forces the standard loop (to compare, or to debug).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def uvloop_enabled() -> bool:
    """Whether ``run_loop`` will use uvloop here."""
    if os.environ.get("METERHUB_UVLOOP", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on uvloop when available."""
    if uvloop_enabled():
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
