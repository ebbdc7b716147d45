"""Portal fixtures: one-time codes captured instead of sent."""

from __future__ import annotations

import re

import pytest

class SentCodes(dict):
    """Codes by phone as the SMS notifier was given them; looking one up first runs the queued code jobs."""

    def __init__(self, app) -> None:
        super().__init__()
        self.app = app

    def deliver(self) -> None:
        deliver_queued_codes(self.app)

    def __getitem__(self, phone: str) -> str:
        self.deliver()
        return super().__getitem__(phone)

    def __contains__(self, phone: object) -> bool:
        self.deliver()
        return super().__contains__(phone)


def deliver_queued_codes(app) -> int:
    """Run the queued sign-in code jobs in this process (and only those); returns how many ran."""
    from meterhub.portal.auth import SEND_CODE_JOB
    from meterhub.redis_conn import get_queue

    ran = 0
    with app.app_context():
        queue = get_queue("default")
        for job in queue.get_jobs():
            if job.args and job.args[0] == SEND_CODE_JOB:
                queue.remove(job)
                job.perform()
                ran += 1
    return ran


@pytest.fixture()
def codes(app, monkeypatch) -> dict[str, str]:
    """Codes by phone, as the SMS notifier would have sent them (the code jobs run on lookup)."""
    sent = SentCodes(app)

    def capture(session, group_ids, phone, code):
        dict.__setitem__(sent, phone, code)
        return True

    monkeypatch.setattr("meterhub.portal.auth.deliver_code", capture)
    return sent


def token_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def sign_in_with_code(client, codes, phone: str, group_id: int | None = None):
    page = client.get("/portal/login").get_data(as_text=True)
    asked = client.post("/portal/code", data={"phone": phone, "csrf_token": token_of(page)})
    assert asked.status_code != 429, asked.get_data(as_text=True)[-500:]  # the sign-in throttle, not the code
    data = {"code": codes[phone], "csrf_token": token_of(page)}
    if group_id is not None:
        data["group_id"] = group_id
    return client.post("/portal/code/verify", data=data)
