"""Property-based checks of the API against its own OpenAPI document (schemathesis): no 5xx, every response
matches the documented schema, status code and content type — with a real token, on real data."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from .world import make_token, open_site

# Every default check except "schema-valid data must be accepted": the schema cannot express rules such as
# start < end or an existing meter, which the API rightly answers with a documented 422/404.
EXCLUDED = [positive_data_acceptance]


@pytest.fixture()
def api_schema(app, group):
    app.config["API_RATE_LIMIT_PER_MINUTE"] = 100_000
    app.config["API_AUTH_FAILURES_PER_MINUTE"] = 100_000
    open_site(app, group)
    token = make_token(app, group, "group_admin", ("read", "topup", "commands"), ("P1", "P2"))
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    schema.config.headers = {"Authorization": f"Bearer {token}"}
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case):
    response = case.call_and_validate(excluded_checks=EXCLUDED)  # raises on any failed check
    assert response.status_code < 500
