"""``bench/results.json``'s shared ``web`` key: bench_pages and bench_dashboards each keep their run under
``web.<part>`` and the stable goal keys (``web.room_monitor_p95_ms``, ``web.account_page_p95_ms``, …) side by side."""

from __future__ import annotations

import json

from bench import common


def test_two_benches_share_one_key_without_losing_each_other(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results.json")
    common.write_results("latency", {"trip_p95_s": 4.7})
    common.write_results("web", part="pages", entries={"account_page_p95_ms": 900.0, "floor_p95_ms": 300.0})
    common.write_results("web", part="dashboards", entries={"room_monitor_p95_ms": 120.0, "floor_p95_ms": 80.0})
    common.write_results("web", part="pages", entries={"account_page_p95_ms": 700.0, "floor_p95_ms": 250.0,
                                                               "goals_p95_ms": {"account_page": 100}})
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["latency"]["trip_p95_s"] == 4.7
    web = data["web"]
    assert web["account_page_p95_ms"] == 700.0 and web["room_monitor_p95_ms"] == 120.0
    assert "floor_p95_ms" not in web and "goals_p95_ms" not in web, "each run's floor and goals stay with its run"
    assert web["pages"]["floor_p95_ms"] == 250.0 and web["dashboards"]["floor_p95_ms"] == 80.0
    assert "load_average" in web["dashboards"]["machine"]
