"""The REST API: token authentication, scopes, revocation, RBAC/RLS/404, pagination, idempotent top-ups,
commands, JSON errors and rate limits."""

from __future__ import annotations

import uuid

import pytest

from meterhub.db import service_session

from .world import bearer, make_token, open_site


@pytest.fixture()
def site(app, group):
    return open_site(app, group)


def test_openapi_document_is_served_and_valid(client):
    from openapi_spec_validator import validate

    doc = client.get("/api/v1/openapi.json").get_json()
    validate(doc)
    assert "/accounts/{account_id}/topups" in doc["paths"]


def test_requests_without_a_valid_token_answer_401_json(client):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"},
                    bearer("mh_00000000_" + "x" * 43)):
        response = client.get("/api/v1/properties", headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_list_detail_and_pagination(app, client, group, site):
    token = make_token(app, group)
    body = client.get("/api/v1/rooms?limit=1", headers=bearer(token)).get_json()
    assert len(body["data"]) == 1 and body["next_after"] == body["data"][0]["id"]
    second = client.get(f"/api/v1/rooms?limit=1&after={body['next_after']}", headers=bearer(token)).get_json()
    assert second["data"][0]["id"] > body["data"][0]["id"]
    account = client.get(f"/api/v1/accounts/{site.account_id}", headers=bearer(token)).get_json()
    assert account["number"] == site.account_number and account["balance"] == "0.00"
    meter = client.get(f"/api/v1/meters/{site.meter_id}", headers=bearer(token)).get_json()
    assert meter["id"] == site.meter_id
    assert client.get("/api/v1/rooms?limit=0", headers=bearer(token)).status_code == 422
    assert client.get("/api/v1/rooms?after=x", headers=bearer(token)).get_json()["error"]["fields"] == {
        "after": "not an integer"}


def test_another_groups_objects_answer_404(app, client, group, other_group, site):
    foreign = open_site(app, other_group)
    token = make_token(app, group)
    for path in (f"/properties/{other_group.property_id}", f"/rooms/{other_group.room_id}",
                 f"/meters/{foreign.meter_id}", f"/accounts/{foreign.account_id}",
                 f"/accounts/{foreign.account_id}/balance", f"/accounts/{foreign.account_id}/topups",
                 f"/meters/{foreign.meter_id}/readings", f"/meters/{foreign.meter_id}/usage"):
        response = client.get(f"/api/v1{path}", headers=bearer(token))
        assert response.status_code == 404, path
        assert response.get_json()["error"]["code"] == "not_found"
    response = client.post(f"/api/v1/accounts/{foreign.account_id}/topups", json={"amount": "5.00"},
                           headers={**bearer(token), "Idempotency-Key": "x1"})
    assert response.status_code == 404
    rooms = client.get("/api/v1/rooms?limit=200", headers=bearer(token)).get_json()["data"]
    assert other_group.room_id not in {r["id"] for r in rooms}


def test_scoped_operator_token_cannot_reach_another_property(app, client, group, site):
    other = open_site(app, group, group.room2_id, group.property2_id)
    token = make_token(app, group, "property_manager", properties=("P1",))
    assert client.get(f"/api/v1/accounts/{site.account_id}", headers=bearer(token)).status_code == 200
    assert client.get(f"/api/v1/accounts/{other.account_id}", headers=bearer(token)).status_code == 404
    assert client.get(f"/api/v1/rooms/{group.room2_id}", headers=bearer(token)).status_code == 404


def test_role_without_permission_gets_404_and_missing_scope_403(app, client, group, site):
    electrician = make_token(app, group, "electrician")
    assert client.get(f"/api/v1/accounts/{site.account_id}", headers=bearer(electrician)).status_code == 404
    read_only = make_token(app, group, "cashier", scopes=("read",))
    response = client.post(f"/api/v1/accounts/{site.account_id}/topups", json={"amount": "5.00"},
                           headers={**bearer(read_only), "Idempotency-Key": "k"})
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "insufficient_scope"


def test_topup_is_idempotent_and_checks_parameters(app, client, group, site):
    token = make_token(app, group, "cashier")
    headers = {**bearer(token), "Idempotency-Key": uuid.uuid4().hex}
    first = client.post(f"/api/v1/accounts/{site.account_id}/topups", json={"amount": "50.00"}, headers=headers)
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["balance"] == "50.00"
    again = client.post(f"/api/v1/accounts/{site.account_id}/topups", json={"amount": "50.00"}, headers=headers)
    assert again.status_code == 200 and again.get_json()["replayed"] is True
    assert again.get_json()["transfer"]["id"] == first.get_json()["transfer"]["id"]
    other = client.post(f"/api/v1/accounts/{site.account_id}/topups", json={"amount": "60.00"}, headers=headers)
    assert other.status_code == 409 and other.get_json()["error"]["code"] == "idempotency_conflict"
    balance = client.get(f"/api/v1/accounts/{site.account_id}/balance", headers=bearer(token)).get_json()
    assert balance["balance"] == "50.00"
    assert client.post(f"/api/v1/accounts/{site.account_id}/topups", json={"amount": "5"},
                       headers=bearer(token)).status_code == 422
    bad = client.post(f"/api/v1/accounts/{site.account_id}/topups", json={"amount": "-5"},
                      headers={**bearer(token), "Idempotency-Key": "neg"})
    assert bad.status_code == 422
    assert client.post(f"/api/v1/accounts/{site.account_id}/topups", data="x",
                       headers={**bearer(token), "Idempotency-Key": "ct"}).status_code == 415
    history = client.get(f"/api/v1/accounts/{site.account_id}/topups", headers=bearer(token)).get_json()
    assert [t["amount"] for t in history["data"]] == ["50.00"]


def test_commands_are_queued_and_audited(app, client, group, site):
    token = make_token(app, group, "electrician", scopes=("read", "commands"))
    response = client.post(f"/api/v1/meters/{site.meter_id}/commands", json={"kind": "switch_off"},
                           headers=bearer(token))
    assert response.status_code == 202, response.get_json()
    command = response.get_json()
    assert command["state"] == "queued"
    assert client.get(f"/api/v1/commands/{command['id']}", headers=bearer(token)).get_json()["kind"] == "switch"
    assert client.post(f"/api/v1/meters/{site.meter_id}/commands", json={"kind": "explode"},
                       headers=bearer(token)).status_code == 422


def test_switching_a_meter_without_a_relay_is_refused_clearly(app, client, group, site):
    from meterhub.devices.models import Device, Meter

    with app.app_context(), service_session() as s:
        meter = s.get(Meter, site.meter_id)
        s.get(Device, meter.device_id).config = {"variant": "dtsd1352"}  # metering only
    token = make_token(app, group, "electrician", scopes=("read", "commands"))
    for kind in ("switch_off", "keep_power"):
        response = client.post(f"/api/v1/meters/{site.meter_id}/commands", json={"kind": kind}, headers=bearer(token))
        assert response.status_code == 422, response.get_json()
        assert "cannot" in response.get_json()["error"]["message"] or "no keep-power" in response.get_json()["error"]["message"]


def test_revoked_and_expired_tokens_stop_working(app, client, group):
    from meterhub.api import tokens
    from meterhub.api.models import ApiToken
    from meterhub.models import utcnow

    token = make_token(app, group)
    assert client.get("/api/v1/properties", headers=bearer(token)).status_code == 200
    prefix = token.split("_")[1]
    with app.app_context(), service_session() as s:
        tokens.revoke(s, group.group_id, prefix, actor="test", operator_id=None)
    assert client.get("/api/v1/properties", headers=bearer(token)).status_code == 401
    token2 = make_token(app, group)
    with app.app_context(), service_session() as s:
        row = s.query(ApiToken).filter_by(prefix=token2.split("_")[1]).one()
        row.expires_at = utcnow()
    assert client.get("/api/v1/properties", headers=bearer(token2)).status_code == 401


def test_rate_limit_answers_429_with_retry_after(app, client, group):
    app.config["API_RATE_LIMIT_PER_MINUTE"] = 3
    token = make_token(app, group)
    codes = [client.get("/api/v1/properties", headers=bearer(token)).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and 429 in codes[3:]
    limited = client.get("/api/v1/properties", headers=bearer(token))
    assert limited.get_json()["error"]["code"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 0


def test_unknown_paths_and_reports(app, client, group, site):
    token = make_token(app, group, "group_finance", scopes=("read",))
    assert client.get("/api/v1/nothing", headers=bearer(token)).get_json()["error"]["code"] == "not_found"
    reports = client.get("/api/v1/reports", headers=bearer(token)).get_json()["data"]
    keys = {r["key"] for r in reports}
    assert keys
    key = sorted(keys)[0]
    body = client.get(f"/api/v1/reports/{key}?start=2026-01-01&end=2026-01-31", headers=bearer(token))
    assert body.status_code == 200, body.get_json()
    assert client.get(f"/api/v1/reports/{key}?property_id={group.property2_id + 10**9}",
                      headers=bearer(token)).status_code == 404


def test_accounts_list_carries_each_balance_and_only_the_groups_accounts(app, client, group, other_group, site):
    """The list reads every balance in its own query (issue 19: one look-up per account was 95 % of its time);
    each one is the same as the account's own endpoint, an account without entries reads 0.00."""
    token = make_token(app, group)
    other = open_site(app, other_group)
    topup = client.post(f"/api/v1/accounts/{site.account_id}/topups", json={"amount": "12.50"},
                        headers={**bearer(token), "Idempotency-Key": f"list-{uuid.uuid4().hex}"})
    assert topup.status_code in (200, 201), topup.get_json()
    listed = client.get("/api/v1/accounts?limit=100", headers=bearer(token)).get_json()["data"]
    ids = [a["id"] for a in listed]
    assert site.account_id in ids and other.account_id not in ids
    for account in listed:
        own = client.get(f"/api/v1/accounts/{account['id']}", headers=bearer(token)).get_json()
        assert account == own
    assert next(a for a in listed if a["id"] == site.account_id)["balance"] == "12.50"
