"""Batched COPY ingest: idempotence, latest values, invalid values, unknown meters, lost connections, RLS."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from meterhub.db import service_session, use_group
from meterhub.extensions import db
from meterhub.timeseries import encoding
from meterhub.timeseries import ingest as ingest_mod
from meterhub.timeseries.columns import QUANTITY_COLUMNS
from meterhub.timeseries.ingest import Reading, ingest
from meterhub.timeseries.query import latest, readings_between

from .factories import make_fleet

T0 = datetime(2026, 3, 10, 1, 0, tzinfo=timezone.utc)


def _count(app, meter_ids) -> int:
    with app.app_context(), service_session() as s:
        return s.execute(text("SELECT count(*) FROM readings WHERE meter_id = ANY(:m)"),
                         {"m": list(meter_ids)}).scalar_one()


def test_reingest_is_idempotent_and_latest_merges(app, group):
    fleet = make_fleet(app, group, devices=1, channels=2)
    m1, m2 = fleet.meter_ids
    batch = [Reading(group.group_id, m, T0 + timedelta(minutes=30 * i), {"energy_kwh": Decimal(100 + i)})
             for i in range(3) for m in (m1, m2)]
    with app.app_context():
        first = ingest(batch)
        assert (first.received, first.stored, first.duplicates) == (6, 6, 0)
        assert first.meter_ids_by_group == {group.group_id: {m1, m2}}
        newer = Reading(group.group_id, m1, T0 + timedelta(hours=2),
                        {"power_kw": Decimal("1.25"), "relay_closed": True, "signal_dbm": -71})
        again = ingest(batch + [newer])
        assert (again.received, again.stored, again.duplicates) == (7, 1, 6)
        assert _count(app, [m1, m2]) == 7
        with service_session() as s:
            values = latest(s, [m1, m2])
    # The newest reading of m1 carried no energy: the latest energy is kept from the previous reading.
    assert values[m1].values == {"energy_kwh": Decimal("102.0000"), "power_kw": 1.25, "relay_closed": True,
                                 "signal_dbm": -71}
    assert values[m1].ts == values[m1].good_ts == T0 + timedelta(hours=2)
    assert values[m2].values == {"energy_kwh": Decimal("102.0000")}


def test_late_reading_does_not_move_latest_back(app, group):
    fleet = make_fleet(app, group)
    (meter,) = fleet.meter_ids
    with app.app_context():
        ingest([Reading(group.group_id, meter, T0 + timedelta(hours=1), {"energy_kwh": Decimal("5")})])
        ingest([Reading(group.group_id, meter, T0, {"energy_kwh": Decimal("4")})])
        with service_session() as s:
            assert latest(s, [meter])[meter].values["energy_kwh"] == Decimal("5")
            assert [r["energy_kwh"] for r in readings_between(s, meter, T0, T0 + timedelta(days=1))] == [4, 5]


def test_invalid_values_and_unknown_meters_do_not_fail_the_batch(app, group, other_group):
    fleet = make_fleet(app, group)
    (meter,) = fleet.meter_ids
    with app.app_context():
        result = ingest([
            Reading(group.group_id, meter, T0, {"energy_kwh": Decimal("NaN"), "water_m3": "abc",
                                                "voltage_a_v": Decimal("229.9"), "energy_peak_kwh": Decimal("1e20")}),
            Reading(other_group.group_id, meter, T0, {"energy_kwh": Decimal(1)}),  # meter of another group
            Reading(group.group_id, 999_999_999, T0, {"energy_kwh": Decimal(1)}),  # no such meter
        ])
        assert (result.stored, result.unmatched, result.duplicates) == (1, 2, 0)
        with service_session() as s:
            row = s.execute(text("SELECT energy_kwh, water_m3, voltage_a_v, quality, extra, group_id "
                                 "FROM readings WHERE meter_id = :m"), {"m": meter}).one()
    assert row[:4] == (None, None, 229.9, 1)
    assert row.extra == {"invalid": {"energy_kwh": "NaN", "water_m3": "abc", "energy_peak_kwh": "1E+20"}}
    assert row.group_id == group.group_id


def test_latest_takes_each_meters_newest_reading_of_the_batch_and_its_newest_good_time(app, group, other_group):
    fleet = make_fleet(app, group, devices=1, channels=2)
    m1, m2 = fleet.meter_ids
    t = [T0 + timedelta(minutes=15 * i) for i in range(4)]
    batch = [  # not in time order; the newest of m1 is suspect, and a reading claims m1 for another group
        Reading(group.group_id, m1, t[1], {"energy_kwh": Decimal(11)}),
        Reading(group.group_id, m2, t[3], {"energy_kwh": Decimal(23)}),
        Reading(group.group_id, m1, t[2], {"power_kw": 2.5}, quality=1),
        Reading(other_group.group_id, m1, t[3], {"energy_kwh": Decimal(99)}),
        Reading(group.group_id, m1, t[0], {"energy_kwh": Decimal(10)}),
        Reading(group.group_id, m2, t[2], {"energy_kwh": Decimal(22)}),
    ]
    with app.app_context():
        assert ingest(batch).unmatched == 1
        with service_session() as s:
            values = latest(s, [m1, m2])
    assert (values[m1].ts, values[m1].good_ts, values[m1].quality) == (t[2], t[1], 1)
    assert values[m1].values == {"power_kw": 2.5}
    assert (values[m2].ts, values[m2].good_ts, values[m2].values) == (t[3], t[3], {"energy_kwh": Decimal(23)})


def test_naive_timestamps_are_refused(app, group):
    with app.app_context(), pytest.raises(ValueError, match="naive timestamp"):
        ingest([Reading(group.group_id, 1, datetime(2026, 1, 1), {})])


def test_lost_connection_retries_the_batch_without_loss_or_duplicates(app, group, service_urls, monkeypatch):
    fleet = make_fleet(app, group, devices=2, channels=2)
    real_store = ingest_mod.store_encoded
    calls = []
    admin = create_engine(app.config["DATABASE_URL"], isolation_level="AUTOCOMMIT")

    def store_then_lose_connection(cursor, batch):
        result = real_store(cursor, batch)
        calls.append(result.stored)
        if len(calls) == 1:  # first attempt: the server kills our backend before the commit
            pid = cursor.connection.get_backend_pid()
            with admin.connect() as conn:
                assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        return result

    monkeypatch.setattr(ingest_mod, "store_encoded", store_then_lose_connection)
    rows = [Reading(group.group_id, m, T0 + timedelta(minutes=i), {"energy_kwh": Decimal(i)})
            for i in range(500) for m in fleet.meter_ids]
    with app.app_context():
        result = ingest(rows, batch_size=1000)
    admin.dispose()
    assert result.retries == 1 and result.batches == 2
    assert result.stored == 2000 and result.duplicates == 0
    assert _count(app, fleet.meter_ids) == 2000


def test_app_role_sees_only_its_groups_readings(app, group, other_group):
    mine = make_fleet(app, group)
    theirs = make_fleet(app, other_group)
    with app.app_context():
        ingest([Reading(group.group_id, mine.meter_ids[0], T0, {"energy_kwh": Decimal(1)}),
                Reading(other_group.group_id, theirs.meter_ids[0], T0, {"energy_kwh": Decimal(2)})])
    with app.test_request_context():
        use_group(group.group_id)
        seen = db.session.execute(text("SELECT meter_id FROM tenant_readings")).scalars().all()
        seen_latest = latest(db.session, mine.meter_ids + theirs.meter_ids)
        for sql in ("DELETE FROM readings", "SELECT 1 FROM readings", "DELETE FROM tenant_readings"):
            with pytest.raises(Exception, match="permission denied"):
                db.session.execute(text(sql))
            db.session.rollback()
            use_group(group.group_id)
        use_group(None)
    assert seen == mine.meter_ids
    assert set(seen_latest) == set(mine.meter_ids)


def test_readings_must_name_a_meter_of_their_group_checked_per_statement(app, group, other_group):
    """Migration 0012: the per-row foreign key became one check per statement; its guarantees stay. (On a
    TimescaleDB hypertable the composite foreign key stays and gives the same guarantees, pgcode 23503.)"""
    from sqlalchemy.exc import DBAPIError

    mine = make_fleet(app, group).meter_ids[0]
    theirs = make_fleet(app, other_group).meter_ids[0]
    insert = text("INSERT INTO readings (group_id, meter_id, ts, quality, source) VALUES (:g, :m, :ts, 0, 'poll')")
    with app.app_context():
        for meter_id in (theirs, 10**12):  # another group's meter; no meter at all
            with service_session() as s, pytest.raises(DBAPIError, match="not a meter of that group|fk_readings_meter_id_group_id_meters") as err:
                s.execute(insert, [{"g": group.group_id, "m": mine, "ts": T0},
                                   {"g": group.group_id, "m": meter_id, "ts": T0}])
                s.flush()
            assert err.value.orig.pgcode == "23503"
        assert _count(app, [mine, theirs]) == 0  # the whole statement was refused
        ingest([Reading(group.group_id, mine, T0, {"energy_kwh": Decimal(1)})])
        with service_session() as s, pytest.raises(DBAPIError, match="cannot change"):
            s.execute(text("UPDATE meters SET group_id = :g WHERE id = :m"), {"g": other_group.group_id, "m": mine})
        with service_session() as s:  # deleting a meter deletes its readings (the foreign key's cascade)
            s.execute(text("DELETE FROM meter_latest WHERE meter_id = :m"), {"m": mine})
            s.execute(text("DELETE FROM meters WHERE id = :m"), {"m": mine})
            s.commit()
        assert _count(app, [mine]) == 0


def test_an_all_new_batch_is_copied_straight_into_readings(app, group, monkeypatch):
    fleet = make_fleet(app, group, devices=1, channels=2)
    batch = [Reading(group.group_id, m, T0 + timedelta(minutes=30 * i), {"energy_kwh": Decimal(i)})
             for i in range(3) for m in fleet.meter_ids]
    monkeypatch.setattr(ingest_mod, "_MERGE", "SELECT 1/0")  # the general path would fail the batch
    with app.app_context():
        result = ingest(batch)
        assert (result.stored, result.duplicates, result.unmatched) == (6, 0, 0)
        assert result.meter_ids_by_group == {group.group_id: set(fleet.meter_ids)}
        assert _count(app, fleet.meter_ids) == 6


def test_a_batch_repeating_a_reading_takes_the_general_path_and_stores_it_once(app, group):
    fleet = make_fleet(app, group)
    (meter,) = fleet.meter_ids
    same = Reading(group.group_id, meter, T0, {"energy_kwh": Decimal(1)})
    with app.app_context():
        result = ingest([same, Reading(group.group_id, meter, T0 + timedelta(hours=1), {"energy_kwh": Decimal(2)}),
                         same])
    assert (result.stored, result.duplicates) == (2, 1)
    assert _count(app, [meter]) == 2


def test_a_reading_stored_by_another_path_is_not_stored_twice(app, group):
    """A reading stored without ``meter_latest`` knowing (an import): the unique key decides, not the latest values."""
    fleet = make_fleet(app, group)
    (meter,) = fleet.meter_ids
    with app.app_context():
        with service_session() as s:
            s.execute(text("INSERT INTO readings (group_id, meter_id, ts, energy_kwh, quality, source) "
                           "VALUES (:g, :m, :ts, 7, 0, 'import')"), {"g": group.group_id, "m": meter, "ts": T0})
            s.commit()
        result = ingest([Reading(group.group_id, meter, T0 + timedelta(minutes=30 * i), {"energy_kwh": Decimal(10 + i)})
                         for i in range(3)])
        assert (result.stored, result.duplicates) == (2, 1)
        with service_session() as s:
            stored = s.execute(text("SELECT energy_kwh FROM readings WHERE meter_id = :m ORDER BY ts"),
                               {"m": meter}).scalars().all()
    assert stored == [7, 11, 12]  # the first stored value stays


_VALUES = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True), st.floats(), st.integers(-10**16, 10**16), st.booleans(),
    st.decimals(min_value=-10**6, max_value=10**6, places=4), st.text(max_size=3), st.none())


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(QUANTITY_COLUMNS) + ["other_key"]), _VALUES, max_size=8))
def test_the_encoder_gives_what_the_general_formatter_gives(values):
    """Inline fast cases of ``encode_lines`` store the same values as ``_format`` (floats: the same double)."""
    (line,) = ingest_mod.encode_lines([Reading(1, 2, T0, values)])
    fields = line.split("\t")
    for key, value in values.items():
        if key not in encoding._INDEX or value is None:
            continue
        want, got = encoding._format(key, value), fields[encoding._INDEX[key]]
        if want is None:
            assert got == "\\N" and key in json.loads(fields[encoding._EXTRA].replace("\\\\", "\\"))["invalid"]
        elif key in encoding._FLOATS:
            assert float(got) == float(want)
        else:
            assert got == want
