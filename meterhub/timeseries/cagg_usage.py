"""Usage per meter and bucket from the continuous aggregates' counter spans (TimescaleDB), as SQL.

Each aggregate row holds per counter the span of its values in the bucket (:mod:`timescale`). The usage of a
bucket is the rise inside it plus the step from the last value known before it (clipped at zero; a drop
counts as a reset), which is exactly what the rollup tables hold on plain PostgreSQL. The last value before
a bucket comes from the rows of the lookback window, or from the meter's last bucket before ``start`` when
that is older (a meter back after a long silence), per counter (a counter missing from a bucket is skipped).

Days and months come from the daily and monthly aggregates for meters of a property in the aggregates' time
zone, and from the hourly aggregate grouped by the property's local days and months for the others. Hourly
buckets are UTC hours (the local hours of every zone with a whole-hour offset).

The SQL reads the ``tenant_readings_*`` views (never the aggregates) and takes the parameters ``%(ids)s``,
``%(start)s`` and ``%(end)s`` (psycopg2 style), like :func:`query._series_rollup_sql`.
"""

from __future__ import annotations

from .columns import COUNTERS
from .tenant_views import CAGG_VIEWS
from .timescale import CAGGS, cagg_timezone

VIEWS = {bucket: CAGG_VIEWS[CAGGS[bucket]] for bucket in CAGGS}
#: How far before ``start`` the rows that give the previous values are read.
LOOKBACK = {"hour": "7 days", "day": "62 days", "month": "400 days"}
_WINDOW = "PARTITION BY src.meter_id ORDER BY src.bucket ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING"


def _lower(view: str, bucket: str) -> str:
    """The first bucket read for meter ``s.meter_id``: the lookback, or the last bucket before it if older."""
    return (f"LEAST(CAST(%(start)s AS timestamptz) - interval '{LOOKBACK[bucket]}', (SELECT max(p.bucket) "
            f"FROM {view} p WHERE p.meter_id = s.meter_id AND p.bucket < %(start)s))")


def _source(bucket: str) -> str:
    """CTEs ending in ``src``: span rows (meter_id, bucket, one span per counter, readings) of the selected
    meters, from the lookback on (or from their last bucket before ``start`` when older).

    The meters of the aggregate's time zone are read in one range scan; only those without a row in the
    lookback (a long silence) look further back, one bucket each.
    """
    cols = ", ".join(f"c.{c}" for c in COUNTERS)
    view = VIEWS[bucket]
    lookback = f"CAST(%(start)s AS timestamptz) - interval '{LOOKBACK[bucket]}'"
    ctes = (
        f"recent AS (SELECT c.meter_id, c.bucket, {cols}, c.readings FROM {view} c "
        f"JOIN selected s ON s.meter_id = c.meter_id AND s.native "
        f"WHERE c.meter_id = ANY(%(ids)s) AND c.bucket >= {lookback} AND c.bucket < %(end)s), "
        f"silent AS (SELECT c.* FROM selected s CROSS JOIN LATERAL (SELECT c.meter_id, c.bucket, {cols}, "
        f"c.readings FROM {view} c WHERE c.meter_id = s.meter_id AND c.bucket < {lookback} "
        f"ORDER BY c.bucket DESC LIMIT 1) c WHERE s.native AND NOT EXISTS "
        f"(SELECT 1 FROM recent r WHERE r.meter_id = s.meter_id AND r.bucket < %(start)s))"
    )
    native = "SELECT * FROM recent UNION ALL SELECT * FROM silent"
    if bucket == "hour":
        return f"{ctes}, src AS ({native})"
    hourly = VIEWS["hour"]
    merged = ", ".join(f"meterhub_span_merge(h.{c} ORDER BY h.bucket) AS {c}" for c in COUNTERS)
    local = f"date_trunc('{bucket}', h.bucket AT TIME ZONE s.tz) AT TIME ZONE s.tz"
    regrouped = (f"SELECT h.meter_id, {local} AS bucket, {merged}, sum(h.readings)::bigint AS readings "
                 f"FROM {hourly} h WHERE h.meter_id = s.meter_id AND h.bucket >= {_lower(hourly, bucket)} "
                 f"AND h.bucket < %(end)s GROUP BY 1, 2")
    return (f"{ctes}, src AS ({native} UNION ALL SELECT c.* FROM selected s CROSS JOIN LATERAL ({regrouped}) c "
            f"WHERE NOT s.native)")


def usage_rows_sql(bucket: str) -> str:
    """A query of usage rows ``(meter_id, bucket, <counters>, readings, resets)`` with ``start <= bucket <
    end`` of the meters in ``ids`` (unordered), the same rows as the rollup table of ``bucket``."""
    tz = cagg_timezone().replace("'", "''")
    previous = ", ".join(f"meterhub_last_known((src.{c}).last) OVER w AS p_{c}" for c in COUNTERS)
    # A counter's usage: known when it has a previous value or two values in the bucket (as a delta between
    # readings is); NULL for a counter the meter does not have.
    values = ", ".join(
        f"CASE WHEN (x.{c}).first IS NOT NULL AND (x.p_{c} IS NOT NULL OR (x.{c}).n > 1) "
        f"THEN GREATEST((x.{c}).first - x.p_{c}, 0) + (x.{c}).rise END AS {c}" for c in COUNTERS)
    resets = " + ".join(f"COALESCE(((x.{c}).first < x.p_{c})::int, 0) + COALESCE((x.{c}).resets, 0)"
                        for c in COUNTERS)
    # the meter's very first reading has nothing to be a delta from
    unknown = " AND ".join(f"x.p_{c} IS NULL" for c in COUNTERS)
    return (
        f"WITH selected AS (SELECT m.id AS meter_id, p.timezone AS tz, "
        f"{'true' if bucket == 'hour' else f'p.timezone = {chr(39)}{tz}{chr(39)}'} AS native "
        f"FROM meters m JOIN properties p ON p.id = m.property_id WHERE m.id = ANY(%(ids)s)), "
        f"{_source(bucket)} "
        f"SELECT y.* FROM (SELECT x.meter_id, x.bucket, {values}, "
        f"GREATEST(x.readings - CASE WHEN {unknown} THEN 1 ELSE 0 END, 0)::int AS readings, "
        f"({resets})::int AS resets "
        f"FROM (SELECT src.*, {previous} FROM src WINDOW w AS ({_WINDOW})) x "
        f"WHERE x.bucket >= %(start)s) y WHERE y.readings > 0"
    )
