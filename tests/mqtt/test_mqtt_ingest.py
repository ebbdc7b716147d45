"""MQTT ingest against a real Mosquitto: ack after commit, dedupe, invalid payloads, broker restart."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import text

from meterhub.db import service_session
from meterhub.mqtt_ingest.payload import InvalidPayload, parse
from tests.timeseries.factories import make_fleet

from .conftest import publisher

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=timezone.utc)


def payload(seq: int, energy: str = "1.5", address: str = "1", channel: int = 1, **extra) -> bytes:
    ts = (T0 + timedelta(minutes=seq)).isoformat()
    return json.dumps({"seq": seq, "ts": ts, "readings": [
        {"address": address, "channel": channel, "values": {"energy_kwh": energy, "power_kw": 0.42, **extra}}]}).encode()


def stored(app, meter_ids) -> list[tuple]:
    with app.app_context(), service_session() as s:
        return s.execute(text("SELECT meter_id, ts, energy_kwh FROM readings WHERE meter_id = ANY(:m) ORDER BY ts"),
                         {"m": list(meter_ids)}).all()


def test_valid_payload_is_stored_before_it_is_acked(app, group, broker, ingest_worker):
    fleet = make_fleet(app, group, devices=1, channels=2)
    seen_at_ack = []
    real_ack = ingest_worker.worker.client.ack

    def ack(mid, qos):  # the reading must already be committed when the broker hears the PUBACK
        seen_at_ack.append(len(stored(app, fleet.meter_ids)))
        return real_ack(mid, qos)

    ingest_worker.worker.client.ack = ack
    pub = publisher(broker, broker.gateway(fleet.gateway_id))
    pub.publish(f"meterhub/{fleet.client_id}/readings", payload(1, "12.5", channel=2), qos=1).wait_for_publish(5)
    ingest_worker.wait_acked(1)
    pub.disconnect()
    assert seen_at_ack == [1]
    assert stored(app, fleet.meter_ids) == [(fleet.meter_ids[1], T0 + timedelta(minutes=1), Decimal("12.5"))]
    with app.app_context(), service_session() as s:
        assert s.execute(text("SELECT last_seen_at IS NOT NULL FROM gateways WHERE id = :g"),
                         {"g": fleet.gateway_id}).scalar()


def test_duplicate_sequence_is_not_stored_twice(app, group, broker, ingest_worker):
    fleet = make_fleet(app, group)
    pub = publisher(broker, broker.gateway(fleet.gateway_id))
    topic = f"meterhub/{fleet.client_id}/readings"
    pub.publish(topic, payload(7, "10"), qos=1).wait_for_publish(5)
    ingest_worker.wait_acked(1)
    pub.publish(topic, payload(7, "99"), qos=1).wait_for_publish(5)  # same seq, even with other content
    pub.publish(topic, payload(8, "11"), qos=1).wait_for_publish(5)
    ingest_worker.wait_acked(3)
    pub.disconnect()
    assert [r[2] for r in stored(app, fleet.meter_ids)] == [Decimal("10"), Decimal("11")]
    assert ingest_worker.worker.stats["duplicate_messages"] == 1


def test_invalid_payloads_are_counted_acked_and_do_not_stop_ingest(app, group, broker, ingest_worker):
    fleet = make_fleet(app, group)
    gone = make_fleet(app, group)  # signed in, then disabled: the broker still knows it, the ingest does not
    pub = publisher(broker, broker.gateway(fleet.gateway_id))
    gone_pub = publisher(broker, broker.gateway(gone.gateway_id))
    with app.app_context(), service_session() as s:
        s.execute(text("UPDATE gateways SET enabled = false WHERE id = :g"), {"g": gone.gateway_id})
    topic = f"meterhub/{fleet.client_id}/readings"
    for bad in (b"not json", b"[1, 2]", json.dumps({"seq": -1, "readings": []}).encode(),
                json.dumps({"seq": 1, "readings": [{"address": "1", "values": {"energy_kwh": 1}}]}).encode()):
        pub.publish(topic, bad, qos=1).wait_for_publish(5)
    gone_pub.publish(f"meterhub/{gone.client_id}/readings", payload(1), qos=1).wait_for_publish(5)
    pub.publish(topic, payload(2, "5"), qos=1).wait_for_publish(5)
    ingest_worker.wait_acked(6)
    pub.disconnect()
    gone_pub.disconnect()
    assert [r[2] for r in stored(app, fleet.meter_ids)] == [Decimal("5")]
    counts = {k.decode(): int(v) for k, v in ingest_worker.redis.hgetall(ingest_worker.key).items()}
    assert counts == {"bad_json": 2, "bad_seq": 1, "bad_ts": 1, "unknown_gateway": 1}


def test_broker_restart_mid_stream_loses_nothing(app, group, broker, ingest_worker):
    fleet = make_fleet(app, group, devices=4, channels=1)
    pub = publisher(broker, broker.gateway(fleet.gateway_id))
    total = 400
    infos = []
    for seq in range(total):
        device = seq % 4 + 1
        infos.append(pub.publish(f"meterhub/{fleet.client_id}/readings", payload(seq, str(seq), str(device)), qos=1))
        if seq == total // 2:
            broker.restart()
    for info in infos:
        info.wait_for_publish(30)
    ingest_worker.wait_stored(total, timeout=30)  # after the restart some messages come twice
    pub.disconnect()
    rows = stored(app, fleet.meter_ids)
    assert sorted(int(r[2]) for r in rows) == list(range(total))
    with app.app_context(), service_session() as s:
        assert s.execute(text("SELECT count(*) FROM mqtt_sequences WHERE gateway_id = :g"),
                         {"g": fleet.gateway_id}).scalar() == total


def test_parse_rejects_what_it_cannot_store():
    msg = parse("meterhub/gw-1/readings", payload(3, "1.25", address="12", channel=2, relay_closed=True))
    assert msg.client_id == "gw-1" and msg.seq == 3
    assert msg.items[0].values == {"energy_kwh": Decimal("1.25"), "power_kw": Decimal("0.42"), "relay_closed": True}
    for topic, body, reason in (("meterhub/gw-1/other", payload(1), "bad_topic"),
                                ("meterhub/gw-1/readings", b'{"seq": true, "readings": []}', "bad_seq"),
                                ("meterhub/gw-1/readings", b'{"seq": 1, "readings": [{"address": "1", '
                                 b'"ts": "2026-01-01T00:00:00", "values": {"a": 1}}]}', "bad_ts")):
        try:
            parse(topic, body)
        except InvalidPayload as err:
            assert err.reason == reason
        else:
            raise AssertionError(f"{body!r} was accepted")
