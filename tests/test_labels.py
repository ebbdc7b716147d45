"""Value labels: ``{{ value|label('family') }}`` shows stored values (statuses, kinds, channels ...) translated."""

from __future__ import annotations

import re

from flask import render_template_string
from flask_babel import force_locale

from meterhub.db import service_session
from webui.labels import LABELS, label


def test_label_translates_known_values(app):
    with app.test_request_context():
        with force_locale("zh_CN"):
            assert str(label("online", "status")) == "在线"
            assert str(label("unknown", "status")) == "未知"
            assert str(label("offline", "status")) == "离线"
            assert str(label("open", "account_status")) == "已开户"
            assert str(label("queued", "command_state")) == "排队中"
            assert str(label("transfer", "channel")) == "银行转账"
            assert str(label("arrears", "alarm_kind")) != "arrears"  # the alarm catalogue's own label
            assert render_template_string("{{ 'cleared'|label('alarm_state') }}") == "已解除"
        with force_locale("en"):
            assert str(label("online", "status")) == "Online"
            assert str(label("partially_paid", "bill_status")) == "Partially paid"
            assert render_template_string("{{ 'dorm'|label('room_kind') }}") == "Dormitory"


def test_label_falls_back_to_the_raw_value(app):
    with app.test_request_context(), force_locale("zh_CN"):
        assert label("brand_new_state", "status") == "brand_new_state"
        assert label("online", "no_such_family") == "online"
        assert label(None, "status") == ""
        assert str(label("electricity")) == "电"  # without a family: the first family that knows the value
        assert render_template_string("{{ 'weird'|label('channel') }}") == "weird"


def test_every_family_is_a_mapping_of_strings():
    for family, labels in LABELS.items():
        assert labels, family
        assert all(isinstance(key, str) for key in labels), family


def test_gateways_page_shows_translated_status(app, client, group, operator):
    from meterhub.devices.models import Gateway

    app.config["BABEL_DEFAULT_LOCALE"] = "zh_CN"
    with app.app_context(), service_session() as s:
        s.get(Gateway, group.gateway2_id).status = "online"
    operator("electrician", ("P1", "P2"))
    page = client.get("/gateways", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    shown = set(re.findall(r'<span class="badge[^"]*"[^>]*>([^<]+)</span>', html))  # the status badges
    assert {"未知", "在线"} <= shown, shown
    assert not {"unknown", "online"} & shown
