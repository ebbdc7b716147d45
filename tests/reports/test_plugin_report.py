"""The report plugin example of docs/plugin_hooks.md, run as written: a plugin's report gets the place filters,
refuses the ones it does not take, and answers in the API like a built-in one."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
from sqlalchemy import text

from meterhub.db import service_session
from meterhub.hookspecs import hookimpl
from meterhub.plugins import get_plugin_manager
from tests.alarms.helpers import make_site
from tests.api.world import bearer, make_token

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugin_hooks.md"


@pytest.fixture()
def doc_plugin():
    section = DOC.read_text().split("### register_reports()", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = types.ModuleType("doc_report_plugin")
    module.hookimpl = hookimpl
    exec(compile(code, str(DOC), "exec"), module.__dict__)  # noqa: S102 - our own documentation
    pm = get_plugin_manager()
    pm.register(module, name="doc_report_plugin")
    yield module
    pm.unregister(name="doc_report_plugin")


def test_the_documented_report_plugin_works(app, client, group, doc_plugin):
    first = make_site(app, group, n=1, utility="water", account=False)
    second = make_site(app, group, n=1, utility="water", account=False, second_room=True)
    with app.app_context(), service_session() as s:
        for meter, m3 in ((first.meters[0], 3), (second.meters[0], 5)):
            s.execute(text("INSERT INTO usage_monthly (group_id, meter_id, bucket, water_m3, readings, resets) "
                           "VALUES (:g, :m, CAST('2026-02-01' AS timestamp) AT TIME ZONE 'Asia/Shanghai', :v, 96, 0)"),
                      {"g": group.group_id, "m": meter, "v": m3})
    token = make_token(app, group, "group_admin", scopes=("read",))

    def run(query: str):
        return client.get(f"/api/v1/reports/water-monthly?start=2026-02-01&end=2026-02-28{query}",
                          headers=bearer(token))

    assert run("").get_json()["rows"] == [["2026-02", "8.0000"]]
    assert run(f"&room_id={group.room2_id}").get_json()["rows"] == [["2026-02", "5.0000"]]
    assert run(f"&building_id={group.building_id}").get_json()["rows"] == [["2026-02", "3.0000"]]
    refused = run("&utility=water")
    assert refused.status_code == 422 and "water-monthly report cannot be filtered by utility" in \
        refused.get_json()["error"]["message"]
