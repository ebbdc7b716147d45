"""Open redirects through a posted ``next`` and a swap form's typed readings (issue 20, other instances)."""

from __future__ import annotations

import pytest

from meterhub.db import service_session
from meterhub.errors import ValidationError
from meterhub.modules.prepaid import accounts
from webui.util import local_path


@pytest.mark.parametrize("target", ["https://evil.example/x", "//evil.example", "/\\evil.example", "\\\\evil",
                                    "/ok\r\nLocation: https://evil", "javascript:alert(1)", "", None,
                                    "http:/evil.example"])
def test_only_paths_of_this_site_are_followed(target):
    assert local_path(target) is None


def test_a_path_of_this_site_is_kept():
    assert local_path("/alarms/?state=active") == "/alarms/?state=active"


def test_alarm_ack_never_redirects_off_site(app, client, operator, group):
    from tests.alarms.helpers import make_site
    from meterhub.alarms import raise_alarm
    from tests.conftest import csrf_token

    site = make_site(app, group, account=False)
    with app.app_context(), service_session() as s:
        alarm_id = raise_alarm(s, site.group_id, "offline", meter_id=site.meters[0], detail={}).id
    operator("group_admin")
    token = csrf_token(client, "/alarms/")
    response = client.post(f"/alarms/{alarm_id}/ack", data={"csrf_token": token, "next": "//evil.example/phish"})
    assert response.status_code == 302 and "evil" not in response.location


@pytest.mark.parametrize(("final", "initial"), [("abc", "0"), ("0", "12,5"), ("NaN", "0"), ("1e400", "0"),
                                                ("-5", "0")])
def test_swap_readings_that_are_not_counters_are_refused(app, final, initial):
    with app.app_context(), service_session() as s:
        with pytest.raises(ValidationError, match="reading"):
            accounts.swap_meter(s, 1, 1, 2, final_reading=final, new_initial_reading=initial, actor="t")
