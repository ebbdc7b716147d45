"""Simulated devices and buses: faithful enough to test drivers, the collector and the demo.

    from meterhub.simulator import SimServer, LineTiming, Faults, SimClock, Fleet
"""

from meterhub.simulator.device import RegisterSimDevice, SimDevice
from meterhub.simulator.fleet import Fleet
from meterhub.simulator.model import SimClock
from meterhub.simulator.server import Faults, LineTiming, SimServer

__all__ = ["Faults", "Fleet", "LineTiming", "RegisterSimDevice", "SimClock", "SimDevice", "SimServer"]
