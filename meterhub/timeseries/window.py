"""Which reading times are believable: at most ``max_future`` ahead of this host's clock, not before
``earliest`` (a device clock that fell back to 1970 or 2000), and not before the meter's installation.

A reading outside the window is refused on every ingest path (it is never stored and never becomes the meter's
latest, so a clock stuck in 9999 cannot keep a meter "online") and recorded as a ``time_refused`` health event.
Settings: ``READING_MAX_FUTURE_MINUTES`` (default 5) and ``READING_EARLIEST`` (ISO 8601 with an offset,
default 2000-01-01T00:00:00+00:00).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from meterhub.errors import ConfigError

DEFAULT_MAX_FUTURE = timedelta(minutes=5)
DEFAULT_EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
EVENT = "time_refused"
FUTURE, TOO_OLD, BEFORE_INSTALLATION = "future", "too_old", "before_installation"


@dataclass(frozen=True)
class ReadingWindow:
    """The believable reading times, relative to the clock when a batch is encoded."""

    max_future: timedelta = DEFAULT_MAX_FUTURE
    earliest: datetime = DEFAULT_EARLIEST

    def bounds(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """(earliest, latest) allowed now."""
        return self.earliest, (now or datetime.now(timezone.utc)) + self.max_future

    @staticmethod
    def reason(ts: datetime, bounds: tuple[datetime, datetime]) -> str:
        """Why ``ts`` is outside ``bounds``."""
        return FUTURE if ts > bounds[1] else TOO_OLD


def configured_window() -> ReadingWindow:
    """The window from the app's settings (defaults outside an app context)."""
    try:
        from flask import current_app, has_app_context
    except ImportError:  # pragma: no cover - flask is a dependency
        return ReadingWindow()
    if not has_app_context():
        return ReadingWindow()
    config = current_app.config
    try:
        minutes = float(config.get("READING_MAX_FUTURE_MINUTES", 5))
        earliest_raw = config.get("READING_EARLIEST")
        earliest = datetime.fromisoformat(str(earliest_raw)) if earliest_raw else DEFAULT_EARLIEST
    except (TypeError, ValueError) as err:
        raise ConfigError(f"READING_MAX_FUTURE_MINUTES / READING_EARLIEST are not usable ({err}): give minutes as "
                          "a number and the earliest time as ISO 8601 with an offset, e.g. 2000-01-01T00:00:00+00:00"
                          ) from err
    if earliest.tzinfo is None:
        raise ConfigError(f"READING_EARLIEST={earliest_raw!r} has no UTC offset; add one, e.g. +00:00")
    if minutes < 0:
        raise ConfigError(f"READING_MAX_FUTURE_MINUTES={minutes} is negative; give 0 or more minutes")
    return ReadingWindow(timedelta(minutes=minutes), earliest)
