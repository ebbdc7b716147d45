"""Finding rooms, meters, accounts, tenants, buildings and floors by what people call them, in scope.

Every form and Excel list names things the way the console shows them — a room label ``A-310``, a meter serial
(``SN`` or ``SN/2`` for a channel of a multi-channel device), an account number, a tenant's name or phone, a
building's name, a floor as ``A/3`` (building/level) — never by database id. :func:`search` offers matches
for a picker; :func:`resolve` turns one key back into the object and refuses an unknown, ambiguous or
out-of-scope key with a message naming it; :func:`resolve_many` sorts a list into found and refused keys so a
person can see the refused ones before anything runs.

Scope: the caller's session runs under RLS for the group, and ``property_ids`` (None: every property of the
group) narrows to the operator's properties; ``property_id`` narrows to one property (a rule's, a batch's).
An object outside the scope is reported exactly like an unknown one (never revealing that it exists).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from ..errors import ValidationError
from ..i18n import _l

KINDS = ("room", "meter", "account", "tenant", "building", "floor")
LIMIT = 20

# Per kind: (key expression, label expression, property column, FROM ... WHERE group filter).
_ROOM_KEY = "b.name || '-' || r.number"
_METER_KEY = ("d.serial || CASE WHEN (SELECT count(*) FROM meters m2 WHERE m2.device_id = d.id) > 1 "
              "THEN '/' || m.channel ELSE '' END")
_SOURCES: dict[str, tuple[str, str, str, str]] = {
    "room": (_ROOM_KEY, f"concat_ws(' · ', {_ROOM_KEY}, nullif(r.name, ''), p.name)", "r.property_id",
             "rooms r JOIN buildings b ON b.id = r.building_id JOIN properties p ON p.id = r.property_id "
             "WHERE r.group_id = :g"),
    "meter": (_METER_KEY, f"concat_ws(' · ', {_METER_KEY}, nullif(m.name, ''), {_ROOM_KEY}, p.name)", "m.property_id",
              "meters m JOIN devices d ON d.id = m.device_id JOIN properties p ON p.id = m.property_id "
              "LEFT JOIN rooms r ON r.id = m.room_id LEFT JOIN buildings b ON b.id = r.building_id "
              "WHERE m.group_id = :g AND m.active"),
    "account": ("a.number", f"concat_ws(' · ', a.number, nullif(a.customer_name, ''), nullif(a.phone, ''), "
                            f"{_ROOM_KEY}, p.name)", "a.property_id",
                "prepaid_accounts a JOIN properties p ON p.id = a.property_id LEFT JOIN rooms r ON r.id = a.room_id "
                "LEFT JOIN buildings b ON b.id = r.building_id WHERE a.group_id = :g AND a.status <> 'closed'"),
    "building": ("b.name", "concat_ws(' · ', b.name, p.name)", "b.property_id",
                 "buildings b JOIN properties p ON p.id = b.property_id WHERE b.group_id = :g"),
    "floor": ("b.name || '/' || f.level", "concat_ws(' · ', b.name || '/' || f.level, nullif(f.name, ''), p.name)",
              "f.property_id",
              "floors f JOIN buildings b ON b.id = f.building_id JOIN properties p ON p.id = f.property_id "
              "WHERE f.group_id = :g"),
}
_SOURCES["tenant"] = _SOURCES["account"]  # a tenant is found through the account it holds
_SEARCH_COLUMNS = {"room": ("r.name",), "meter": ("m.name",), "account": ("a.customer_name", "a.phone"),
                   "tenant": ("a.customer_name", "a.phone"), "building": (), "floor": ("f.name",)}
_EXACT_OTHER = {"tenant": ("a.customer_name", "a.phone"), "account": ("a.phone",)}
_ID = {"room": "r.id", "meter": "m.id", "account": "a.id", "tenant": "a.id", "building": "b.id", "floor": "f.id"}


@dataclass(frozen=True)
class Found:
    """One object: its kind and id, the key people type, a longer label, its property."""

    kind: str
    id: int
    key: str
    label: str
    property_id: int


def _check(kind: str) -> tuple[str, str, str, str]:
    if kind not in _SOURCES:
        raise ValidationError(_l("Unknown kind %(kind)s: use one of %(kinds)s.", kind=kind, kinds=", ".join(KINDS)),
                              {"kind": "unknown"})
    return _SOURCES[kind]


def _scope(prop_column: str, property_ids: Iterable[int] | None, property_id: int | None,
           params: dict) -> str:
    sql = ""
    if property_ids is not None:
        sql += f" AND {prop_column} = ANY(:scope)"
        params["scope"] = sorted(property_ids) or [-1]
    if property_id is not None:
        sql += f" AND {prop_column} = :prop"
        params["prop"] = property_id
    return sql


def _rows(session: Session, kind: str, where: str, params: dict, limit: int) -> list[Found]:
    key, label, prop, source = _check(kind)
    sql = (f"SELECT {_ID[kind]}, {key}, {label}, {prop} FROM {source}{where} "
           f"ORDER BY {key} LIMIT {int(limit)}")
    return [Found(kind, row[0], row[1], row[2], row[3]) for row in session.execute(text(sql), params)]


def search(session: Session, group_id: int, kind: str, query: str, *, property_ids: Iterable[int] | None = None,
           property_id: int | None = None, limit: int = LIMIT) -> list[Found]:
    """Objects of ``kind`` whose key, name or phone contains ``query`` (case-insensitive), in scope, by key."""
    key, _, prop, _ = _check(kind)
    params: dict = {"g": group_id, "q": f"%{query.strip()}%"}
    columns = (key, *_SEARCH_COLUMNS[kind])
    where = " AND (" + " OR ".join(f"{c} ILIKE :q" for c in columns) + ")"
    return _rows(session, kind, where + _scope(prop, property_ids, property_id, params), params, limit)


def _exact(session: Session, group_id: int, kind: str, key_text: str, property_ids: Iterable[int] | None,
           property_id: int | None) -> list[Found]:
    key, _, prop, _ = _check(kind)
    params: dict = {"g": group_id, "k": key_text.strip()}
    columns = (key, *_EXACT_OTHER.get(kind, ()))
    where = " AND (" + " OR ".join(f"upper({c}) = upper(:k)" for c in columns) + ")"
    return _rows(session, kind, where + _scope(prop, property_ids, property_id, params), params, 3)


def resolve(session: Session, group_id: int, kind: str, key: str, *, property_ids: Iterable[int] | None = None,
            property_id: int | None = None) -> Found:
    """The one object ``key`` names, in scope; ValidationError (naming the key) when none or several match."""
    found = _exact(session, group_id, kind, key, property_ids, property_id) if key and key.strip() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValidationError(_l("%(key)s: no such %(what)s in your properties.", key=key, what=WHAT[kind]),
                              {kind: "unknown"})
    raise ValidationError(_l("%(key)s names several %(what)s: %(matches)s; use the full key.", key=key,
                             what=WHAT[kind], matches=", ".join(f.label for f in found)), {kind: "ambiguous"})


def resolve_many(session: Session, group_id: int, kind: str, keys: Sequence[str], *,
                 property_ids: Iterable[int] | None = None,
                 property_id: int | None = None) -> tuple[list[Found], list[tuple[str, str]]]:
    """``keys`` sorted into the objects found (first appearance, no duplicates) and the refused keys with why."""
    found: dict[int, Found] = {}
    refused: list[tuple[str, str]] = []
    for key in keys:
        if not str(key).strip():
            continue
        try:
            item = resolve(session, group_id, kind, str(key), property_ids=property_ids, property_id=property_id)
        except ValidationError as err:
            refused.append((str(key), str(err)))
            continue
        found.setdefault(item.id, item)
    return list(found.values()), refused


def exact_many(session: Session, group_id: int, kind: str, keys: Sequence[str], *,
               property_ids: Iterable[int] | None = None,
               property_id: int | None = None) -> dict[str, list[Found]]:
    """Objects of ``kind`` whose key is one of ``keys`` (case-insensitive), in scope, in one query: the upper-cased
    key → the objects it names (several: ambiguous)."""
    wanted = sorted({str(k).strip().upper() for k in keys if str(k).strip()})
    if not wanted:
        return {}
    key, _, prop, _ = _check(kind)
    params: dict = {"g": group_id, "keys": wanted}
    where = f" AND upper({key}) = ANY(:keys)" + _scope(prop, property_ids, property_id, params)
    found: dict[str, list[Found]] = {}
    for item in _rows(session, kind, where, params, len(wanted) * 3):
        found.setdefault(item.key.upper(), []).append(item)
    return found


def label_of(session: Session, group_id: int, kind: str, object_id: int | None) -> str:
    """The key people know ``object_id`` by (``""`` when it has none in the group)."""
    if object_id is None:
        return ""
    rows = _rows(session, kind, f" AND {_ID[kind]} = :id", {"g": group_id, "id": object_id}, 1)
    return rows[0].key if rows else ""


def labels_of(session: Session, group_id: int, kind: str, object_ids: Iterable[int]) -> dict[int, str]:
    """The keys of many objects at once (one query): id → key."""
    ids = sorted({int(i) for i in object_ids})
    if not ids:
        return {}
    rows = _rows(session, kind, f" AND {_ID[kind]} = ANY(:ids)", {"g": group_id, "ids": ids}, len(ids))
    return {row.id: row.key for row in rows}


def split_keys(raw: str) -> list[str]:
    """A typed list of keys: one per line, or separated by commas or semicolons (，；、 too); a key may hold spaces
    (a building named ``B 2``)."""
    for sep in ",;，；、\t":
        raw = raw.replace(sep, "\n")
    return [k.strip() for k in raw.split("\n") if k.strip()]


WHAT = {"room": _l("room"), "meter": _l("meter"), "account": _l("account"), "tenant": _l("tenant"),
        "building": _l("building"), "floor": _l("floor")}
