"""The report plugin example of docs/plugin_hooks.md, run as written: a plugin's report gets the place filters,
refuses the ones it does not take, and answers in the API like a built-in one."""

from __future__ import annotations

import re
import types
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from meterhub.hookspecs import hookimpl
from meterhub.plugins import get_plugin_manager
from tests.alarms.helpers import make_site
from tests.api.world import bearer, make_token
from tests.timeseries.usage_writer import day_at, write_usage

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
    write_usage(app, [(group.group_id, meter, day_at(date(2026, 2, 10), ZoneInfo("Asia/Shanghai")), {"water_m3": m3})
                      for meter, m3 in ((first.meters[0], 3), (second.meters[0], 5))])
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
