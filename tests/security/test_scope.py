"""Scoped writes, generated over every state-changing route (issue 20, item 1).

Every POST/PUT/PATCH/DELETE route of the console and the API (from ``app.url_map``) has a *baseline*: a
request with in-scope objects that succeeds and changes the database. While the baseline runs, every key the
view reads from the form, the JSON body or the query string is recorded; each id-bearing one (``*_id``,
``*_ids``, an assignment ``target``, apportioning ``members``), and each id in the URL, is then replaced by
the id of the same kind of object in another property of the same group and in another group. Every such
request must be refused (4xx) with the database unchanged (a digest of every row of both groups, the audit
log aside, plus the ledger's count and sum). The same id moved to the query string must change nothing
either. A route without a baseline, or an id field without a kind, fails the test and says what to add.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from sqlalchemy import text
from werkzeug.datastructures import ImmutableMultiDict

from meterhub.db import service_session
from tests.api.world import bearer, make_token
from tests.conftest import csrf_token
from tests.security.scope_world import Kit, make_kit, tag, tenant_kits

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
#: Routes with their own identity and tests: sign-in and language (no objects), the tenant portal (tests/portal),
#: the signed payment callbacks and sandbox pages (tests/payments), the API's catch-all 404.
EXEMPT_PREFIXES = ("auth.", "portal.", "payments.")
EXEMPT = {"api.unknown", "static"}
#: Routes that change only the signed-in session (the property switcher), not the database.
SESSION_ONLY = {"console.switch_property"}
#: Kinds of id and the Kit attribute holding one; group-level kinds have no "other property" variant.
KIND_ATTR = {
    "property": "property_id", "building": "building_id", "floor": "floor_id", "room": "room_id",
    "gateway": "gateway_id", "device": "device_id", "meter": "spare_meter_id", "bound_meter": "meter_id",
    "account": "account_id", "transfer": "transfer_id", "tariff": "tariff_id", "rule": "rule_id", "run": "run_id",
    "item": "item_id", "batch": "batch_id", "bill": "bill_id", "alarm": "alarm_id", "operator": "operator_id",
    "notifier": "notifier_id", "schedule": "schedule_id", "channel": "channel_id", "token": "token_prefix",
}
GROUP_LEVEL = {"operator", "notifier", "schedule", "channel", "token"}
#: Field (form, JSON, query or URL) -> kind of object it names.
FIELD_KIND = {
    "property_id": "property", "property_ids": "property", "building_id": "building", "floor_id": "floor",
    "room_id": "room", "room_ids": "room", "gateway_id": "gateway", "device_id": "device", "meter_id": "meter",
    "meter_ids": "meter", "sub_meter_ids": "meter", "parent_meter_id": "meter", "old_meter_id": "bound_meter",
    "new_meter_id": "meter", "account_id": "account", "account_ids": "account", "remainder_account_id": "account",
    "transfer_id": "transfer", "tariff_id": "tariff", "rule_id": "rule", "run_id": "run", "item_id": "item",
    "batch_id": "batch", "bill_id": "bill", "alarm_id": "alarm", "operator_id": "operator",
    "notifier_id": "notifier", "schedule_id": "schedule", "channel_id": "channel", "prefix": "token",
    "export_id": "export", "target": "room", "members": "account",
    # fields that name an object by the key people use (issue 21 item 2: serial, account number, room label ...)
    "parent_meter": "meter", "sub_meters": "meter", "meters": "meter", "remainder_account": "account",
    "building": "building", "floor": "floor", "account": "account", "accounts": "account", "new_meter": "meter",
}
#: Key fields: the object is named by its key (meterhub.tenants.lookup), not its id.
KEY_FIELDS = {"parent_meter", "sub_meters", "meters", "remainder_account", "building", "floor", "members",
              "account", "accounts", "new_meter"}
ID_FIELD = re.compile(r"(?:.+_)?ids?|target|members|prefix|parent_meter|sub_meters|meters|remainder_account|building"
                      r"|floor|account|accounts|new_meter")
#: Fields that look like ids but name no object of ours (the identifier a device uses at the MQTT broker).
NOT_IDS = {"mqtt_client_id"}
#: Tables left out of the digest: the audit log (a refused attempt may be logged) and the reading series.
UNDIGESTED = {"audit_log", "readings", "alarm_watermarks"}
#: Columns that change on any authenticated use, refused or not (an API token's last use, noted once a minute).
VOLATILE = {"api_tokens": ("last_used_at",)}


# --- recording which request keys a view reads -------------------------------------------------------------------

READ: set[str] = set()  # keys read from the form, JSON body or query string
READ_QUERY: set[str] = set()  # keys read from the query string


class RecordingDict(ImmutableMultiDict):
    """Form and query-string values that note every key a view asks for."""

    def __getitem__(self, key):  # noqa: ANN001, ANN204
        READ.add(key)
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:  # noqa: ANN001
        READ.add(key)
        return super().__contains__(key)

    def get(self, key, default=None, type=None):  # noqa: ANN001, ANN201, A002
        READ.add(key)
        return super().get(key, default, type)

    def getlist(self, key, type=None):  # noqa: ANN001, ANN201, A002
        READ.add(key)
        return super().getlist(key, type)


class QueryRecordingDict(RecordingDict):
    """Query-string values that also note the keys asked of the query string itself."""

    def __getitem__(self, key):  # noqa: ANN001, ANN204
        READ_QUERY.add(key)
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:  # noqa: ANN001
        READ_QUERY.add(key)
        return super().__contains__(key)

    def get(self, key, default=None, type=None):  # noqa: ANN001, ANN201, A002
        READ_QUERY.add(key)
        return super().get(key, default, type)

    def getlist(self, key, type=None):  # noqa: ANN001, ANN201, A002
        READ_QUERY.add(key)
        return super().getlist(key, type)


class RecordingJSON(dict):
    """A JSON body that notes every key a view asks for."""

    def __getitem__(self, key):  # noqa: ANN001, ANN204
        READ.add(key)
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:  # noqa: ANN001
        READ.add(key)
        return super().__contains__(key)

    def get(self, key, default=None):  # noqa: ANN001, ANN201
        READ.add(key)
        return super().get(key, default)


def recording(app) -> None:  # noqa: ANN001
    base = app.request_class

    class RecordingRequest(base):  # type: ignore[misc, valid-type]
        parameter_storage_class = RecordingDict

        @property
        def args(self) -> QueryRecordingDict:  # type: ignore[override]
            cached = self.__dict__.get("_recording_args")
            if cached is None:
                cached = self.__dict__["_recording_args"] = QueryRecordingDict(base.args.__get__(self, type(self)))
            return cached

        def get_json(self, *args: Any, **kwargs: Any) -> Any:
            data = super().get_json(*args, **kwargs)
            return RecordingJSON(data) if isinstance(data, dict) and not isinstance(data, RecordingJSON) else data

    app.request_class = RecordingRequest


# --- the database digest -----------------------------------------------------------------------------------------

_DIGEST_SQL: list[str] = []


def _digest_sql(session) -> str:  # noqa: ANN001
    """One query over every table (looked up once: information_schema is slow)."""
    if not _DIGEST_SQL:
        tables = session.execute(text(
            "SELECT c.relname, EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid "
            "AND a.attname = 'group_id' AND NOT a.attisdropped) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') "
            "AND NOT c.relispartition")).all()
        parts = []
        for name, grouped in sorted(tables):
            if name in UNDIGESTED or name.startswith(("rollup", "usage_", "_")):
                continue
            where = " WHERE t.group_id = ANY(:g)" if grouped else ""
            row = "t::text"
            if name in VOLATILE:
                columns = session.execute(text(
                    "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 "
                    "AND NOT attisdropped ORDER BY attnum"), {"t": name}).scalars()
                row = "row(" + ", ".join(f't."{c}"' for c in columns if c not in VOLATILE[name]) + ")::text"
            parts.append(f"SELECT '{name}', count(*)::text || ':' || coalesce(sum(hashtextextended({row}, 7)), 0) "
                         f'FROM "{name}" t{where}')
        parts.append("SELECT 'ledger (entries, sum)', count(*)::text || ' entries, sum ' || coalesce(sum(amount), 0) "
                     "FROM ledger_entries WHERE group_id = ANY(:g)")
        _DIGEST_SQL.append(" UNION ALL ".join(parts))
    return _DIGEST_SQL[0]


def digest(app, group_ids: tuple[int, ...]) -> dict[str, Any]:  # noqa: ANN001
    """Per table, the count and a sum of hashes of every row of ``group_ids`` (every row of tables without a
    group: they are small); the ledger's count and sum."""
    with app.app_context(), service_session() as s:
        return dict(s.execute(text(_digest_sql(s)), {"g": list(group_ids)}).all())


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


# --- requests ----------------------------------------------------------------------------------------------------

@dataclass
class Req:
    """One request to a route: URL values, then a form (console) or a JSON body (API)."""

    url: dict[str, Any] = field(default_factory=dict)
    form: dict[str, Any] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    query: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Callable[[], tuple[io.BytesIO, str]]] = field(default_factory=dict)


def _path(rule, values: dict[str, Any]) -> str:  # noqa: ANN001
    path = rule.rule
    for arg in rule.arguments:
        path = re.sub(rf"<(?:\w+:)?{arg}>", str(values[arg]), path)
    return path


@dataclass
class _Raised:
    status_code: int
    error: str


@dataclass
class Outside:
    """A kit outside an attacker's scope: another property of their group, or another group."""

    label: str
    kit: Kit
    same_group: bool


@dataclass
class Attacker:
    """A signed-in operator (console client + API token) and the kits outside their scope."""

    name: str
    client: Any
    token: str
    csrf: str
    outside: list[Outside]

    def send(self, rule, req: Req):  # noqa: ANN001, ANN201
        """The response; an exception the app lets through (TESTING propagates them) counts as a 500."""
        try:
            return self._send(rule, req)
        except Exception as err:  # noqa: BLE001
            return _Raised(500, f"{type(err).__name__}: {str(err)[:200]}")

    def _send(self, rule, req: Req):  # noqa: ANN001, ANN202
        path = _path(rule, req.url)
        method = sorted(rule.methods & STATE_CHANGING)[0]
        if rule.endpoint.startswith("api."):
            headers = {**bearer(self.token), "Idempotency-Key": f"scope-{tag()}"}
            return self.client.open(path, method=method, json=req.json or {}, query_string=req.query,
                                    headers=headers)
        data = {"csrf_token": self.csrf, **req.form, **{k: f() for k, f in req.files.items()}}
        return self.client.open(path, method=method, data=data, query_string=req.query,
                                content_type="multipart/form-data" if req.files else None)


# --- baselines: one request per route that succeeds with objects in scope ---------------------------------------

def _version_form() -> dict[str, str]:
    return {"kind": "flat", "effective_date": "2031-01-01", "effective_time": "00:00", "timezone": "Asia/Shanghai",
            "price_flat": "0.50", "price_sharp": "", "price_peak": "", "price_valley": "", "periods": "",
            "tiers": "", "tier_period": "month"}


def _workbook(kit: Kit) -> Callable[[], tuple[io.BytesIO, str]]:
    """An import workbook with one gateway row in the kit's property (named by its code)."""
    from openpyxl import Workbook

    from meterhub.devices import excel

    def make() -> tuple[io.BytesIO, str]:
        book = Workbook()
        sheet = book.active
        sheet.title = "Gateways"
        sheet.append(list(excel.GATEWAY_COLUMNS))
        book.create_sheet("Devices").append(list(excel.DEVICE_COLUMNS))
        row = {"property_code": kit.code, "name": f"GWX-{tag()}", "host": "10.9.9.9", "port": 502,
               "framing": "modbus-rtu-over-tcp", "baud": 9600, "parity": "N"}
        sheet.append([row.get(column, "") for column in excel.GATEWAY_COLUMNS])
        buffer = io.BytesIO()
        book.save(buffer)
        return io.BytesIO(buffer.getvalue()), "import.xlsx"

    return make


def _account_form(kit: Kit) -> dict[str, str]:
    return {"amount": "1.00", "channel": "cash", "key": f"k-{tag()}", "reason": "scope test", "confirmed": "yes"}


BASELINES: dict[str, Callable[[Kit, dict], Req]] = {
    # alarms
    "alarms.ack": lambda k, c: Req({"alarm_id": k.alarm()}, {"note": "seen"}),
    "alarms.notifier_list": lambda k, c: Req(form={"notifier": "webhook", "name": f"Hook {tag()}"}),
    "alarms.notifier_edit": lambda k, c: Req({"notifier_id": k.notifier()}, {"name": f"Renamed {tag()}"}),
    # API tokens
    "api_tokens.index": lambda k, c: Req(form={"name": f"t-{tag()}", "scopes": "read", "operator_id": k.operator()}),
    "api_tokens.revoke": lambda k, c: Req({"prefix": k.token()}, {"confirmed": "yes"}),
    # apportioning
    "apportion.create": lambda k, c: (lambda meters, acc: Req(form={
        "property_id": k.property_id, "name": f"Rule {tag()}", "parent_meter": _key(k, "meter", meters[0]),
        "sub_meters": _key(k, "meter", meters[1]), "method": "ratio", "tariff_id": k.tariff_id,
        "members": f"{_key(k, 'account', acc)}:1", "remainder_account": _key(k, "account", acc),
        "post_mode": "deduct", "subtract": "1"}))(k.meters(2), k.account()["account_id"]),
    "apportion.post": lambda k, c: Req({"rule_id": k.rule()}, {"start": "2026-01-01", "end": "2026-02-01"}),
    "apportion.reverse": lambda k, c: Req({"run_id": k.run()}, {"reason": "scope test"}),
    # batch operations
    "batch.create": lambda k, c: Req(form={"property_id": k.property_id, "action": "set_tariff",
                                           "tariff_id": k.tariff_id, "building": _key(k, "building", k.building_id),
                                           "floor": _key(k, "floor", k.floor_id),
                                           "meters": _key(k, "meter", k.meters()[0]), "confirmed": "yes"}),
    "batch.retry": lambda k, c: Req({"batch_id": k.batch(failed=True)}, {"confirmed": "yes"}),
    "batch.cancel": lambda k, c: Req({"batch_id": k.batch()}),
    # billing items and post-paid bills
    "billing_items.create": lambda k, c: Req(form={
        "property_id": k.property_id, "name": f"Fee {tag()}", "rate": "1.00", "basis": "fixed",
        "category": "custom", "recurrence": "monthly", "day": "1", "start_date": "2026-01-01", "mode": "deduct",
        "accounts": _key(k, "account", k.account()["account_id"])}),
    "postpaid.generate": lambda k, c: Req(form={"account": _key(k, "account", k.account(readings=True)["account_id"]),
                                                "start": "2026-01-01", "end": "2026-02-01", "make_postpaid": "1"}),
    "billing_items.charge": lambda k, c: Req({"item_id": k.item()}),  # monthly since January: charges are due
    "postpaid.run": lambda k, c: (k.bill(), Req(form={  # a new post-paid account billed for January, run February
        "property_id": k.property_id, "building_id": k.building_id, "month": "2026-02"}))[1],
    "postpaid.policy": lambda k, c: Req({"property_id": k.property_id}, {
        "bill_day": str(1 + uuid.uuid4().int % 28), "remind_every_days": str(1 + uuid.uuid4().int % 30),
        "late_fee_daily_rate": "0.0005", "late_fee_cap_rate": "0.10", "cutoff_days": ""}),
    "prepaid.alarm_levels": lambda k, c: Req({"account_id": k.account()["account_id"]}, {
        "alarm1": f"{20 + uuid.uuid4().int % 50}.00", "alarm2": "5.00", "alarm1_days": "3", "alarm2_days": ""}),
    "postpaid.confirm": lambda k, c: Req({"bill_id": k.bill()}),
    "postpaid.pay": lambda k, c: Req({"bill_id": k.bill(confirmed=True)}, {"amount": "1.00", "channel": "cash",
                                                                          "key": f"k-{tag()}"}),
    # tenancy tree
    "console.properties": lambda k, c: Req(form={"name": f"Plaza {tag()}", "code": tag(), "reading_interval_min": "30"}),
    "console.property_detail": lambda k, c: Req({"property_id": k.property_id},
                                                {"action": "add_building", "name": f"T {tag()}"}),
    "console.building_detail": lambda k, c: Req({"building_id": k.building_id},
                                                {"action": "add_room", "level": "1", "number": tag()}),
    "console.room_detail": lambda k, c: Req({"room_id": k.room_id}, {"name": f"Shop {tag()}", "area_m2": "12.50",
                                                                     "kind": "shop"}),
    "console.switch_property": lambda k, c: Req(form={"property_id": k.property_id}),
    # devices
    "devices.gateways": lambda k, c: Req(form={"property_id": k.property_id, "name": f"GW {tag()}",
                                               "host": "127.0.0.1", "port": "502", "framing": "modbus-rtu-over-tcp"}),
    "devices.import_devices": lambda k, c: Req(form={"verify": "0"}, files={"file": _workbook(k)}),
    "devices.onboard": lambda k, c: c["onboard"](k),
    "devices.reset_mqtt_password": lambda k, c: Req({"gateway_id": k.mqtt_gateway()}),
    # operators
    "admin.operators": lambda k, c: Req(form={"username": f"op-{tag()}", "password": "correct horse 42",
                                              "role": "property_manager", "name": "Op",
                                              "property_ids": str(k.property_id)}),
    "admin.operator_detail": lambda k, c: Req({"operator_id": k.operator()}, {
        "role": "cashier", "name": f"Op {tag()}", "property_ids": str(k.property_id)}),
    # payment channels
    "payment_channels.index": lambda k, c: Req(form={"provider": "sandbox", "name": f"Sandbox {tag()}"}),
    "payment_channels.toggle": lambda k, c: Req({"channel_id": k.channel()}),
    # prepaid counter and accounts
    "prepaid.topup": lambda k, c: Req({"account_id": k.account()["account_id"]}, _account_form(k)),
    "prepaid.refund": lambda k, c: Req({"account_id": k.account()["account_id"]}, _account_form(k)),
    "prepaid.reverse": lambda k, c: (lambda acc: Req({"account_id": acc["account_id"]}, {
        **_account_form(k), "transfer_id": acc["transfer_id"]}))(k.account()),
    "prepaid.activate": lambda k, c: Req({"account_id": k.account(preset=True)["account_id"]},
                                         {"customer_name": f"Owner {tag()}", "phone": "13800000000"}),
    "prepaid.close": lambda k, c: Req({"account_id": k.account()["account_id"]}, {"key": f"k-{tag()}",
                                                                                  "confirmed": "yes"}),
    "prepaid.swap": lambda k, c: (lambda acc: Req({"account_id": acc["account_id"]}, {
        "old_meter_id": acc["meter_id"], "new_meter": _key(k, "meter", k.meters()[0]), "final_reading": "0",
        "new_initial_reading": "0", "confirmed": "yes"}))(k.account()),
    "prepaid.open_account": lambda k, c: Req(form={"room_id": k.room_id, "meter_id": str(k.meters()[0]),
                                                   "customer_name": f"New {tag()}", "alarm1": "20.00",
                                                   "alarm2": "5.00", "overdraft_limit": "0.00"}),
    "prepaid.command": lambda k, c: (lambda acc: Req({"meter_id": acc["meter_id"]}, {
        "kind": "read_now", "account_id": acc["account_id"]}))(k.account()),
    # reports
    "reports.export": lambda k, c: Req({"key": "usage"}, {
        "property_id": k.property_id, "building_id": k.building_id, "room_id": k.room_id,
        "meter_id": k.meter_id, "start": "2026-01-01", "end": "2026-01-31"}),
    "reports.schedule_create": lambda k, c: Req(form={"report": "usage", "frequency": "daily", "hour": "7",
                                                      "recipients": "hq@example.com", "property_id": k.property_id}),
    "reports.schedule_delete": lambda k, c: Req({"schedule_id": k.schedule()}),
    # group settings
    "settings.index": lambda k, c: Req(form={"section": "topup_limits",
                                             "topup_max": f"{40000 + uuid.uuid4().int % 9999}.00",
                                             "topup_confirm_above": "5000.00"}),
    # price plans
    "tariffs.create": lambda k, c: Req(form={"name": f"Plan {tag()}", "utility": "electricity",
                                             "property_id": k.property_id}),
    "tariffs.add_version": lambda k, c: Req({"tariff_id": k.tariff()}, _version_form()),
    "tariffs.assign": lambda k, c: Req({"tariff_id": k.tariff()}, {"target": f"room:{k.room_id}"}),
    # REST API
    "api.create_topup": lambda k, c: Req({"account_id": k.account()["account_id"]},
                                         json={"amount": "1.00", "channel": "transfer"}),
    "api.create_command": lambda k, c: Req({"meter_id": k.meters()[0]}, json={"kind": "read_now"}),
}


def state_changing_rules(app) -> list:  # noqa: ANN001
    return sorted((r for r in app.url_map.iter_rules() if r.methods & STATE_CHANGING
                   and r.endpoint not in EXEMPT and not r.endpoint.startswith(EXEMPT_PREFIXES)),
                  key=lambda r: r.endpoint)


def test_every_state_changing_route_has_a_baseline(app):
    missing = {r.endpoint for r in state_changing_rules(app)} - set(BASELINES)
    assert not missing, f"add a baseline request to BASELINES in tests/security/test_scope.py: {sorted(missing)}"


# --- the walk ----------------------------------------------------------------------------------------------------

def _value(kind: str, kit: Kit, field_name: str) -> Any:
    value = getattr(kit, KIND_ATTR[kind])
    if field_name == "target":
        return f"room:{value}"
    if field_name in KEY_FIELDS:
        value = _key(kit, kind, value)
    if field_name == "members":
        return f"{value}:1"
    return value


def _key(kit: Kit, kind: str, object_id: int) -> str:
    """What people call the object (its serial, account number, room label ...)."""
    from meterhub.tenants.lookup import label_of

    with kit.app.app_context(), service_session() as s:
        return label_of(s, kit.group_id, kind, object_id)


def _mutations(rule, req: Req, read: set[str], read_query: set[str],  # noqa: ANN001
               attacker: Attacker) -> list[tuple[str, Req, bool]]:
    """(label, request, primary) for each id field x each out-of-scope kit; ``primary`` ones must answer 4xx.
    The id also goes into the query string instead when the view looked there during the baseline."""
    api = rule.endpoint.startswith("api.")
    body = req.json if api else req.form
    fields = {f for f in {*rule.arguments, *read, *(body or {})} if ID_FIELD.fullmatch(f) and f not in NOT_IDS}
    unknown = {f for f in fields if f not in FIELD_KIND}
    assert not unknown, f"{rule.endpoint}: give these id fields a kind in FIELD_KIND: {sorted(unknown)}"
    out = []
    for name in sorted(fields):
        kind = FIELD_KIND[name]
        for other in attacker.outside:
            if kind in GROUP_LEVEL and other.same_group:
                continue  # a group-level object of the attacker's own group is in scope
            if kind not in KIND_ATTR:
                continue  # (a kind no state-changing route takes)
            value, where = _value(kind, other.kit, name), other.label
            if name in rule.arguments:
                out.append((f"URL {name}={value} ({where})", replace(req, url={**req.url, name: value}), True))
                continue
            placed = {**(body or {}), name: value}
            out.append((f"{'JSON' if api else 'form'} {name}={value} ({where})",
                        replace(req, json=placed) if api else replace(req, form=placed), True))
            if name not in read_query:
                continue
            rest = {k: v for k, v in (body or {}).items() if k != name}
            out.append((f"query {name}={value} ({where})",
                        replace(req, query={**req.query, name: value}, **({"json": rest} if api else {"form": rest})),
                        False))
    if req.files:  # an uploaded workbook names properties by code: one of another property of the group
        for other in attacker.outside:
            if other.same_group:
                out.append((f"workbook naming property {other.kit.code} ({other.label})",
                            replace(req, files={"file": _workbook(other.kit)}), True))
    return out


@pytest.fixture()
def scope_world(app, group, other_group, client):
    """Kits of P1 and P2 of ``group`` and P1 of ``other_group``; two attackers of ``group``."""
    recording(app)
    p1, p2 = tenant_kits(app, group)
    foreign = make_kit(app, other_group.group_id, other_group.property_id, other_group.room_id,
                       other_group.gateway_id, other_group.device_id)
    attackers = []
    p2_out = Outside(f"property P2 of the same group {group.group_id}", p2, True)
    foreign_out = Outside(f"another group {other_group.group_id}", foreign, False)
    for role, outside in (("property_manager", [p2_out, foreign_out]), ("group_admin", [foreign_out])):
        username, password, _ = group.operator(role, ("P1",))
        web = app.test_client()
        token = csrf_token(web)
        response = web.post("/login", data={"username": username, "password": password, "csrf_token": token})
        assert response.status_code == 302, response.get_data(as_text=True)
        api_token = make_token(app, group, role, ("read", "topup", "commands"), ("P1",))
        attackers.append(Attacker(role, web, api_token, csrf_token(web, "/password"), outside))
    return {"p1": p1, "p2": p2, "foreign": foreign, "attackers": attackers,
            "groups": (group.group_id, other_group.group_id)}


def _onboarding(app, world):  # noqa: ANN001
    """Onboarding reads a real (simulated) device: a bus of simulated meters and a gateway on it in each kit."""
    from meterhub.devices.onboarding import create_gateway
    from meterhub.plugins import driver_registry
    from meterhub.tenants.models import Property
    from tests.test_onboarding import BusThread

    driver = driver_registry()["acrel_dtsd1352"]
    sims = [driver.simulator(address, {"variant": "dtsy1352"}) for address in range(1, 41)]
    bus = BusThread(sims)
    free = iter(sims)
    for kit in (world["p1"], world["p2"], world["foreign"]):
        with app.app_context(), service_session() as s:
            kit.gateway_id = create_gateway(s, s.get(Property, kit.property_id), f"GW-SIM {tag()}", "127.0.0.1",
                                            bus.port, "modbus-rtu-over-tcp").id

    def onboard(kit: Kit) -> Req:
        sim = next(free)
        return Req(form={"gateway_id": kit.gateway_id, "driver_key": "acrel_dtsd1352", "room_ids": str(kit.room_id),
                         "qr_payload": f"SN={sim.serial};MODEL=DTSY1352;ADDR={sim.address}"})

    return bus, onboard


def test_out_of_scope_ids_are_refused_on_every_state_changing_route(app, scope_world):
    world, groups = scope_world, scope_world["groups"]
    bus, onboard = _onboarding(app, world)
    context = {"onboard": onboard}
    failures: list[str] = []
    tried = 0
    try:
        for rule in state_changing_rules(app):
            build, proven = BASELINES[rule.endpoint], None
            for attacker in world["attackers"]:  # a scoped manager first; the group admin may do everything
                if proven is None:
                    baseline = build(world["p1"], context)
                    READ.clear()
                    READ_QUERY.clear()
                    before = digest(app, groups)
                    response = attacker.send(rule, baseline)
                    read, read_query = set(READ), set(READ_QUERY)
                    changed = changes(before, digest(app, groups))
                    if not (response.status_code < 400 and (changed or rule.endpoint in SESSION_ONLY)):
                        if attacker.name == "group_admin" or response.status_code >= 500:
                            failures.append(f"{rule.endpoint}: the baseline request failed for {attacker.name} "
                                            f"({response.status_code} {getattr(response, 'error', '')}, changed "
                                            f"{changed}); fix BASELINES")
                        continue  # this role may not use the route at all: nothing to try
                    proven = (read, read_query)  # the same request works for the (wider) group admin
                attempts = _mutations(rule, build(world["p1"], context), *proven, attacker)
                before = digest(app, groups)
                for label, req, primary in attempts:
                    tried += 1
                    READ_QUERY.clear()
                    response = attacker.send(rule, req)
                    after = digest(app, groups)
                    changed, before = changes(before, after), after
                    status = response.status_code
                    used = primary or req.query.keys() & READ_QUERY  # an id in the query string the view ignores is harmless
                    if status >= 500 or (used and (changed or not 400 <= status < 500)):
                        failures.append(f"{attacker.name} {sorted(rule.methods & STATE_CHANGING)[0]} "
                                        f"{_path(rule, req.url)} ({rule.endpoint}) with {label} -> {status} "
                                        f"{getattr(response, 'error', '')}, "
                                        f"changed: {changed or 'nothing'}")
    finally:
        bus.stop()
    assert tried > 100, f"only {tried} out-of-scope attempts were made"
    assert not failures, f"{len(failures)} of {tried} out-of-scope requests were not refused:\n" + "\n".join(failures)


# --- price plans of a property or of the whole group (issue 20, finding 2) ---------------------------------------

def _versions(app, tariff_id: int) -> int:  # noqa: ANN001
    from sqlalchemy import func, select

    from meterhub.tariffs.models import TariffVersion

    with app.app_context(), service_session() as s:
        return s.execute(select(func.count()).where(TariffVersion.tariff_id == tariff_id)).scalar()


def _sign_in(app, group, role: str):  # noqa: ANN001, ANN202
    username, password, _ = group.operator(role, ("P1",))
    web = app.test_client()
    response = web.post("/login", data={"username": username, "password": password, "csrf_token": csrf_token(web)})
    assert response.status_code == 302
    return web, csrf_token(web, "/password")


def test_price_plans_belong_to_a_property_or_to_the_whole_group(app, group):
    from meterhub.errors import ValidationError
    from meterhub.tariffs import service as tariffs
    from meterhub.tariffs.models import Tariff

    p1, p2 = (Kit(app, group.group_id, pid, code, 0, 0, room, 0) for pid, code, room in (
        (group.property_id, "P1", group.room_id), (group.property2_id, "P2", group.room2_id)))
    mall_plan, dorm_plan, group_plan = p1.tariff(), p2.tariff(), p1.tariff(property_wide=False)
    price_99 = {**_version_form(), "price_flat": "99.00", "effective_date": "2031-01-01"}

    web, token = _sign_in(app, group, "property_manager")  # a manager of the mall (P1) only
    listing = web.get("/tariffs/").get_data(as_text=True)
    assert f"/tariffs/{mall_plan}" in listing and f"/tariffs/{group_plan}" in listing
    assert f"/tariffs/{dorm_plan}" not in listing
    assert web.get(f"/tariffs/{dorm_plan}").status_code == 404
    # The finding: the dorm-only plan set to 99 CNY/kWh by the mall's manager.
    assert web.post(f"/tariffs/{dorm_plan}/versions/new", data={"csrf_token": token, **price_99}).status_code == 404
    assert _versions(app, dorm_plan) == 1
    # A group-wide plan: seen and usable, changed only by group-level roles.
    assert "Add a version" not in web.get(f"/tariffs/{group_plan}").get_data(as_text=True)
    assert web.post(f"/tariffs/{group_plan}/versions/new", data={"csrf_token": token, **price_99}).status_code == 404
    assert _versions(app, group_plan) == 1
    assert web.post(f"/tariffs/{group_plan}/assign", data={"csrf_token": token,
                                                           "target": f"room:{group.room_id}"}).status_code == 302
    # The mall's own plan.
    assert web.post(f"/tariffs/{mall_plan}/versions/new", data={"csrf_token": token, **price_99}).status_code == 302
    assert _versions(app, mall_plan) == 2
    # New plans: of one of the manager's properties, never group-wide, never of another property.
    new = {"csrf_token": token, "utility": "electricity"}
    assert web.post("/tariffs/new", data={**new, "name": f"GW {tag()}", "property_id": ""}).status_code == 403
    assert web.post("/tariffs/new", data={**new, "name": f"P2 {tag()}",
                                          "property_id": group.property2_id}).status_code == 404
    name = f"P1 {tag()}"
    assert web.post("/tariffs/new", data={**new, "name": name, "property_id": group.property_id}).status_code == 302
    with app.app_context(), service_session() as s:
        from sqlalchemy import select

        assert s.execute(select(Tariff.property_id).where(Tariff.name == name)).scalar() == group.property_id

    admin, admin_token = _sign_in(app, group, "group_admin")
    later = {**price_99, "effective_date": "2032-01-01"}
    assert admin.post(f"/tariffs/{group_plan}/versions/new", data={"csrf_token": admin_token, **later}).status_code \
        == 302
    assert _versions(app, group_plan) == 2
    # A property's plan applies only inside that property, whoever assigns it.
    assert admin.post(f"/tariffs/{dorm_plan}/assign", data={"csrf_token": admin_token,
                                                            "target": f"room:{group.room_id}"}).status_code == 404
    assert admin.post(f"/tariffs/{dorm_plan}/assign", data={"csrf_token": admin_token,
                                                            "target": f"room:{group.room2_id}"}).status_code == 302
    with app.app_context(), service_session() as s:
        with pytest.raises(ValidationError, match="another property"):
            tariffs.assign(s, group.group_id, "room", group.room_id, s.get(Tariff, dorm_plan))


# --- the tenant portal: the payment channel a form names ---------------------------------------------------------

def test_portal_pay_refuses_a_channel_of_another_group(app, client, group, other_group, monkeypatch):
    from sqlalchemy import func, select

    from meterhub.payments.models import PaymentOrder
    from tests.api.world import open_site
    from tests.payments.conftest import make_channel
    from tests.portal.conftest import SentCodes, sign_in_with_code, token_of

    codes = SentCodes(app)
    monkeypatch.setattr("meterhub.portal.auth.deliver_code",
                        lambda session, group_ids, phone, code: dict.__setitem__(codes, phone, code) or True)
    site = open_site(app, group)
    own, foreign = make_channel(app, group.group_id)[0], make_channel(app, other_group.group_id)[0]
    sign_in_with_code(client, codes, site.phone)
    path = f"/portal/a/{site.account_number}/pay"

    def orders() -> int:
        with app.app_context(), service_session() as s:
            return s.execute(select(func.count()).select_from(PaymentOrder)).scalar()

    before = orders()
    token = token_of(client.get(f"/portal/a/{site.account_number}").get_data(as_text=True))
    for channel in (foreign, 2**62, "x"):
        response = client.post(path, data={"amount": "5", "channel_id": channel, "csrf_token": token})
        assert response.status_code in (400, 404), channel
    assert orders() == before
    response = client.post(path, data={"amount": "5", "channel_id": own, "csrf_token": token})
    assert response.status_code == 302 and orders() == before + 1
