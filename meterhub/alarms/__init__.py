"""Alarms and notifications: the alarm engine, its sources, notifiers and delivery.

Public API::

    from meterhub.alarms import raise_alarm, clear_alarm, acknowledge, monitor_status, KINDS
"""

from .engine import AlarmSnapshot, acknowledge, clear_alarm, monitor_status, open_alarms, raise_alarm
from .kinds import KINDS, AlarmKind

__all__ = ["KINDS", "AlarmKind", "AlarmSnapshot", "acknowledge", "clear_alarm", "monitor_status", "open_alarms",
           "raise_alarm"]
