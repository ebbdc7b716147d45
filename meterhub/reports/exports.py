"""Report exports as rq jobs: queued → running (with progress) → done (a file to download) | failed.

    export = create_export(session, group_id, operator_id, "usage", report_filter)   # web request
    session.commit(); enqueue_export(export.id)                                      # returns at once
    run_export(export.id)                                                             # in a worker

The file is stored in the database (:mod:`meterhub.files`), never on the worker's disk, so the web process of
any host serves the download. The rows are read from the read replica when one is configured
(:mod:`meterhub.replica`); ``data_as_of`` records how fresh they were.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from flask import current_app, has_request_context
from flask_babel import force_locale
from sqlalchemy.orm import Session

from ..commands.ownership import heartbeat, orphan_after, worker_id
from ..db import service_session
from ..errors import NotFound
from ..files import XLSX, StoredFile, save_file
from ..models import utcnow
from ..replica import service_reads
from .filters import ReportFilter
from .models import ReportExport
from .registry import get_report
from .xlsx import write_xlsx

log = logging.getLogger(__name__)


def create_export(session: Session, group_id: int, operator_id: int | None, report: str,
                  report_filter: ReportFilter) -> ReportExport:
    """A queued export row (the caller commits, then calls :func:`enqueue_export`)."""
    if get_report(report) is None:
        raise NotFound(f"report {report!r} not found")
    from flask_babel import get_locale

    params = report_filter.to_params()
    params["extra"] = {**params.get("extra", {}), "locale": str(get_locale() or "")}
    export = ReportExport(group_id=group_id, operator_id=operator_id, report=report, params=params, status="queued")
    session.add(export)
    session.flush()
    return export


def enqueue_export(export_id: int, group_id: int | None = None) -> None:
    """Queue the export on the ``reports`` queue (long timeout: big exports take minutes); while Redis is
    unreachable it waits in the job outbox."""
    from ..outbox import enqueue_job

    if group_id is None:
        if has_request_context():
            from ..extensions import db

            group_id = db.session.get(ReportExport, export_id).group_id
        else:
            with service_session() as session:
                group_id = session.get(ReportExport, export_id).group_id
    enqueue_job("reports", "meterhub.reports.exports:run_export",
                {"export_id": export_id, "job_timeout": 3600, "result_ttl": 3600}, group_id=group_id,
                description=f"report export {export_id}")


def _update(export_id: int, **values: object) -> None:
    with service_session() as session:
        export = session.get(ReportExport, export_id)
        for key, value in values.items():
            setattr(export, key, value)


def run_export(export_id: int) -> int:
    """rq job: stream the report into an xlsx file; returns the number of rows."""
    me = worker_id()
    with service_session() as session:
        export = session.get(ReportExport, export_id, with_for_update=True)
        if export is None or export.status != "queued":
            return 0  # done, failed, or running under a live owner (a duplicate job)
        export.status, export.owner, export.heartbeat_at, export.attempts = "running", me, utcnow(), export.attempts + 1
        group_id, report_key, params = export.group_id, export.report, dict(export.params)
    with heartbeat("report_exports", export_id, me):
        return _write(export_id, group_id, report_key, params)


def _write(export_id: int, group_id: int, report_key: str, params: dict) -> int:
    definition = get_report(report_key)
    try:
        report_filter = ReportFilter.from_params(params)
        locale = report_filter.extra.get("locale") or current_app.config.get("BABEL_DEFAULT_LOCALE", "zh_CN")
        with tempfile.TemporaryDirectory(prefix="meterhub-export-") as scratch:  # the worker's scratch only
            partial = Path(scratch) / "export.xlsx"
            with force_locale(locale), service_reads() as (session, fresh):
                rows = definition.rows(session, report_filter)
                count = write_xlsx(partial, str(definition.name), definition.header(), rows,
                                   [c.kind for c in definition.columns],
                                   progress=lambda n: _update(export_id, rows=n))
            with service_session() as session, open(partial, "rb") as source:
                stored = save_file(session, group_id, "report_export", f"{report_key}-{export_id}.xlsx", XLSX, source)
                file_id = stored.id
    except Exception as err:
        log.exception("export %s (%s) failed", export_id, report_key)
        _update(export_id, status="failed", error=f"{err.__class__.__name__}: {err}"[:2000], finished_at=utcnow())
        raise
    as_of = fresh.as_of if fresh.replica else None
    _update(export_id, status="done", rows=count, total=count, file_id=file_id, data_as_of=as_of, finished_at=utcnow())
    log.info("export %s: %d rows of %s stored as file %s (%s)", export_id, count, report_key, file_id, fresh.source)
    return count


def recover_exports(max_attempts: int = 2) -> dict[str, list[int]]:
    """Periodic job: an export whose worker died (no heartbeat) runs again, or fails with the reason."""
    from sqlalchemy import select

    now = utcnow()
    again: list[tuple[int, int]] = []
    failed: list[int] = []
    with service_session() as session:
        rows = session.execute(select(ReportExport).where(
            ReportExport.status == "running", ReportExport.heartbeat_at < now - orphan_after())
            .with_for_update(skip_locked=True)).scalars().all()
        for export in rows:
            reason = f"the worker running it ({export.owner or 'unknown'}) stopped"
            if export.attempts < max_attempts:
                export.status, export.error, export.rows = "queued", f"{reason}; started again", 0
                again.append((export.id, export.group_id))
            else:
                export.status, export.finished_at = "failed", now
                export.error = f"{reason} {export.attempts} times; export it again or ask the administrator"
                failed.append(export.id)
    for export_id, group_id in again:
        enqueue_export(export_id, group_id)
    if again or failed:
        log.warning("exports: %d started again, %d failed after their worker died", len(again), len(failed))
    return {"again": [e for e, _ in again], "failed": failed}


def prune_exports(keep_days: int | None = None) -> int:
    """Periodic job: delete the files of exports finished more than ``EXPORT_KEEP_DAYS`` (7) days ago (the
    database is their only copy); the export stays listed and its page says to export again. Returns the count."""
    from datetime import timedelta

    from sqlalchemy import delete, select

    keep = keep_days if keep_days is not None else int(current_app.config.get("EXPORT_KEEP_DAYS", 7))
    with service_session() as session:
        ids = session.execute(select(ReportExport.file_id).where(
            ReportExport.file_id.is_not(None), ReportExport.finished_at < utcnow() - timedelta(days=keep))).scalars().all()
        if ids:  # report_exports.file_id is set to NULL by its foreign key, the chunks go with the file
            session.execute(delete(StoredFile).where(StoredFile.id.in_(ids)))
    if ids:
        log.info("exports: %d files older than %d days deleted", len(ids), keep)
    return len(ids)
