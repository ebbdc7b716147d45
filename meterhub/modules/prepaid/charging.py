"""Real-time charging: every new interval of every active meter charged once, set-based.

    summary = charge_all(url, shards=2)              # the periodic job: 2 concurrent transactions + sweep
    summary = charge_new_intervals(session)          # one transaction, all groups (service session)
    summary = charge_new_intervals(session, meter_ids=[...])   # before closing an account

One run (or one shard of a run) is one transaction: build ``_chg`` (see ``charging_sql``), insert one
charge transfer per group, the charge rows (unique per (meter, interval_end) and (meter, interval_start)),
the wallet/credit entries in one statement, advance the meter states, then run the control loop for the
accounts charged. The unique keys make a double charge impossible whatever runs concurrently.

Sharded runs (:func:`charge_all`): shard ``k`` of ``n`` charges the accounts with ``account_id % n = k``
(a wallet is never in two shards) in its own transaction on its own connection, so the database works on
``n`` cores. A shard credits its own charges clearing account per utility and property
(``charge_clearing:<utility>:<property>:<k>``) instead of the revenue account, whose ``ledger_balances``
row every shard would otherwise update (the second shard would wait for the first one's commit). After the
shards, a short sweep transaction moves every clearing balance to revenue (one zero-sum ``charge_sweep``
transfer per group). If the process dies between a shard's commit and the sweep, the next run's sweep moves
what the clearing accounts hold: nothing is lost, revenue is late by one run (revenue + clearing = charges
at every moment; clearing is 0 after each sweep).

Locks: the single-transaction path and the sweep take ``RUN_LOCK`` exclusively, shards take it shared (so
an account close or meter swap never overlaps a shard, and the sweep sees no shard in flight) plus their own
shard lock. The groups' audit-chain locks (``audit.record``, one writer per group) are taken in group order
after the heavy work, so two shards auditing the same groups wait briefly and never deadlock.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

from ...db import service_engine, service_session
from ...ledger.retry import run_money_transaction
from ...models import utcnow
from ...tenants import audit
from . import charging_sql as q
from .control import evaluate_accounts

log = logging.getLogger(__name__)
RUN_LOCK = (7306, 1)  # exclusive: single-transaction run, sweep; shared: shards
SHARD_LOCK = 7307  # (SHARD_LOCK, k): one shard k at a time
AUDIT_LOCK = 7305  # audit.record's per-group chain lock (tenants/audit.py)
DEFAULT_SHARDS = 2


@dataclass
class ChargeSummary:
    """What one charging run (or one shard of it) did."""

    run_key: str
    intervals: int = 0
    amount: Decimal = Decimal("0")
    groups: int = 0
    accounts: set[int] = field(default_factory=set)
    level_changes: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    group_ids: set[int] = field(default_factory=set)
    swept: Decimal = Decimal("0")  # moved from charges clearing to revenue by the run's sweep
    shards: list[ChargeSummary] = field(default_factory=list)


def _lock_audit_chains(session: Session, group_ids: list[int]) -> None:
    """Take the audit-chain locks of these groups in ascending order (re-entrant within the transaction)."""
    if group_ids:
        session.execute(text("SELECT pg_advisory_xact_lock(:k, g) FROM (SELECT g FROM unnest(CAST(:gs AS int[])) g "
                             "ORDER BY g OFFSET 0) x"), {"k": AUDIT_LOCK, "gs": sorted(group_ids)})


def charge_new_intervals(session: Session, *, meter_ids: list[int] | None = None, until: datetime | None = None,
                         run_key: str | None = None, control: bool = True,
                         shard: tuple[int, int] | None = None) -> ChargeSummary:
    """Charge all new readings (or those of ``meter_ids``) up to ``until``; caller commits.

    Without ``shard`` the charges are credited to revenue (one run at a time). With ``shard=(k, n)`` only
    the accounts with ``account_id % n = k`` are charged and credited to the shard's charges clearing
    accounts; :func:`sweep_clearing` moves them to revenue (use :func:`charge_all`)."""
    summary = ChargeSummary(run_key or f"charge:{uuid.uuid4().hex}")
    k, n = shard or (0, 1)
    if not 0 <= k < n:
        raise ValueError(f"shard {k} of {n}")
    credit = "revenue" if shard is None else "clearing"
    params = {"run_key": summary.run_key, "shard": k}
    if shard is None:
        session.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": RUN_LOCK[0], "b": RUN_LOCK[1]})
    else:
        session.execute(text("SELECT pg_advisory_xact_lock_shared(:a, :b), pg_advisory_xact_lock(:s, :k)"),
                        {"a": RUN_LOCK[0], "b": RUN_LOCK[1], "s": SHARD_LOCK, "k": k})
    session.execute(text("DROP TABLE IF EXISTS _chg"))
    session.execute(text("SET LOCAL jit = off"))  # compiling this wide query costs seconds, running it less
    session.execute(text("SET LOCAL work_mem = '64MB'"))  # the per-meter window sorts stay in memory
    if shard is not None:  # the shards keep the cores busy: parallel workers would only compete with them
        session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
    # No ANALYZE of _chg (0.4 s for 100k rows): the statements reading it scan it once and aggregate or hash
    # it against a few rows (transfers, credited accounts) or join the meter states on their key.
    steps = [("build", q.BUILD, {"meter_ids": meter_ids, "until": until or utcnow(), "shard": k, "shards": n}),
             (credit, q.CREDIT_ACCOUNTS[credit], params), ("transfers", q.TRANSFERS, params),
             ("charges", q.CHARGES, params), ("entries", q.ENTRIES[credit], params), ("state", q.STATE, {}),
             ("resets", q.RESET_EVENTS, {})]
    for name, sql, args in steps:
        started = time.perf_counter()
        session.execute(text(sql), args)
        summary.timings[name] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    rows = sorted(session.execute(text(q.SUMMARY), params).all(), key=lambda row: row.group_id)
    session.execute(text("DROP TABLE IF EXISTS _chg"))
    for row in rows:
        summary.groups += 1
        summary.group_ids.add(row.group_id)
        summary.intervals += row.intervals
        summary.amount += row.amount
        summary.accounts.update(row.accounts or ())
    summary.timings["summary"] = round(time.perf_counter() - started, 3)
    # Audit-chain locks (per group, held to commit) only now, all at once and in order: commands queued by the
    # control loop and the summary rows below are audited; a concurrent shard waits for our commit, no longer.
    def lock_chains() -> None:
        started = time.perf_counter()
        _lock_audit_chains(session, sorted(summary.group_ids))
        summary.timings["audit_lock"] = round(summary.timings.get("audit_lock", 0) + time.perf_counter() - started, 3)

    if control and summary.accounts:
        started = time.perf_counter()
        summary.level_changes = len(evaluate_accounts(session, sorted(summary.accounts), actor="charging",
                                                      before_commands=lock_chains))
        summary.timings["control"] = round(time.perf_counter() - started, 3)
    lock_chains()
    for row in rows:
        audit.record(session, row.group_id, "prepaid.charge", actor="charging", object_type="transfer",
                     object_id=row.transfer_id or "",
                     detail={"run": summary.run_key, "intervals": row.intervals, "amount": str(row.amount)})
    log.info("charging %s: %d intervals, %s CNY, %d groups, steps %s", summary.run_key, summary.intervals,
             summary.amount, summary.groups, summary.timings)
    return summary


def sweep_clearing(session: Session, key: str) -> Decimal:
    """Move every charges clearing balance to revenue: one ``charge_sweep`` transfer per group, keyed
    ``<key>:<group>``; caller commits. Waits for shards in flight (``RUN_LOCK``); returns the amount moved."""
    session.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": RUN_LOCK[0], "b": RUN_LOCK[1]})
    rows = session.execute(text(q.SWEEP_BALANCES)).all()
    if not rows:
        return Decimal("0")
    params = {"key": key, "groups": [r.group_id for r in rows], "accounts": [r.account_id for r in rows],
              "properties": [r.property_id for r in rows], "utilities": [r.utility for r in rows],
              "balances": [r.balance for r in rows]}
    session.execute(text(q.SWEEP_REVENUE_ACCOUNTS), params)
    transfers = dict(session.execute(text(q.SWEEP_TRANSFERS), params).all())
    session.execute(text(q.SWEEP_ENTRIES), params)
    for group_id in sorted(transfers):
        amount = sum((r.balance for r in rows if r.group_id == group_id), Decimal("0"))
        audit.record(session, group_id, "prepaid.charge_sweep", actor="charging", object_type="transfer",
                     object_id=transfers[group_id], detail={"key": key, "amount": str(amount)})
    total = sum((r.balance for r in rows), Decimal("0"))
    log.info("charging sweep %s: %s CNY from %d clearing accounts to revenue", key, total, len(rows))
    return total


def _run_shard(url: str, run: str, shard: tuple[int, int] | None, until: datetime, control: bool) -> ChargeSummary:
    """One shard (or the whole run when ``shard`` is None) in its own session, retried on transient errors."""
    attempts = itertools.count(1)
    base = run if shard is None else f"{run}:{shard[0]}/{shard[1]}"

    def work(session: Session) -> ChargeSummary:
        attempt = next(attempts)
        # a retry may find readings that arrived late: its transfers get keys of their own
        key = base if attempt == 1 else f"{base}#{attempt}"
        return charge_new_intervals(session, until=until, run_key=key, shard=shard, control=control)

    with service_session(url) as session:
        return run_money_transaction(session, work)


def charge_all(url: str | None = None, *, shards: int = DEFAULT_SHARDS, until: datetime | None = None,
               control: bool = True) -> ChargeSummary:
    """Charge every new interval up to ``until`` in ``shards`` concurrent transactions, then sweep the charges
    clearing accounts to revenue. ``shards=1``: one transaction crediting revenue (as
    :func:`charge_new_intervals`), then the sweep of anything an interrupted sharded run left behind.

    Each shard commits on its own; a failed shard (after its retries) is re-raised after the sweep, and
    its accounts are charged by the next run."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    if url is None:
        from flask import current_app

        url = current_app.config["SERVICE_DATABASE_URL"]  # resolved here: the shard threads have no app context
    service_engine(url)  # one engine, created before the threads
    until = until or utcnow()
    run = f"charge:{uuid.uuid4().hex}"
    summary = ChargeSummary(run)
    started = time.perf_counter()
    errors: list[BaseException] = []
    if shards == 1:
        try:
            summary.shards = [_run_shard(url, run, None, until, control)]
        except Exception as err:
            errors.append(err)
    else:
        with ThreadPoolExecutor(shards, thread_name_prefix="charge-shard") as pool:
            futures = [pool.submit(_run_shard, url, run, (k, shards), until, control) for k in range(shards)]
            wait(futures)
        for future in futures:
            if future.exception() is not None:
                errors.append(future.exception())
            else:
                summary.shards.append(future.result())
    summary.timings["shards"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    with service_session(url) as session:
        summary.swept = run_money_transaction(session, lambda s: sweep_clearing(s, f"{run}:sweep"))
    summary.timings["sweep"] = round(time.perf_counter() - started, 3)
    for part in summary.shards:
        summary.intervals += part.intervals
        summary.amount += part.amount
        summary.accounts |= part.accounts
        summary.group_ids |= part.group_ids
        summary.level_changes += part.level_changes
        for step, seconds in part.timings.items():  # the slowest shard's time per step
            summary.timings[f"max_{step}"] = max(summary.timings.get(f"max_{step}", 0.0), seconds)
    summary.groups = len(summary.group_ids)
    log.info("charging %s in %d shards: %d intervals, %s CNY, %s swept, timings %s", run, shards,
             summary.intervals, summary.amount, summary.swept, summary.timings)
    if errors:
        raise errors[0]
    return summary
