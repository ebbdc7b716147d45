"""Operational reports: alarms, command and batch results, the audit log (streamed for exports)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask_babel import lazy_gettext as _l
from sqlalchemy import text
from sqlalchemy.orm import Session

from ..commands.messages import describe
from ..i18n import shown
from ..names import meter_name_sql, subject_name_sql
from .filters import ReportFilter
from .registry import Column, ReportDefinition

STREAM = {"yield_per": 2000}


def _local(value: Any, f: ReportFilter) -> Any:
    """Excel has no time zones: aware datetimes become local wall-clock time of the group."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(f.tz).replace(tzinfo=None)
    return value


def _stream(session: Session, sql: str, f: ReportFilter, params: dict[str, Any]) -> Iterator[tuple]:
    result = session.execute(text(sql).execution_options(**STREAM),
                             {"g": f.group_id, "start": f.start_at(), "end": f.end_at(), **params})
    for row in result:
        yield tuple(_local(v, f) for v in row)


#: An alarm's subject by its human name (property · building · room · tenant · meter), never ``meter:12``.
SUBJECT = subject_name_sql("a.meter_id", "a.account_id", "a.device_id", "a.gateway_id")


def _meter_room(meter_id: str) -> str:
    return f"(SELECT mr.room_id FROM meters mr WHERE mr.id = {meter_id})"


def alarm_rows(session: Session, f: ReportFilter) -> Iterator[tuple]:
    """Alarms raised in the period with who acknowledged and when they cleared; a room's alarms are those of
    its meters and of its prepaid accounts."""
    room = f"coalesce({_meter_room('a.meter_id')}, (SELECT ar.room_id FROM prepaid_accounts ar WHERE ar.id = a.account_id))"
    where, params = f.place_sql("a.property_id", room, "a.meter_id = :meter_id")
    yield from _stream(session, (
        f"SELECT a.id, a.raised_at, a.kind, a.state, {SUBJECT}, p.name, a.occurrences, a.acknowledged_by_name, "
        "a.acknowledged_at, a.cleared_at FROM alarms a JOIN properties p ON p.id = a.property_id "
        f"WHERE a.group_id = :g AND a.raised_at >= :start AND a.raised_at < :end{where} ORDER BY a.id"), f, params)


def command_rows(session: Session, f: ReportFilter) -> Iterator[tuple]:
    """Commands created in the period, with their source (operator, prepaid, batch) and result."""
    where, params = f.place_sql("c.property_id", _meter_room("c.meter_id"), "c.meter_id = :meter_id")
    if f.extra.get("source"):
        where, params["source"] = where + " AND c.source = :source", f.extra["source"]
    for *row, done, code, values in _stream(session, (
        f"SELECT c.id, c.created_at, p.name, {meter_name_sql('c.meter_id')}, c.kind, c.source, c.state, c.attempts, c.actor, c.error, "
        "c.done_at, c.error_code, c.error_params FROM commands c JOIN properties p ON p.id = c.property_id "
        f"WHERE c.group_id = :g AND c.created_at >= :start AND c.created_at < :end{where} ORDER BY c.id"), f, params):
        yield (*row[:-1], describe(code, values, row[-1] or ""), done)  # the error in the reader's language


def batch_rows(session: Session, f: ReportFilter) -> Iterator[tuple]:
    """Per-meter results of the batch operations created in the period."""
    where, params = f.place_sql("b.property_id", _meter_room("i.meter_id"), "i.meter_id = :meter_id")
    for *row, code, values, error in _stream(session, (
        f"SELECT b.id, b.created_at, b.action, b.status, b.actor, {meter_name_sql('i.meter_id')}, i.status, i.reason, c.state, "
        "i.attempts, i.updated_at, c.error_code, c.error_params, c.error FROM batches b "
        "JOIN batch_items i ON i.batch_id = b.id LEFT JOIN commands c ON c.id = i.command_id "
        f"WHERE b.group_id = :g AND b.created_at >= :start AND b.created_at < :end{where} ORDER BY b.id, i.id"),
        f, params):
        # the reason in the reader's language: a failed command's error by its code, else the stored message
        reason = describe(code, values, error or "") if row[6] == "failed" and code else shown(row[7])
        yield (*row[:7], reason, *row[8:])


def audit_rows(session: Session, f: ReportFilter) -> Iterator[tuple]:
    """The audit log of the period with each row's hash (the chain can be re-verified from the export)."""
    yield from _stream(session, (
        "SELECT id, at, actor, action, object_type, object_id, detail::text, ip, prev_hash, hash FROM audit_log "
        "WHERE group_id = :g AND at >= :start AND at < :end ORDER BY id"), f, {})


REPORTS = [
    ReportDefinition(
        "alarms", _l("Alarm report"), "report.view",
        (Column("id", "#", "number"), Column("raised", _l("Raised"), "date"), Column("kind", _l("Kind")),
         Column("state", _l("State")), Column("subject", _l("Subject")), Column("property", _l("Property")),
         Column("times", _l("Times"), "number"), Column("ack_by", _l("Acknowledged by")),
         Column("ack_at", _l("Acknowledged"), "date"), Column("cleared", _l("Cleared"), "date")),
        alarm_rows, _l("Alarms raised in the period.")),
    ReportDefinition(
        "commands", _l("Command and batch results"), "report.view",
        (Column("id", "#", "number"), Column("created", _l("Created"), "date"), Column("property", _l("Property")),
         Column("meter", _l("Meter")), Column("kind", _l("Command")), Column("source", _l("Source")),
         Column("state", _l("State")), Column("attempts", _l("Attempts"), "number"), Column("actor", _l("By")),
         Column("error", _l("Error")), Column("done", _l("Done"), "date")),
        command_rows, _l("Commands with their per-meter result (source batch: batch operations).")),
    ReportDefinition(
        "batches", _l("Batch operation results"), "report.view",
        (Column("batch", _l("Batch"), "number"), Column("created", _l("Created"), "date"),
         Column("action", _l("Action")), Column("batch_status", _l("Batch status")), Column("actor", _l("By")),
         Column("meter", _l("Meter")), Column("status", _l("Result")), Column("reason", _l("Reason")),
         Column("command", _l("Command state")), Column("attempts", _l("Attempts"), "number"),
         Column("updated", _l("Updated"), "date")),
        batch_rows, _l("Every meter of every batch operation with its result.")),
    ReportDefinition(
        "audit", _l("Audit log"), "audit.view",
        (Column("id", "#", "number"), Column("at", _l("Time"), "date"), Column("actor", _l("Operator")),
         Column("action", _l("Action")), Column("object_type", _l("Object")), Column("object_id", _l("Object id")),
         Column("detail", _l("Detail")), Column("ip", "IP"), Column("prev_hash", _l("Previous hash")),
         Column("hash", _l("Hash"))),
        audit_rows, _l("Every operator action and command, hash-chained."), filters=("period",)),
]
