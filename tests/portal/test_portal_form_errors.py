"""The portal's forms say what is wrong beside the field, in the reader's language (the portal's rows of
``tests/operations/test_form_errors.py``'s table): staff invitation, password, paying from the account page and
from a room's QR page. The sign-in forms answer one generic message on purpose."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from meterhub.db import service_session
from tests.api.world import open_site
from tests.operations.test_form_errors import FORMS, PORTAL, Case, count, english_and_chinese
from tests.payments.conftest import make_channel

from .conftest import sign_in_with_code, token_of


@pytest.fixture()
def portal_cases(app, group) -> tuple[object, dict[str, Case]]:
    from meterhub.devices import labels
    from meterhub.payments.models import PaymentOrder
    from meterhub.portal.models import PortalInvitation, PortalUser

    site = open_site(app, group)
    make_channel(app, group.group_id)
    account = f"/portal/a/{site.account_number}"
    room = f"/portal/r/{labels.room_token(app.config['SECRET_KEY'], group.group_id, group.room_id)}"
    orders = lambda: count(app, PaymentOrder, PaymentOrder.account_id == site.account_id)  # noqa: E731

    def password_hash():
        with app.app_context(), service_session() as s:
            return s.execute(select(PortalUser.password_hash).where(PortalUser.phone == site.phone)).scalar()

    return site, {
        "portal/members.html .": Case(
            f"{account}/members", f"{account}/members", {"phone": "12-ab", "role": "staff"}, "phone", "12-ab",
            "Enter a phone number of 6 to 20 digits",
            lambda: count(app, PortalInvitation, PortalInvitation.account_id == site.account_id)),
        "portal/password.html .": Case(
            "/portal/password", "/portal/password", {"password": "short"}, "password", None, "Password too short",
            password_hash),
        "portal/account.html portal.pay": Case(
            account, f"{account}/pay", {"amount": "ten"}, "amount", "ten", "Enter a number", orders),
        "portal/room_pay.html .": Case(room, room, {"amount": "9.999"}, "amount", "9.999", "At most 2 decimals", orders),
    }


def test_the_table_lists_these_cases(portal_cases):
    assert {k for k, v in FORMS.items() if v == PORTAL} == set(portal_cases[1])


@pytest.mark.parametrize("which", sorted(k for k, v in FORMS.items() if v == PORTAL))
def test_a_bad_value_comes_back_beside_its_field(which, client, codes, portal_cases):
    site, cases = portal_cases
    case = cases[which]
    assert sign_in_with_code(client, codes, site.phone).status_code == 302
    before = case.saved()
    token = token_of(client.get(case.page).get_data(as_text=True))
    english_and_chinese(client, case, token)
    assert case.saved() == before, f"{which}: the refused form saved something"
