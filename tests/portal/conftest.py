"""Portal fixtures: one-time codes captured instead of sent."""

from __future__ import annotations

import re

import pytest

@pytest.fixture()
def codes(monkeypatch) -> dict[str, str]:
    """Codes by phone, as the SMS notifier would have sent them."""
    sent: dict[str, str] = {}

    def capture(session, group_ids, phone, code):
        sent[phone] = code
        return True

    monkeypatch.setattr("meterhub.portal.auth.deliver_code", capture)
    return sent


def token_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def sign_in_with_code(client, codes, phone: str, group_id: int | None = None):
    page = client.get("/portal/login").get_data(as_text=True)
    client.post("/portal/code", data={"phone": phone, "csrf_token": token_of(page)})
    data = {"code": codes[phone], "csrf_token": token_of(page)}
    if group_id is not None:
        data["group_id"] = group_id
    return client.post("/portal/code/verify", data=data)
