"""Objects for the scoped-writes test: one full kit of objects per property, fresh objects on demand.

A *kit* holds one object of every kind a console or API request can name (meters free and bound, an open
account with a top-up, a price plan of the property, a posted apportioning run, a bill, a batch, an alarm...)
inside one property, each in the state where acting on it would succeed. The out-of-scope kits (property P2
of the same group, property P1 of another group) are never changed by a correct application, so the same
kit serves every attempt.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, update

from meterhub.db import service_session
from meterhub.models import utcnow
from meterhub.tenants.models import Property, Room
from tests.prepaid.conftest import add_meters, write_readings

JAN_START = datetime(2025, 12, 31, 16, tzinfo=UTC)  # 2026-01-01 00:00 Asia/Shanghai
JAN_END = datetime(2026, 1, 31, 16, tzinfo=UTC)


def tag() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class Kit:
    """Objects of one property of one group (ids), plus the group-level objects of that group."""

    app: object
    group_id: int
    property_id: int
    code: str
    building_id: int
    floor_id: int
    room_id: int
    gateway_id: int
    device_id: int = 0
    meter_id: int = 0  # bound to ``account_id``
    spare_meter_id: int = 0  # on no account
    account_id: int = 0
    transfer_id: int = 0  # a top-up of ``account_id``
    tariff_id: int = 0  # a plan of this property, with a version, assigned to it
    rule_id: int = 0
    run_id: int = 0
    item_id: int = 0
    batch_id: int = 0  # scheduled
    bill_id: int = 0  # draft
    alarm_id: int = 0
    # group-level objects (the same for every kit of a group)
    operator_id: int = 0
    notifier_id: int = 0
    schedule_id: int = 0
    channel_id: int = 0
    token_prefix: str = ""

    def session(self):  # noqa: ANN201
        return service_session()

    # --- fresh objects (each call makes new ones, in the state where the action succeeds) -----------------------

    def meters(self, n: int = 1, *, readings: bool = False) -> list[int]:
        """New free meters in the kit's room (with January 2026 readings 0 → 50 kWh if asked)."""
        with self.app.app_context(), service_session() as s:
            ids = add_meters(s, self.group_id, self.property_id, self.gateway_id, self.room_id, n)
            if readings:
                write_readings(s, self.group_id, [(m, ts, Decimal(v)) for m in ids
                                                  for ts, v in ((JAN_START - timedelta(days=1), "0"),
                                                                (JAN_END, "50"))])
            return ids

    def account(self, *, preset: bool = False, balance: str = "100.00", readings: bool = False) -> dict[str, int]:
        """A new account over a new meter (open with a top-up, or preset); returns its ids."""
        from meterhub.modules.prepaid import accounts, cashier

        [meter] = self.meters(readings=readings)
        with self.app.app_context(), service_session() as s:
            acc = accounts.create_account(s, self.group_id, self.property_id, [meter], room_id=self.room_id,
                                          customer_name=f"Scope {tag()}", preset=preset, actor="pytest")
            acc.opened_at = JAN_START - timedelta(days=30)
            out = {"account_id": acc.id, "meter_id": meter, "transfer_id": 0}
            if not preset:
                out["transfer_id"] = cashier.topup(s, self.group_id, acc.id, balance, "cash", f"k-{tag()}",
                                                   actor="pytest").transfer_id
            return out

    def topup(self, account_id: int) -> int:
        from meterhub.modules.prepaid import cashier

        with self.app.app_context(), service_session() as s:
            return cashier.topup(s, self.group_id, account_id, "10.00", "cash", f"k-{tag()}", actor="pytest").transfer_id

    def tariff(self, *, property_wide: bool = True, version: bool = True) -> int:
        """A new plan of the kit's property (or group-wide) with a flat version from 2020."""
        from meterhub.tariffs import service as tariffs
        from meterhub.tariffs.pricing import PlanVersion

        with self.app.app_context(), service_session() as s:
            tariff = tariffs.create_tariff(s, self.group_id, f"Plan {tag()}",
                                           property_id=self.property_id if property_wide else None)
            if version:
                tariffs.add_version(s, tariff, datetime(2020, 1, 1, tzinfo=UTC),
                                    PlanVersion("flat", tariffs.flat_prices(Decimal("1.00"))))
            return tariff.id

    def rule(self) -> int:
        """A new apportioning rule over new meters with January readings."""
        from meterhub.modules.apportion.rules import create_rule

        parent = self.meters(readings=True)[0]
        member = self.account(readings=True)["account_id"]
        with self.app.app_context(), service_session() as s:
            return create_rule(s, self.group_id, self.property_id, name=f"Rule {tag()}", parent_meter_id=parent,
                               sub_meter_ids=[], method="ratio", tariff_id=self.tariff_id,
                               members=[(member, "1")], actor="pytest").id

    def run(self) -> int:
        from meterhub.modules.apportion.posting import post_run

        rule_id = self.rule()
        with self.app.app_context(), service_session() as s:
            return post_run(s, self.group_id, rule_id, JAN_START, JAN_END, actor="pytest").id

    def batch(self, *, failed: bool = False) -> int:
        """A scheduled batch (or one that ran with every item failed) over a new meter."""
        from meterhub.modules.batch.models import Batch, BatchItem
        from meterhub.modules.batch.service import create_batch

        meter = self.meters()[0]
        with self.app.app_context(), service_session() as s:
            batch = create_batch(s, self.group_id, self.property_id, "read_now", {}, {"meter_ids": [meter]},
                                 at=utcnow() + timedelta(days=365), actor="pytest")
            if failed:
                s.execute(update(BatchItem).where(BatchItem.batch_id == batch.id)
                          .values(status="failed", reason="test"))
                s.execute(update(Batch).where(Batch.id == batch.id).values(status="done", finished_at=utcnow()))
            return batch.id

    def bill(self, *, confirmed: bool = False) -> int:
        from meterhub.modules.postpaid import service as postpaid

        acc = self.account(readings=True, balance="1.00")["account_id"]
        with self.app.app_context(), service_session() as s:
            postpaid.make_postpaid(s, self.group_id, acc, actor="pytest")
            bill = postpaid.generate_bill(s, self.group_id, acc, date(2026, 1, 1), date(2026, 2, 1), actor="pytest")
            if confirmed:
                postpaid.confirm_bill(s, self.group_id, bill.id, actor="pytest")
            return bill.id

    def alarm(self) -> int:
        """An active alarm on a new gateway of the property."""
        from meterhub.alarms.engine import raise_alarm
        from meterhub.devices.onboarding import create_gateway

        with self.app.app_context(), service_session() as s:
            gateway = create_gateway(s, s.get(Property, self.property_id), f"GW {tag()}", "127.0.0.1", 1,
                                     "modbus-rtu-over-tcp")
            return raise_alarm(s, self.group_id, "comm_fault", gateway_id=gateway.id).id

    def mqtt_gateway(self) -> int:
        """A new push (MQTT) gateway of the property."""
        from meterhub.devices.onboarding import create_gateway

        with self.app.app_context(), service_session() as s:
            return create_gateway(s, s.get(Property, self.property_id), f"MQ {tag()}", "", 0, "mqtt",
                                  mqtt_client_id=f"mq-{tag()}").id

    def item(self) -> int:
        from meterhub.modules.billing_items.service import create_item

        acc = self.account()["account_id"]
        with self.app.app_context(), service_session() as s:
            return create_item(s, self.group_id, self.property_id, name=f"Fee {tag()}", rate="1.00",
                               start_date=date(2026, 1, 1), account_ids=[acc], actor="pytest").id

    def operator(self, role: str = "property_manager") -> int:
        from meterhub.tenants import service

        with self.app.app_context(), service_session() as s:
            return service.create_operator(s, self.group_id, f"op-{tag()}", "correct horse 42", role,
                                           property_ids=[self.property_id]).id

    def notifier(self) -> int:
        from meterhub.alarms.models import NotifierConfig

        with self.app.app_context(), service_session() as s:
            config = NotifierConfig(group_id=self.group_id, notifier="webhook", name=f"Hook {tag()}")
            s.add(config)
            s.flush()
            return config.id

    def schedule(self) -> int:
        from meterhub.reports.models import ScheduledReport

        with self.app.app_context(), service_session() as s:
            row = ScheduledReport(group_id=self.group_id, report="usage", recipients=["x@example.com"], last_error="")
            s.add(row)
            s.flush()
            return row.id

    def channel(self) -> int:
        from meterhub.payments.orders import create_channel

        with self.app.app_context(), service_session() as s:
            return create_channel(s, self.group_id, "sandbox", f"Sandbox {tag()}", actor="pytest").id

    def token(self) -> str:
        from meterhub.api import tokens
        from meterhub.tenants.models import Operator

        operator_id = self.operator()
        with self.app.app_context(), service_session() as s:
            return tokens.create_token(s, s.get(Operator, operator_id), f"t-{tag()}", ["read"], actor="pytest").token.prefix


def make_kit(app, group_id: int, property_id: int, room_id: int, gateway_id: int, device_id: int,
             group_level: Kit | None = None) -> Kit:
    """Every kind of object inside one property (group-level objects made once per group)."""
    from meterhub.tariffs import service as tariffs
    from meterhub.tariffs.models import Tariff

    with app.app_context(), service_session() as s:
        room = s.get(Room, room_id)
        code = s.get(Property, property_id).code
        kit = Kit(app, group_id, property_id, code, room.building_id, room.floor_id, room_id, gateway_id,
                  device_id=device_id)
    kit.tariff_id = kit.tariff()
    with app.app_context(), service_session() as s:
        tariffs.assign(s, group_id, "property", property_id, s.get(Tariff, kit.tariff_id))
    bound = kit.account()
    kit.account_id, kit.meter_id, kit.transfer_id = bound["account_id"], bound["meter_id"], bound["transfer_id"]
    kit.spare_meter_id = kit.meters()[0]
    kit.rule_id = kit.rule()
    kit.run_id = kit.run()
    kit.item_id = kit.item()
    kit.batch_id = kit.batch()
    kit.bill_id = kit.bill()
    kit.alarm_id = kit.alarm()
    if group_level is None:
        kit.operator_id, kit.notifier_id, kit.schedule_id = kit.operator(), kit.notifier(), kit.schedule()
        kit.channel_id, kit.token_prefix = kit.channel(), kit.token()
    else:
        for name in ("operator_id", "notifier_id", "schedule_id", "channel_id", "token_prefix"):
            setattr(kit, name, getattr(group_level, name))
    return kit


def tenant_kits(app, tenant) -> tuple[Kit, Kit]:  # noqa: ANN001
    """Kits of the tenant's properties P1 and P2 (tests/conftest.py ``Tenant``)."""
    from meterhub.devices.models import Device

    p1 = make_kit(app, tenant.group_id, tenant.property_id, tenant.room_id, tenant.gateway_id, tenant.device_id)
    with app.app_context(), service_session() as s:
        device2 = s.execute(select(Device.id).where(Device.gateway_id == tenant.gateway2_id)).scalar() or 0
    p2 = make_kit(app, tenant.group_id, tenant.property2_id, tenant.room2_id, tenant.gateway2_id, device2, p1)
    return p1, p2
