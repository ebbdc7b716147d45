"""Alarm sources: turn health events, prepaid events and meter values into raised / cleared alarms.

:func:`poll` is the periodic job (registered through ``register_jobs``). It runs as the service role and
scopes every statement by the group of the row it reads. Event tables are read past a watermark
(``alarm_watermarks``: the inserting transaction and id) so each event is applied once, none skipped; value checks (overload, purchase counter, valve,
abnormal usage) compare current values and raise or clear accordingly.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.orm import Session

from ..errors import NotFound
from ..i18n import _l
from ..models import utcnow
from ..timeseries import query
from .engine import clear_alarm, raise_alarm
from .notes import level_name
from .texts import details

log = logging.getLogger(__name__)
LEVEL_KINDS = {1: "low_balance_1", 2: "low_balance_2", 3: "arrears"}
BATCH = 5000
#: Abnormal usage: night hours [0, NIGHT_END) local; last night above FACTOR × the mean of BASELINE_NIGHTS
#: previous nights (at least MIN_NIGHTS of them) and at least MIN_EXCESS above it.
NIGHT_END, FACTOR, BASELINE_NIGHTS, MIN_NIGHTS, MIN_EXCESS = 6, Decimal(3), 14, 7, Decimal("1.0")


#: The oldest transaction still running that may belong to *this database* (its txid), else the snapshot's xmax:
#: the events of every transaction below it have been committed or rolled back. The snapshot's own xmin counts
#: every writing transaction of the whole server (transaction ids are server-wide), so one long transaction in
#: another database held every alarm back (the latency bench on a shared server: alarms minutes late). Only the
#: in-progress ids positively held by a backend of another database (its transaction-id lock in ``pg_locks``, its
#: database in ``pg_stat_activity``; both readable by every role) are left out; an id not yet seen there counts.
HORIZON_SQL = """
WITH snap AS (SELECT txid_current_snapshot() AS s),
elsewhere AS (SELECT l.transactionid::text AS xid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted
                AND a.datname <> current_database())
SELECT coalesce(
    (SELECT min(x) FROM snap, txid_snapshot_xip(snap.s) AS x
     WHERE (x % 4294967296)::text NOT IN (SELECT xid FROM elsewhere)),
    (SELECT txid_snapshot_xmax(s) FROM snap))
"""


def _watermark(session: Session, key: str) -> int:
    value = session.execute(text("SELECT value FROM alarm_watermarks WHERE key = :k FOR UPDATE"), {"k": key}).scalar()
    if value is None:
        session.execute(text("INSERT INTO alarm_watermarks (key, value) VALUES (:k, 0) ON CONFLICT DO NOTHING"),
                        {"k": key})
        return 0
    return int(value)


def _set_watermark(session: Session, key: str, value: int) -> None:
    session.execute(text("UPDATE alarm_watermarks SET value = :v WHERE key = :k"), {"k": key, "v": value})


def _finished_events(session: Session, table: str, columns: str) -> list[Any]:
    """The next events of ``table`` (at most BATCH) whose transactions have all ended, in (txid, id) order.

    Ids are taken at insert, not at commit, so reading past an id would skip the events of a transaction
    that commits after a later one (two charging shards, a top-up beside a charging run). Reading by the
    inserting transaction, below the oldest transaction still running, sees every event exactly once.
    """
    after_txid, after_id = _watermark(session, f"{table}:txid"), _watermark(session, f"{table}:id")
    horizon = session.execute(text(HORIZON_SQL)).scalar()
    rows = session.execute(text(
        f"SELECT {columns}, txid FROM {table} WHERE (txid, id) > (:t, :i) AND txid < :horizon "
        "ORDER BY txid, id LIMIT :n"), {"t": after_txid, "i": after_id, "horizon": horizon, "n": BATCH}).all()
    if len(rows) == BATCH:  # more to come: continue after the last one read
        _set_watermark(session, f"{table}:txid", rows[-1].txid)
        _set_watermark(session, f"{table}:id", rows[-1].id)
    else:  # every transaction below the horizon is read; the next ones start there
        _set_watermark(session, f"{table}:txid", max(int(horizon), after_txid))
        _set_watermark(session, f"{table}:id", 0 if horizon > after_txid else after_id)
    return rows


def _safe(fn: Any, *args: Any, **kwargs: Any) -> bool:
    try:
        fn(*args, **kwargs)
        return True
    except NotFound as err:  # the subject was deleted meanwhile
        log.warning("alarm source skipped: %s", err)
        return False


def from_health_events(session: Session) -> int:
    """Meter offline/online → offline alarm; device or gateway offline/online → communication fault;
    gateway collector_down/collector_up → collector down (no collector polls it)."""
    rows = _finished_events(session, "health_events", "id, group_id, object_type, object_id, event, at")
    for row in rows:
        kind = "offline" if row.object_type == "meter" else "comm_fault"
        subject = {f"{row.object_type}_id": row.object_id}
        if row.event == "collector_down":
            _safe(raise_alarm, session, row.group_id, "collector_down", detail={"since": row.at.isoformat()},
                  at=row.at, **subject)
        elif row.event == "collector_up":
            clear_alarm(session, row.group_id, "collector_down", at=row.at, note=_l("collector polling again"), **subject)
        elif row.event == "offline":
            _safe(raise_alarm, session, row.group_id, kind, detail={"since": row.at.isoformat()}, at=row.at,
                  **subject)
        elif row.event == "online":
            clear_alarm(session, row.group_id, kind, at=row.at, note=_l("back online"), **subject)
    return len(rows)


def from_prepaid_events(session: Session) -> int:
    """Balance level changes → low balance 1/2 and arrears alarms (one open level at a time); mismatches."""
    rows = _finished_events(session, "prepaid_events",
                            "id, group_id, account_id, meter_id, kind, level, balance, detail, at")
    for row in rows:
        if row.kind == "mismatch" and row.meter_id is not None:
            _safe(raise_alarm, session, row.group_id, "purchase_mismatch", meter_id=row.meter_id,
                  detail=details("purchase_mismatch", row.detail), at=row.at)
        elif row.level is not None and row.account_id is not None:
            apply_level(session, row.group_id, row.account_id, int(row.level), row.balance, row.at)
    return len(rows)


def apply_level(session: Session, group_id: int, account_id: int, level: int, balance: Decimal | None,
                at: datetime | None = None) -> None:
    """Make the account's open balance alarm match ``level`` (0 normal … 3 arrears)."""
    for lvl, kind in LEVEL_KINDS.items():
        if lvl == level:
            _safe(raise_alarm, session, group_id, kind, account_id=account_id,
                  detail={"balance": str(balance) if balance is not None else None, "level": level}, at=at)
        else:
            clear_alarm(session, group_id, kind, account_id=account_id, at=at, note=level_name(level))


def _sync(session: Session, kind: str, bad_sql: str, good_sql: str, params: dict[str, Any]) -> tuple[int, int]:
    """Raise ``kind`` for meters returned by ``bad_sql`` (group_id, meter_id, detail) without an open alarm;
    clear open ones of meters returned by ``good_sql`` (group_id, meter_id)."""
    open_filter = (" AND NOT EXISTS (SELECT 1 FROM alarms a WHERE a.group_id = m.group_id AND a.kind = :kind "
                   "AND a.subject_key = 'meter:' || m.id AND a.state <> 'cleared')")
    raised = cleared = 0
    for group_id, meter_id, detail in session.execute(text(bad_sql + open_filter), {**params, "kind": kind}).all():
        raised += _safe(raise_alarm, session, group_id, kind, meter_id=meter_id, detail=detail)
    good = session.execute(text(
        f"SELECT a.group_id, a.meter_id FROM alarms a JOIN ({good_sql}) g ON g.meter_id = a.meter_id "
        "WHERE a.kind = :kind AND a.state <> 'cleared' AND a.subject_key = 'meter:' || a.meter_id"),
        {**params, "kind": kind}).all()
    for group_id, meter_id in good:
        cleared += clear_alarm(session, group_id, kind, meter_id=meter_id) is not None
    return raised, cleared


_LATEST = "FROM meters m JOIN meter_latest l ON l.meter_id = m.id WHERE m.active AND l.ts >= :fresh"


def check_overload(session: Session, now: datetime) -> tuple[int, int]:
    """Latest power above the meter's ``overload_limit_kw`` → overload; back under (or no limit) → cleared."""
    bad = ("SELECT m.group_id, m.id, jsonb_build_object('power_kw', l.power_kw, 'limit_kw', m.overload_limit_kw) "
           f"{_LATEST} AND l.power_kw > m.overload_limit_kw")
    good = (f"SELECT m.id AS meter_id {_LATEST} AND (m.overload_limit_kw IS NULL "
            "OR l.power_kw <= m.overload_limit_kw)")
    return _sync(session, "overload", bad, good, {"fresh": now - timedelta(hours=1)})


_OPEN_CMD = ("EXISTS (SELECT 1 FROM commands c WHERE c.meter_id = m.id AND c.kind = '{kind}' "
             "AND c.state IN ('queued', 'sent'))")


def check_purchase_counter(session: Session, now: datetime) -> tuple[int, int]:
    """Meter-side prepaid: the meter's purchase counter differs from the account's (no top-up write open)."""
    base = ("FROM meters m JOIN meter_latest l ON l.meter_id = m.id JOIN prepaid_meter_state s "
            "ON s.meter_id = m.id AND s.active JOIN prepaid_accounts pa ON pa.id = s.account_id "
            "WHERE m.active AND l.ts >= :fresh AND l.purchase_count IS NOT NULL")
    # A reading taken before the last top-up write reached the meter cannot show it yet: not a mismatch.
    bad = ("SELECT m.group_id, m.id, jsonb_build_object('meter_count', l.purchase_count, 'our_count', "
           f"pa.purchase_count) {base} AND l.purchase_count <> pa.purchase_count "
           f"AND NOT {_OPEN_CMD.format(kind='write_topup')} "
           "AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.meter_id = m.id AND c.kind = 'write_topup' "
           "AND c.state = 'confirmed' AND c.done_at >= l.ts)")
    good = f"SELECT m.id AS meter_id {base} AND l.purchase_count = pa.purchase_count"
    return _sync(session, "purchase_mismatch", bad, good, {"fresh": now - timedelta(days=1)})


def check_valves(session: Session, now: datetime) -> tuple[int, int]:
    """Water meters whose valve is not where we want it (and no valve command is pending), or report a fault."""
    base = f"{_LATEST} AND m.utility = 'water' AND l.valve_open IS NOT NULL"
    faulty = ("(COALESCE(l.extra->>'valve_fault', 'false') = 'true' OR (m.relay_desired IS NOT NULL "
              f"AND l.valve_open <> m.relay_desired AND NOT {_OPEN_CMD.format(kind='valve')}))")
    bad = ("SELECT m.group_id, m.id, jsonb_build_object('valve_open', l.valve_open, 'wanted_open', "
           f"m.relay_desired) {base} AND {faulty}")
    good = f"SELECT m.id AS meter_id {base} AND NOT {faulty}"
    return _sync(session, "valve_fault", bad, good, {"fresh": now - timedelta(days=1)})


def check_abnormal_usage(session: Session, now: datetime) -> tuple[int, int]:
    """Once per local day (after the night): last night's usage far above the meter's own night baseline."""
    raised = cleared = 0
    zones = session.execute(text("SELECT DISTINCT timezone FROM properties")).scalars().all()
    for tz in zones:
        local = now.astimezone(ZoneInfo(tz))
        if local.hour < NIGHT_END:
            continue
        key = f"abnormal:{tz}"[:64]
        today = int(local.strftime("%Y%m%d"))
        if _watermark(session, key) >= today:
            continue
        r, c = _abnormal_in_zone(session, tz, local.date())
        raised, cleared = raised + r, cleared + c
        _set_watermark(session, key, today)
    return raised, cleared


def _abnormal_in_zone(session: Session, tz: str, today: date) -> tuple[int, int]:
    zone = ZoneInfo(tz)
    meters = session.execute(text(
        "SELECT m.id, m.group_id FROM meters m JOIN properties p ON p.id = m.property_id "
        "WHERE m.active AND p.timezone = :tz"), {"tz": tz}).all()
    group_of = dict(meters)
    start = datetime.combine(today - timedelta(days=BASELINE_NIGHTS), datetime.min.time(), zone)
    end = datetime.combine(today, datetime.min.time(), zone) + timedelta(hours=NIGHT_END)
    raised = cleared = 0
    ids = list(group_of)
    for i in range(0, len(ids), 500):
        nights: dict[int, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        for row in query.usage(session, ids[i:i + 500], start, end, "hour"):
            local = row.bucket.astimezone(zone)
            used = row.energy_kwh if row.energy_kwh is not None else row.water_m3
            if local.hour < NIGHT_END and used is not None:
                nights[row.meter_id][local.date()] += used
        for meter_id, per_night in nights.items():
            last = per_night.get(today, Decimal(0))
            history = [v for d, v in per_night.items() if d < today]
            if len(history) < MIN_NIGHTS:
                continue
            baseline = sum(history, Decimal(0)) / BASELINE_NIGHTS
            group_id = group_of[meter_id]
            if last > baseline * FACTOR and last - baseline >= MIN_EXCESS:
                raised += _safe(raise_alarm, session, group_id, "abnormal_usage", meter_id=meter_id,
                                detail={"usage": str(last), "baseline": str(round(baseline, 3)),
                                        "night": today.isoformat()})
            else:
                cleared += clear_alarm(session, group_id, "abnormal_usage", meter_id=meter_id) is not None
    return raised, cleared


def run_sources(session: Session, now: datetime | None = None) -> dict[str, Any]:
    """Apply every source once; returns what each did."""
    now = now or utcnow()
    session.execute(text("SELECT pg_advisory_xact_lock(7310, 1)"))  # one poll at a time
    return {
        "health_events": from_health_events(session),
        "prepaid_events": from_prepaid_events(session),
        "overload": check_overload(session, now),
        "purchase_mismatch": check_purchase_counter(session, now),
        "valve_fault": check_valves(session, now),
        "abnormal_usage": check_abnormal_usage(session, now),
    }


EVENT_TABLES = ("health_events", "prepaid_events")
EVENT_ROUNDS, EVENT_PAUSE_S = 20, 0.25  # how long the event job waits for events behind an older transaction


def _unread_events(session: Session) -> bool:
    """Whether an event table has rows past its watermark (committed or not yet: those wait for older ones)."""
    for table in EVENT_TABLES:
        if session.execute(text(
                f"SELECT EXISTS (SELECT 1 FROM {table} e WHERE (e.txid, e.id) > ("
                "(SELECT coalesce(max(value), 0) FROM alarm_watermarks WHERE key = :t), "
                "(SELECT coalesce(max(value), 0) FROM alarm_watermarks WHERE key = :i)))"),
                {"t": f"{table}:txid", "i": f"{table}:id"}).scalar():
            return True
    return False


def poll_events() -> dict[str, int]:
    """Event job (queued right after a commit that wrote prepaid or health events): apply the event sources only,
    so a balance or health alarm is raised in seconds, not at the next :func:`poll`.

    An event is read once every transaction older than its own has ended (:func:`_finished_events`); while one
    is still running somewhere on the server, the job looks again every quarter second for up to 5 s, then
    leaves what is left to the periodic :func:`poll`."""
    import time

    from ..db import service_session

    done = {"health_events": 0, "prepaid_events": 0}
    for _ in range(EVENT_ROUNDS):
        with service_session() as session:
            session.execute(text("SELECT pg_advisory_xact_lock(7310, 1)"))  # one poll at a time
            done["health_events"] += from_health_events(session)
            done["prepaid_events"] += from_prepaid_events(session)
        with service_session() as session:
            if not _unread_events(session):
                break
        time.sleep(EVENT_PAUSE_S)
    return done


def poll() -> dict[str, Any]:
    """Periodic job: run the sources, then release notifications held over quiet hours."""
    from ..db import service_session
    from .dispatch import release_held

    with service_session() as session:
        result = run_sources(session)
    result["released"] = release_held()
    log.info("alarm poll: %s", result)
    return result
