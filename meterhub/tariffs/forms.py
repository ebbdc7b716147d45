"""Parsing the price-plan forms: prices, period lines ``HH:MM-HH:MM rate``, tier lines, effective dates.

Shared by the console (``webui/tariffs.py``) and anything else that takes plans as text; every error is a
:class:`ValidationError` naming the line and what to write instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, available_timezones

from flask_babel import gettext as _

from ..errors import ValidationError, about
from .models import PLAN_KINDS, RATES
from .service import flat_prices
from .pricing import DAY_MINUTES, MAX_PERIODS, TIER_KINDS, TOU_KINDS, PlanVersion

DEFAULT_TZ = "Asia/Shanghai"


def rate_label(rate: str) -> str:
    """The rate's name as people say it (尖/峰/平/谷)."""
    return {"sharp": _("Sharp (尖)"), "peak": _("Peak (峰)"), "flat": _("Flat (平)"), "valley": _("Valley (谷)")}.get(rate, rate)
#: Rate names accepted in period lines (English and Chinese 尖/峰/平/谷).
RATE_ALIASES = {"sharp": "sharp", "peak": "peak", "flat": "flat", "valley": "valley",
                "尖": "sharp", "峰": "peak", "平": "flat", "谷": "valley"}
_PRICE_RE = re.compile(r"^\d{1,6}(?:\.\d+)?$")
_USAGE_RE = re.compile(r"^\d{1,10}(?:\.\d+)?$")
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$")
MAX_TIERS = 20


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


# --- parsing (pure; raise ValidationError with a message per field) -------------------------------------------

def parse_decimal(text: str, what: str, places: int, *, pattern: re.Pattern = _PRICE_RE, positive: bool = False) -> Decimal:
    """A plain decimal number (no exponent, sign, NaN or float tricks) with at most ``places`` decimals."""
    text = (text or "").strip()
    if not text:
        raise ValidationError(_("%(what)s is required.", what=what))
    if not pattern.match(text):
        raise ValidationError(_("%(what)s must be a plain number like 0.568, not %(value)s.", what=what, value=repr(text)))
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern already guards
        raise ValidationError(_("%(what)s must be a number.", what=what)) from None
    if value != value.quantize(Decimal(1).scaleb(-places)):
        raise ValidationError(_("%(what)s has more than %(n)d decimals: %(value)s.", what=what, n=places, value=text))
    if positive and value <= 0:
        raise ValidationError(_("%(what)s must be greater than 0.", what=what))
    return value.quantize(Decimal(1).scaleb(-places))


def parse_time(text: str, line_no: int, *, end: bool) -> int:
    match = _TIME_RE.match(text.strip())
    if not match:
        raise ValidationError(_("Line %(n)d: %(value)s is not a time HH:MM.", n=line_no, value=repr(text.strip())))
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not end)):
        raise ValidationError(_("Line %(n)d: %(value)s is not a time of day (00:00–24:00).", n=line_no,
                                value=repr(text.strip())))
    return hours * 60 + minutes


def parse_periods(text: str) -> tuple[tuple[int, int, str], ...]:
    """Lines ``HH:MM-HH:MM rate`` tiling 00:00–24:00 exactly; 1–48 periods."""
    periods = []
    for line_no, raw in enumerate((text or "").splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        match = re.match(r"^(\S+)\s*[-–~]\s*(\S+)\s+(\S+)$", line)
        if not match:
            raise ValidationError(_("Line %(n)d: %(line)s should look like 08:00-11:00 peak.", n=line_no, line=repr(line)))
        start = parse_time(match.group(1), line_no, end=False)
        end = parse_time(match.group(2), line_no, end=True)
        rate = RATE_ALIASES.get(match.group(3).lower())
        if rate is None:
            raise ValidationError(_("Line %(n)d: unknown rate %(rate)s; use sharp, peak, flat or valley (尖/峰/平/谷).",
                                    n=line_no, rate=repr(match.group(3))))
        if end <= start:
            raise ValidationError(_("Line %(n)d: the period must end after it starts; enter a period across midnight "
                                    "as two lines (e.g. 23:00-24:00 and 00:00-07:00).", n=line_no))
        periods.append((start, end, rate))
    if not periods:
        raise ValidationError(_("Enter at least one period (00:00-24:00 flat for the whole day)."))
    if len(periods) > MAX_PERIODS:
        raise ValidationError(_("At most %(n)d periods, got %(got)d.", n=MAX_PERIODS, got=len(periods)))
    periods.sort()
    edge = 0
    for start, end, _rate in periods:
        if start > edge:
            raise ValidationError(_("Gap: nothing covers %(a)s–%(b)s.", a=hhmm(edge), b=hhmm(start)))
        if start < edge:
            raise ValidationError(_("Overlap: the period starting at %(a)s overlaps the one ending at %(b)s.",
                                    a=hhmm(start), b=hhmm(edge)))
        edge = end
    if edge != DAY_MINUTES:
        raise ValidationError(_("Gap: nothing covers %(a)s–24:00.", a=hhmm(edge)))
    return tuple(periods)


def parse_tiers(text: str) -> tuple[tuple[Decimal, Decimal], ...]:
    """Lines ``threshold surcharge``: ascending positive thresholds (usage per tier period), surcharge ≥ 0."""
    tiers = []
    for line_no, raw in enumerate((text or "").splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValidationError(_("Tier line %(n)d: %(line)s should look like 200 0.05 (threshold, surcharge).",
                                    n=line_no, line=repr(line)))
        lower = parse_decimal(parts[0], _("Tier line %(n)d: the threshold", n=line_no), 4, pattern=_USAGE_RE,
                              positive=True)
        surcharge = parse_decimal(parts[1], _("Tier line %(n)d: the surcharge", n=line_no), 6)
        if tiers and lower <= tiers[-1][0]:
            raise ValidationError(_("Tier line %(n)d: thresholds must be ascending and distinct.", n=line_no))
        tiers.append((lower, surcharge))
    if not tiers:
        raise ValidationError(_("Enter at least one tier line (threshold surcharge)."))
    if len(tiers) > MAX_TIERS:
        raise ValidationError(_("At most %(n)d tiers.", n=MAX_TIERS))
    return tuple(tiers)


def parse_effective(day: str, at: str, tz: str) -> datetime:
    """The effective moment: a local date (and time, default 00:00) in ``tz``, returned in UTC."""
    if tz not in _timezones():
        raise ValidationError(_("Unknown time zone %(tz)s.", tz=repr(tz)), {"timezone": "unknown"})
    try:
        local_day = date.fromisoformat((day or "").strip())
    except ValueError:
        raise ValidationError(_("The effective date must be a date like 2025-07-01."),
                              {"effective_date": "date"}) from None
    at = (at or "").strip() or "00:00"
    match = _TIME_RE.match(at)
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValidationError(_("The effective time must look like 00:00."), {"effective_time": "time"})
    local = datetime.combine(local_day, time(int(match.group(1)), int(match.group(2))), ZoneInfo(tz))
    return local.astimezone(timezone.utc)


def _timezones() -> set[str]:
    return available_timezones() | {DEFAULT_TZ}


@dataclass
class VersionForm:
    kind: str = "flat"
    effective_date: str = ""
    effective_time: str = "00:00"
    timezone: str = DEFAULT_TZ
    prices: dict[str, str] = field(default_factory=dict)
    periods: str = ""
    tiers: str = ""
    tier_period: str = "month"

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> VersionForm:
        """Read the posted fields (missing ones take their defaults)."""
        return cls(kind=form.get("kind", ""), effective_date=form.get("effective_date", ""),
                   effective_time=form.get("effective_time", "00:00"), timezone=form.get("timezone", DEFAULT_TZ),
                   prices={r: form.get(f"price_{r}", "") for r in RATES}, periods=form.get("periods", ""),
                   tiers=form.get("tiers", ""), tier_period=form.get("tier_period", "month"))


def build_version(form: VersionForm, utility: str) -> PlanVersion:
    """The PlanVersion a form describes (ValidationError with a clear message, naming the form's field, otherwise)."""
    if form.kind not in PLAN_KINDS:
        raise ValidationError(_("Choose a plan kind: flat, time of use, tiered or tiered + time of use."),
                              {"kind": "unknown"})
    if utility == "water" and form.kind not in ("flat", "tiered"):
        raise ValidationError(_("A water plan is flat or tiered per m³."), {"kind": "water"})
    if form.kind in TOU_KINDS:
        with about("periods"):
            periods = parse_periods(form.periods)
        used = {rate for _s, _e, rate in periods}
        prices = {}
        for rate in RATES:
            text = form.prices.get(rate, "").strip()
            with about(f"price_{rate}"):
                if rate in used:
                    prices[rate] = parse_decimal(text, _("The %(rate)s price", rate=rate_label(rate)), 6)
                elif text:
                    raise ValidationError(_("The %(rate)s price is set but no period uses that rate.",
                                            rate=rate_label(rate)))
                else:
                    prices[rate] = Decimal("0.000000")
    else:
        periods = ((0, DAY_MINUTES, "flat"),)
        with about("price_flat"):
            prices = flat_prices(parse_decimal(form.prices.get("flat", ""), _("The price"), 6))
    tiers: tuple = ()
    if form.kind in TIER_KINDS:
        with about("tiers"):
            tiers = parse_tiers(form.tiers)
        if form.tier_period not in ("month", "year"):
            raise ValidationError(_("Tiers count usage per month or per year."), {"tier_period": "unknown"})
    return PlanVersion(form.kind, prices, periods, tiers, form.tier_period if form.kind in TIER_KINDS else "month")


# --- helpers --------------------------------------------------------------------------------------------------
