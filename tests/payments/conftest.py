"""Payment fixtures: an open account, a sandbox channel and order helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

import pytest

from meterhub.db import service_session, use_group
from meterhub.extensions import db
from tests.api.world import open_site
from tests.browser.conftest import live_server  # noqa: F401  (fixture)


@dataclass
class Shop:
    app: object
    site: object
    channel_id: int
    notify_key: str

    def order(self, amount: str = "30.00", channel_id: int | None = None, base_url: str = "http://localhost"):
        """A new order (returns out_trade_no, pay_url, id)."""
        from meterhub.modules.prepaid.models import PrepaidAccount
        from meterhub.payments import orders
        from meterhub.payments.models import PaymentChannel

        with self.app.test_request_context("/portal/", base_url=base_url):
            use_group(self.site.tenant.group_id)
            account = db.session.get(PrepaidAccount, self.site.account_id)
            channel = db.session.get(PaymentChannel, channel_id or self.channel_id)
            order = orders.create_order(db.session, account, channel, amount, "/portal/")
            db.session.commit()
            return order.out_trade_no, order.pay_url, order.id

    def private_key(self) -> str:
        from meterhub.alarms import secrets as secret_store
        from meterhub.payments.models import PaymentChannel
        from meterhub.payments.orders import owner

        with self.app.app_context(), service_session() as s:
            channel = s.get(PaymentChannel, self.channel_id)
            return secret_store.reveal(channel.secrets, owner(channel))["private_key"]

    def balance(self) -> Decimal:
        from meterhub.ledger.post import balance_of
        from meterhub.modules.prepaid.models import PrepaidAccount

        with self.app.app_context(), service_session() as s:
            return balance_of(s, s.get(PrepaidAccount, self.site.account_id).wallet_account_id)

    def outcomes(self) -> list[str]:
        from sqlalchemy import select

        from meterhub.payments.models import PaymentNotification

        with self.app.app_context(), service_session() as s:
            return list(s.execute(select(PaymentNotification.outcome).where(
                PaymentNotification.channel_id == self.channel_id).order_by(PaymentNotification.id)).scalars())


def make_channel(app, group_id: int, provider: str = "sandbox", settings=None, secrets=None):
    from meterhub.payments import orders

    with app.app_context(), service_session() as s:
        channel = orders.create_channel(s, group_id, provider, f"{provider} channel", settings, secrets, actor="test")
        return channel.id, channel.notify_key


@pytest.fixture()
def shop(app, group) -> Shop:
    site = open_site(app, group)
    channel_id, key = make_channel(app, group.group_id)
    return Shop(app, site, channel_id, key)


def sandbox_body(txn_id: str, out_trade_no: str, amount: str, currency: str = "CNY") -> bytes:
    return json.dumps({"event": "payment.succeeded", "txn_id": txn_id, "out_trade_no": out_trade_no,
                       "amount": amount, "currency": currency, "status": "SUCCESS",
                       "paid_at": "2026-11-21T12:00:00+08:00"}).encode()
