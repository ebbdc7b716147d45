"""Human names of the things people know, from a subject ``(kind, id)``: property · building · room · tenant ·
meter (or account, device, gateway). One definition for every list, alarm, command, notification and export.

    names = subject_names(session, group_id, [("meter", 1), ("account", 40)])   # one query per kind
    str(names[("meter", 1)])  # '星河购物中心 Galaxy Mall · A · 101 · 租户 Tenant 001 · ADF300 003000104730 #1'

Scoped: every query filters by ``group_id`` (and runs in the caller's session, so RLS applies as well); an id of
another group, or a deleted one, simply has no name (:func:`name_of` falls back to ``"<kind> <id>"``).
Exports streamed in SQL use :func:`meter_name_sql` / :func:`account_name_sql`, the same parts joined by the
database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

SEPARATOR = " · "
KINDS = ("meter", "account", "device", "gateway", "room", "property")
Subject = tuple[str, int]

# The tenant of a meter: the customer of the account it is bound to now.
_METER_TENANT = ("(SELECT na.customer_name FROM prepaid_meter_state ns JOIN prepaid_accounts na ON na.id = ns.account_id "
                 "WHERE ns.meter_id = nm.id AND ns.active ORDER BY ns.bound_at DESC LIMIT 1)")


@dataclass(frozen=True)
class _Parts:
    """How one kind's name is read: property, building, room, tenant and own name columns over ``source``."""

    key: str  # the id column
    columns: tuple[str, str, str, str, str]
    source: str  # FROM ... WHERE <group filter>

    def select(self) -> str:
        return f"SELECT {self.key}, {', '.join(self.columns)} FROM {self.source} AND {self.key} = ANY(:ids)"

    def joined(self, id_sql: str) -> str:
        """One SQL expression: the non-empty parts joined, for the row whose id is ``id_sql``."""
        parts = ", ".join(f"nullif(CAST({c} AS text), '')" for c in self.columns)
        return f"(SELECT concat_ws('{SEPARATOR}', {parts}) FROM {self.source} AND {self.key} = {id_sql})"


# Aliases start with n: :meth:`_Parts.joined` runs inside the callers' queries (an export's ``a`` or ``p``).
_PARTS = {
    "meter": _Parts("nm.id", ("np.name", "nb.name", "nr.number", _METER_TENANT,
                             "coalesce(nullif(nm.name, ''), nd.serial || '/' || nm.channel)"),
                    "meters nm JOIN devices nd ON nd.id = nm.device_id JOIN properties np ON np.id = nm.property_id "
                    "LEFT JOIN rooms nr ON nr.id = nm.room_id LEFT JOIN buildings nb ON nb.id = nr.building_id "
                    "WHERE nm.group_id = :g"),
    "account": _Parts("na.id", ("np.name", "nb.name", "nr.number", "na.customer_name", "na.number"),
                      "prepaid_accounts na JOIN properties np ON np.id = na.property_id LEFT JOIN rooms nr "
                      "ON nr.id = na.room_id LEFT JOIN buildings nb ON nb.id = nr.building_id WHERE na.group_id = :g"),
    "device": _Parts("nd.id", ("np.name", "NULL", "NULL", "NULL", "ng.name || ' / ' || nd.serial"),
                     "devices nd JOIN gateways ng ON ng.id = nd.gateway_id JOIN properties np ON np.id = ng.property_id "
                     "WHERE nd.group_id = :g"),
    "gateway": _Parts("ng.id", ("np.name", "NULL", "NULL", "NULL", "ng.name"),
                      "gateways ng JOIN properties np ON np.id = ng.property_id WHERE ng.group_id = :g"),
    "room": _Parts("nr.id", ("np.name", "nb.name", "nr.number", "(SELECT na.customer_name FROM prepaid_accounts na "
                            "WHERE na.room_id = nr.id AND na.status = 'open' ORDER BY na.id DESC LIMIT 1)", "NULL"),
                   "rooms nr JOIN properties np ON np.id = nr.property_id LEFT JOIN buildings nb "
                   "ON nb.id = nr.building_id WHERE nr.group_id = :g"),
    "property": _Parts("np.id", ("np.name", "NULL", "NULL", "NULL", "NULL"), "properties np WHERE np.group_id = :g"),
}


@dataclass(frozen=True)
class SubjectName:
    """Where a subject is and what it is called; ``str()`` joins the known parts with `` · ``."""

    kind: str
    id: int
    property_name: str = ""
    building: str = ""
    room: str = ""
    tenant: str = ""
    own: str = ""  # the meter's, account's, device's or gateway's own name

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in (self.property_name, self.building, self.room, self.tenant, self.own) if p)

    @property
    def place(self) -> str:
        """Building and room (``A-101``), as a cashier says it."""
        return "-".join(p for p in (self.building, self.room) if p)

    def __str__(self) -> str:
        return SEPARATOR.join(self.parts) or f"{self.kind} {self.id}"


def parse_subject_key(key: str) -> Subject | None:
    """``"meter:12"`` → ``("meter", 12)`` (an alarm's or a notification's subject key); None when malformed."""
    kind, _, ident = (key or "").partition(":")
    return (kind, int(ident)) if kind in KINDS and ident.isdecimal() else None


def subject_names(session: Session, group_id: int, subjects: Iterable[Subject | None]) -> dict[Subject, SubjectName]:
    """The names of ``subjects`` of ``group_id``: one query per kind, whatever their number."""
    wanted: dict[str, set[int]] = {}
    for subject in subjects:
        if subject is not None and subject[0] in _PARTS and subject[1] is not None:
            wanted.setdefault(subject[0], set()).add(int(subject[1]))
    found: dict[Subject, SubjectName] = {}
    for kind, ids in wanted.items():
        for row in session.execute(text(_PARTS[kind].select()), {"g": group_id, "ids": sorted(ids)}):
            found[(kind, row[0])] = SubjectName(kind, row[0], *(str(v) if v is not None else "" for v in row[1:]))
    return found


def name_of(names: dict[Subject, SubjectName], subject: Subject | None) -> str:
    """The display name of ``subject`` from :func:`subject_names` (``"meter 12"`` when it has none)."""
    if subject is None:
        return ""
    found = names.get(subject)
    return str(found) if found is not None else f"{subject[0]} {subject[1]}"


def meter_name_sql(meter_id: str) -> str:
    """A SQL expression naming the meter whose id is the SQL expression ``meter_id`` (needs ``:g`` bound)."""
    return _PARTS["meter"].joined(meter_id)


def account_name_sql(account_id: str) -> str:
    """A SQL expression naming the account whose id is the SQL expression ``account_id`` (needs ``:g`` bound)."""
    return _PARTS["account"].joined(account_id)


def subject_name_sql(meter_id: str, account_id: str, device_id: str, gateway_id: str) -> str:
    """A SQL expression naming an alarm-like row's most specific subject (needs ``:g`` bound)."""
    return (f"coalesce({meter_name_sql(meter_id)}, {account_name_sql(account_id)}, "
            f"{_PARTS['device'].joined(device_id)}, {_PARTS['gateway'].joined(gateway_id)})")
