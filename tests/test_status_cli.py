"""``meterhub status`` and ``meterhub process-exited`` (systemd's ExecStopPost hook)."""

from __future__ import annotations

from sqlalchemy import text

from meterhub.db import service_session


def test_process_exited_records_a_failure_and_status_shows_it(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["process-exited", "worker-commands", "--result", "signal", "--code", "killed",
                                 "--status", "KILL"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(args=["process-exited", "scheduler", "--result", "success"]).exit_code == 0  # not recorded
    with app.app_context(), service_session() as s:
        rows = s.execute(text("SELECT process, event, detail->>'status' FROM process_events ORDER BY id DESC "
                              "LIMIT 2")).all()
    assert rows[0] == ("worker-commands", "exited", "KILL") and "scheduler" not in [r[0] for r in rows]
    status = runner.invoke(args=["status"])
    assert status.exit_code == 0, status.output
    assert "collectors:" in status.output and "worker-commands exited" in status.output
