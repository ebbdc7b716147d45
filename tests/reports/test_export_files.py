"""Report exports live in the database (stored_files, 1 MiB chunks under row-level security), so any web process
serves any worker's file; old files are deleted by a periodic job (issue 18 item 3)."""

from __future__ import annotations

import hashlib
import io
import os
from datetime import timedelta

from sqlalchemy import func, select, text

from meterhub.db import service_session
from meterhub.files import CHUNK_BYTES, StoredFile, StoredFileChunk, iter_chunks, save_file
from meterhub.models import utcnow
from meterhub.reports.exports import prune_exports
from meterhub.reports.models import ReportExport
from tests.alarms.conftest import run_jobs
from tests.alarms.helpers import make_site
from tests.conftest import csrf_token
from tests.reports.test_finance_and_exports import _money


def test_a_file_round_trips_in_chunks_and_stays_in_its_group(app, group, other_group):
    data = os.urandom(2 * CHUNK_BYTES + 12345)
    with app.app_context(), service_session() as s:
        stored = save_file(s, group.group_id, "report_export", "big.xlsx", "application/octet-stream", io.BytesIO(data))
        file_id = stored.id
        assert stored.size == len(data) and stored.sha256 == hashlib.sha256(data).hexdigest()
    with app.app_context(), service_session() as s:
        assert s.execute(select(func.count()).where(StoredFileChunk.file_id == file_id)).scalar() == 3
        assert b"".join(iter_chunks(s, file_id)) == data
    # as the web app's role, another group sees neither the file nor its bytes
    with app.app_context():
        from meterhub.extensions import db

        for tenant, expected in ((other_group, 0), (group, 3)):
            with db.engine.begin() as conn:
                conn.execute(text("SELECT set_config('meterhub.group_id', :g, true)"), {"g": str(tenant.group_id)})
                files = conn.execute(text("SELECT count(*) FROM stored_files WHERE id = :f"), {"f": file_id}).scalar()
                chunks = conn.execute(text("SELECT count(*) FROM stored_file_chunks WHERE file_id = :f"),
                                      {"f": file_id}).scalar()
                assert (files, chunks) == ((1, 3) if expected else (0, 0))


def test_an_export_is_stored_in_the_database_and_pruned_after_its_days(app, client, group, operator):
    site = make_site(app, group)
    _money(site)
    operator("group_finance")
    response = client.post("/reports/sales/export", data={"csrf_token": csrf_token(client, "/reports/")})
    assert response.status_code == 302
    status_url = response.headers["Location"]
    assert run_jobs(app, "reports") >= 1
    state = client.get(status_url + "?format=json").get_json()
    assert state["status"] == "done", state
    download = client.get(state["download"])
    body = download.get_data()
    download.close()
    with app.app_context(), service_session() as s:
        export = s.get(ReportExport, state["id"])
        stored = s.get(StoredFile, export.file_id)
        assert not export.path and stored.sha256 == hashlib.sha256(body).hexdigest() and stored.size == len(body)
        file_id = stored.id
        assert prune_exports() == 0 or s.get(StoredFile, file_id) is not None  # a fresh file is kept
        export.finished_at = utcnow() - timedelta(days=8)
    with app.app_context():
        assert prune_exports() >= 1
    with app.app_context(), service_session() as s:
        assert s.get(StoredFile, file_id) is None and s.get(ReportExport, state["id"]).file_id is None
        assert s.execute(select(func.count()).where(StoredFileChunk.file_id == file_id)).scalar() == 0
    assert client.get(state["download"]).status_code == 404
    assert "The file was deleted after 7 days" in client.get(status_url).get_data(as_text=True)
