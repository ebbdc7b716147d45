"""Usage per meter and bucket from the continuous aggregates' counter spans (TimescaleDB), as SQL.

Each aggregate row holds per counter the span of its values in the bucket (:mod:`timescale`). The usage of a
bucket is the rise inside it plus the step from the last value known before it (clipped at zero; a drop
counts as a reset), which is exactly what the rollup tables hold on plain PostgreSQL. The last value before
a bucket comes from the rows of the lookback window, or from the meter's last bucket before ``start`` when
that is older (a meter back after a long silence), per counter (a counter missing from a bucket is skipped).

Days and months come from the daily and monthly aggregates for meters of a property in the aggregates' time
zone, and from the hourly aggregate grouped by the property's local days and months for the others. Hourly
buckets are UTC hours (the local hours of every zone with a whole-hour offset).

A meter's usage counts only inside its installation interval (``meters.installed_at`` .. ``removed_at``, a meter
swap sets both; issue 21 item 6), as in the rollups: buckets wholly outside it are not read, and a bucket that
straddles an edge is recomputed from the interval's hours, whole hours from the hourly aggregate and the edge
hours from the raw readings inside the interval (:func:`_installed_hours`, the one building block for this).
A meter without those dates reads the aggregates as before; one with them reads at most its two edge hours of
raw readings, and only when an edge bucket is among the buckets read. Where the raw readings of an edge hour are
gone (``METERHUB_READINGS_RETENTION_DAYS``), that hour counts nothing and the next reading inside has no
baseline: a bucket at an edge older than the retention may fall short by that step.

The SQL reads the ``tenant_readings_*`` views (never the aggregates) and takes the parameters ``%(ids)s``,
``%(start)s`` and ``%(end)s`` (psycopg2 style), like :func:`query._series_rollup_sql`.
"""

from __future__ import annotations

from .columns import COUNTERS, QUALITY_BAD
from .tenant_views import CAGG_VIEWS, READINGS_VIEW
from .timescale import CAGGS, cagg_timezone

VIEWS = {bucket: CAGG_VIEWS[CAGGS[bucket]] for bucket in CAGGS}
#: How far before ``start`` the rows that give the previous values are read.
LOOKBACK = {"hour": "7 days", "day": "62 days", "month": "400 days"}
_WINDOW = "PARTITION BY src.meter_id ORDER BY src.bucket ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING"


#: A meter's installation interval (``meters.installed_at`` .. ``removed_at``, both readings included; NULL: open),
#: as columns of ``selected`` (``s``): ``ih``/``rh`` the UTC hours of its edges, ``ib``/``rb`` their buckets.
#: A bucket of ``c`` is read when it is not wholly outside the interval; one that straddles an edge is an *edge*
#: bucket, recomputed from the interval's hours (:func:`_installed_hours`): the bucket of ``removed_at``, and that of
#: ``installed_at`` when it holds a reading from before (a swapped-in meter's past; ingest refuses readings dated
#: before ``installed_at``, so a meter installed in the window reads its aggregate row as it is, without the
#: recomputation: 18x slower for a report whose every meter was installed in it, measured).
_KEEP = "(s.ib IS NULL OR {c}.bucket >= s.ib) AND (s.rem IS NULL OR {c}.bucket <= s.rem)"
# (a CASE, so that the probe runs only for the bucket of installed_at: ``NULL AND EXISTS`` would run it on every row)
_EDGE = ("CASE WHEN {c}.bucket = s.rb THEN true WHEN {c}.bucket = s.ib AND s.ib < s.inst THEN EXISTS (SELECT 1 "
         "FROM {readings} r WHERE r.meter_id = s.meter_id AND r.ts >= {c}.bucket AND r.ts < s.inst) ELSE false END")


def _bucket_of(bucket: str, moment: str) -> str:
    """The native aggregate bucket (hour: UTC; day, month: the aggregates' zone) holding ``moment``."""
    tz = "UTC" if bucket == "hour" else cagg_timezone().replace("'", "''")
    return f"date_trunc('{bucket}', {moment} AT TIME ZONE '{tz}') AT TIME ZONE '{tz}'"  # = time_bucket's


def _bucket_end(bucket: str, start: str) -> str:
    """The end of the native bucket starting at ``start``."""
    if bucket == "hour":
        return f"{start} + interval '1 hour'"
    tz = cagg_timezone().replace("'", "''")
    return f"({start} AT TIME ZONE '{tz}' + interval '1 {bucket}') AT TIME ZONE '{tz}'"


def _installed_hours(lo: str, hi: str) -> str:
    """The shared building block of installation intervals: the hourly spans ``(bucket, <counters>, readings)``
    of meter ``s`` with ``lo <= bucket < hi``, limited to its installation interval with exact edges.

    Whole hours inside the interval come from the hourly aggregate; the hour of ``installed_at`` and that of
    ``removed_at`` are spanned from the raw readings inside the interval (the swap stores a reading at both
    moments), so a swapped-in meter's past and a swapped-out meter's later readings count nowhere, and the
    value at installation is the baseline of what follows, as in the rollups (:mod:`rollups`). A meter with
    neither edge reads the aggregate only.
    """
    cols = ", ".join(f"h.{c}" for c in COUNTERS)
    spans = ", ".join(f"meterhub_span(r.{c} ORDER BY r.ts)" for c in COUNTERS)
    with_counter = " OR ".join(f"r.{c} IS NOT NULL" for c in COUNTERS)
    return (
        f"SELECT h.bucket, {cols}, h.readings FROM {VIEWS['hour']} h WHERE h.meter_id = s.meter_id "
        f"AND h.bucket >= {lo} AND h.bucket < {hi} AND (s.ih IS NULL OR h.bucket > s.ih) "
        f"AND (s.rh IS NULL OR h.bucket < s.rh) "
        f"UNION ALL SELECT e.hour, {spans}, count(*) FILTER (WHERE {with_counter}) "
        f"FROM (SELECT DISTINCT v.hour FROM (VALUES (s.ih), (s.rh)) v(hour) WHERE v.hour >= {lo} "
        f"AND v.hour < {hi}) e JOIN {READINGS_VIEW} r ON r.meter_id = s.meter_id AND r.ts >= e.hour "
        f"AND r.ts < e.hour + interval '1 hour' AND r.ts >= COALESCE(s.inst, '-infinity') "
        f"AND r.ts <= COALESCE(s.rem, 'infinity') AND r.quality <> {QUALITY_BAD} GROUP BY e.hour"
    )


def _merged(source: str) -> str:
    """Span columns merged over the ordered rows of ``source`` (finer buckets), then their readings."""
    merged = ", ".join(f"meterhub_span_merge({source}.{c} ORDER BY {source}.bucket) AS {c}" for c in COUNTERS)
    return f"{merged}, sum({source}.readings)::bigint AS readings"


def _lower(bucket: str) -> str:
    """The first hour read for meter ``s.meter_id`` (regrouped into days or months): the lookback, or its last
    hour inside its installation interval before ``start`` if older."""
    view = VIEWS["hour"]
    return (f"LEAST(CAST(%(start)s AS timestamptz) - interval '{LOOKBACK[bucket]}', (SELECT max(p.bucket) "
            f"FROM {view} p WHERE p.meter_id = s.meter_id AND p.bucket < %(start)s "
            f"AND (s.ih IS NULL OR p.bucket >= s.ih) AND (s.rem IS NULL OR p.bucket <= s.rem)))")


def _source(bucket: str) -> str:
    """CTEs ending in ``src``: span rows (meter_id, bucket, one span per counter, readings) of the selected
    meters inside their installation intervals, from the lookback on (or from their last bucket before
    ``start`` when older).

    The meters of the aggregate's time zone are read in one range scan; only those without a row in the
    lookback (a long silence) look further back, one bucket each. A bucket at an edge of a meter's
    installation interval is recomputed from its hours inside the interval (:func:`_installed_hours`).
    """
    cols = ", ".join(f"c.{c}" for c in COUNTERS)
    view = VIEWS[bucket]
    lookback = f"CAST(%(start)s AS timestamptz) - interval '{LOOKBACK[bucket]}'"
    keep, edge = _KEEP.format(c="c"), _EDGE.format(c="c", readings=READINGS_VIEW)
    ctes = (
        f"recent AS (SELECT c.meter_id, c.bucket, {cols}, c.readings, {edge} AS edge FROM {view} c "
        f"JOIN selected s ON s.meter_id = c.meter_id AND s.native "
        f"WHERE c.meter_id = ANY(%(ids)s) AND c.bucket >= {lookback} AND c.bucket < %(end)s AND {keep}), "
        f"silent AS (SELECT c.* FROM selected s CROSS JOIN LATERAL (SELECT c.meter_id, c.bucket, {cols}, "
        f"c.readings, {edge} AS edge FROM {view} c WHERE c.meter_id = s.meter_id AND c.bucket < {lookback} "
        f"AND {keep} ORDER BY c.bucket DESC LIMIT 1) c WHERE s.native AND NOT EXISTS "
        f"(SELECT 1 FROM recent r WHERE r.meter_id = s.meter_id AND r.bucket < %(start)s)), "
        f"edges AS (SELECT * FROM recent WHERE edge UNION ALL SELECT * FROM silent WHERE edge)"
    )
    plain = ", ".join(f"n.{c}" for c in COUNTERS)
    native = (f"SELECT n.meter_id, n.bucket, {plain}, n.readings FROM recent n WHERE NOT n.edge "
              f"UNION ALL SELECT n.meter_id, n.bucket, {plain}, n.readings FROM silent n WHERE NOT n.edge "
              f"UNION ALL SELECT n.meter_id, n.bucket, x.* FROM edges n JOIN selected s ON s.meter_id = n.meter_id "
              f"CROSS JOIN LATERAL (SELECT {_merged('h')} FROM ({_installed_hours('n.bucket', _bucket_end(bucket, 'n.bucket'))}) h) x")
    if bucket == "hour":
        return f"{ctes}, src AS ({native})"
    local = f"date_trunc('{bucket}', h.bucket AT TIME ZONE s.tz) AT TIME ZONE s.tz"
    regrouped = (f"SELECT s.meter_id, {local} AS bucket, {_merged('h')} "
                 f"FROM ({_installed_hours(_lower(bucket), '%(end)s')}) h GROUP BY 1, 2")
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
        f"{'true' if bucket == 'hour' else f'p.timezone = {chr(39)}{tz}{chr(39)}'} AS native, "
        f"m.installed_at AS inst, m.removed_at AS rem, {_bucket_of('hour', 'm.installed_at')} AS ih, "
        f"{_bucket_of('hour', 'm.removed_at')} AS rh, {_bucket_of(bucket, 'm.installed_at')} AS ib, "
        f"{_bucket_of(bucket, 'm.removed_at')} AS rb "
        f"FROM meters m JOIN properties p ON p.id = m.property_id WHERE m.id = ANY(%(ids)s)), "
        f"{_source(bucket)} "
        f"SELECT y.* FROM (SELECT x.meter_id, x.bucket, {values}, "
        f"GREATEST(x.readings - CASE WHEN {unknown} THEN 1 ELSE 0 END, 0)::int AS readings, "
        f"({resets})::int AS resets "
        f"FROM (SELECT src.*, {previous} FROM src WINDOW w AS ({_WINDOW})) x "
        f"WHERE x.bucket >= %(start)s) y WHERE y.readings > 0"
    )
