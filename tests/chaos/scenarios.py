"""The faults, each under load, with what recovery means; each returns what it measured (seconds).

Shared by ``tests/chaos/test_chaos.py`` (which asserts the bounds below) and ``bench/bench_recovery.py``
(which reports the times). Every scenario starts API top-ups first and checks the money afterwards: every
idempotency key booked exactly once, every cached balance equal to the sum of its entries.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from tests.chaos.harness import MqttReadings, Platform, TopUps, wait_until

KILLED = ("web", "worker-commands", "worker-periodic", "worker-default", "worker-reports", "scheduler", "collector",
          "mqtt-ingest")
RESTART_S = 10.0  # a killed process runs again (the supervisor's first back-off is 1 s)
API_AGAIN_S = 30.0  # the restarted web process answers (it imports the whole app first)
READ_AGAIN_S = 20.0  # every polled meter has a new stored reading after a fault ends
JOBS_AGAIN_S = 40.0  # periodic jobs (liveness every 15 s) run again
COMMAND_S = 60.0  # a queued command is confirmed (dispatch every 15 s, then the bus)
FIRST_COMMAND_S = 120.0  # the same right after start: the demo seed's relay commands (one per meter) go first
METER_SIDE_S = 120.0  # every booked top-up is on the meter-side meter (dispatch every 15 s, re-sync after a fault)
COLLECTOR_DOWN_S = 60.0  # a stuck collector's gateways read "collector down"
MQTT_STORED_S = 30.0  # every reading acknowledged across a broker restart is stored (ingest reconnects 1-5 s)


def check_money(load: TopUps, platform: Platform) -> None:
    """Each idempotency key once; balances equal entries; no meter charged twice for any stretch of time."""
    assert load.booked, "no top-up was booked during the scenario"
    assert load.applied_once() == {}, "an idempotency key was applied other than once"
    report = platform.ledger_report()
    assert report.ok, report
    overlaps = platform.sql(
        "SELECT meter_id, interval_start FROM (SELECT meter_id, interval_start, lag(interval_end) OVER "
        "(PARTITION BY meter_id ORDER BY interval_start) AS previous_end FROM prepaid_charges) c "
        "WHERE previous_end > interval_start LIMIT 5")
    assert not overlaps, f"overlapping charge intervals: {overlaps}"
    check_meter_side_writes(platform)


def check_meter_side_writes(platform: Platform, timeout: float = METER_SIDE_S) -> float:
    """Every top-up booked for the meter-side meter's account is on the meter, each written once, in booking order:
    its purchase count equals the number of top-ups booked, and its record of accepted writes reads purchase counts
    1, 2, 3, … with the booked amounts in booking order."""
    side = platform.meter_side
    assert side is not None and side.booked, "no top-up was booked for the meter-side meter"
    booked = platform.sql("SELECT purchase_count FROM prepaid_accounts WHERE id = :a", a=side.account_id)[0][0]
    assert booked == len(side.booked), f"the account counts {booked} top-ups, the load booked {len(side.booked)}"
    try:
        took = wait_until(lambda: side.sim.channel.purchase_count >= len(side.booked), timeout,
                          f"all {len(side.booked)} top-ups on the meter-side meter")
    except AssertionError as err:
        raise AssertionError(f"{err}; the meter's count is {side.sim.channel.purchase_count}, its accepted writes "
                             f"{side.accepted()}") from None
    expected = [(count, amount) for count, amount in enumerate(side.booked, start=1)]
    assert side.sim.channel.purchase_count == len(side.booked), (side.sim.channel.purchase_count, len(side.booked))
    assert side.accepted() == expected, f"writes on the meter {side.accepted()} != booked in order {expected}"
    return took


def check_no_orphans(platform: Platform, timeout: float = 60.0) -> float:
    """No command left ``sent`` and no export left ``running`` for more than a minute."""
    return wait_until(lambda: not platform.sql(
        "SELECT 1 FROM commands WHERE state = 'sent' AND sent_at < now() - interval '60 seconds' UNION ALL "
        "SELECT 1 FROM report_exports WHERE status = 'running' AND created_at < now() - interval '60 seconds'"),
        timeout, "no command stuck sent and no export stuck running past a minute")


def all_meters_read_after(platform: Platform, meters: set[int], epoch: float, timeout: float) -> float:
    """Seconds until every one of ``meters`` has a polled reading stored after ``epoch``."""
    def done() -> bool:
        missing = meters - platform.meters_read_between(epoch, time.time() + 60)
        done.missing = missing  # type: ignore[attr-defined]
        return not missing

    try:
        return wait_until(done, timeout, "every polled meter read again")
    except AssertionError as err:
        raise AssertionError(f"{err}; not read: {sorted(getattr(done, 'missing', meters))}") from None


def liveness_job_ran_after(platform: Platform, epoch: float, timeout: float) -> float:
    """The collector liveness job (scheduler -> Redis -> default worker -> database) ran after ``epoch``."""
    return wait_until(lambda: platform.sql("SELECT min(collector_seen_at) > to_timestamp(:t) FROM gateways "
                                           "WHERE collector_state IS NOT NULL", t=epoch)[0][0], timeout,
                      "the periodic liveness job ran again")


def command_confirmed(platform: Platform, timeout: float = COMMAND_S) -> float:
    """Queue a read-now through the API and wait until it is confirmed."""
    meter = platform.polled_meters()[0]
    status, body = platform.api("POST", f"/meters/{meter}/commands", {"kind": "read_now"})
    assert status == 202, (status, body)
    command_id = body["id"]
    return wait_until(lambda: platform.sql("SELECT state FROM commands WHERE id = :i", i=command_id)[0][0]
                      == "confirmed", timeout, f"command {command_id} confirmed")


def kill_each_process(platform: Platform) -> dict[str, Any]:
    """kill -9 every supervised child kind at once; each must run again and do its work."""
    out: dict[str, Any] = {}
    with TopUps(platform) as load:
        before = {name: platform.pid(name) for name in KILLED}
        meters = set(platform.polled_meters())
        killed_at = time.time()
        for name in KILLED:
            platform.kill(name)
        back: dict[str, float] = {}

        def all_back() -> bool:  # each one's time from the kill, noticed as it happens
            for name in KILLED:
                if name not in back and platform.pid(name) != before[name] and platform.alive(name):
                    back[name] = time.time() - killed_at
            return len(back) == len(KILLED)

        try:
            wait_until(all_back, RESTART_S, "every killed process restarted", step=0.1)
        except AssertionError as err:
            raise AssertionError(f"{err}; not restarted: {sorted(set(KILLED) - set(back))}") from None
        out.update({f"{name}_restart_s": round(seconds, 2) for name, seconds in back.items()})
        account = load.accounts[0]
        wait_until(lambda: platform.api("GET", f"/accounts/{account}/topups")[0] == 200, API_AGAIN_S,
                   "the API answers again")
        out["api_again_s"] = round(time.time() - killed_at, 2)
        out["readings_again_s"] = round(all_meters_read_after(platform, meters, killed_at, READ_AGAIN_S), 2)
        out["periodic_jobs_again_s"] = round(liveness_job_ran_after(platform, killed_at, JOBS_AGAIN_S), 2)
        out["command_confirmed_s"] = round(command_confirmed(platform, FIRST_COMMAND_S), 2)
    check_money(load, platform)
    check_no_orphans(platform)
    events = platform.sql("SELECT process, event FROM process_events WHERE at >= to_timestamp(:t)", t=killed_at)
    for name in KILLED:
        assert (name, "exited") in events and (name, "restarted") in events, (name, events)
    out["topups"] = len(load.booked)
    out["meter_side_writes"] = len(platform.meter_side.booked) if platform.meter_side else 0
    return out


def restart_postgres(platform: Platform, down_s: float = 6.0) -> dict[str, Any]:
    """PostgreSQL stops for ``down_s``: nothing exits, readings polled meanwhile are stored afterwards."""
    restarts = {name: platform.restarts(name) for name in KILLED}
    meters = set(platform.polled_meters())
    with TopUps(platform) as load:
        stopped, started = platform.restart_postgres(down_s)
        out = {"postgres_down_s": round(started - stopped, 1)}
        out["readings_again_s"] = round(all_meters_read_after(platform, meters, started, READ_AGAIN_S), 2)
        # polled while the database was down, buffered, stored once it was back
        missing = meters - platform.meters_read_between(stopped + 1, started - 1)
        assert not missing, f"meters whose readings polled during the outage were lost: {sorted(missing)}"
        out["periodic_jobs_again_s"] = round(liveness_job_ran_after(platform, started, JOBS_AGAIN_S), 2)
        out["command_confirmed_s"] = round(command_confirmed(platform), 2)
    check_money(load, platform)
    check_no_orphans(platform)
    assert {name: platform.restarts(name) for name in KILLED} == restarts, "a process died of the outage"
    out["topups"], out["topup_retries"] = len(load.booked), load.failures
    out["meter_side_writes"] = len(platform.meter_side.booked) if platform.meter_side else 0
    return out


def restart_redis(platform: Platform, down_s: float = 4.0) -> dict[str, Any]:
    """Redis stops for ``down_s``: nothing exits, polling never pauses, jobs and commands run again."""
    restarts = {name: platform.restarts(name) for name in KILLED}
    meters = set(platform.polled_meters())
    with TopUps(platform) as load:
        stopped, started = platform.restart_redis(down_s)
        out = {"redis_down_s": round(started - stopped, 1)}
        missing = meters - platform.meters_read_between(stopped + 1, started - 1)
        assert not missing, f"meters not polled while Redis was down: {sorted(missing)}"
        out["periodic_jobs_again_s"] = round(liveness_job_ran_after(platform, started, JOBS_AGAIN_S), 2)
        out["command_confirmed_s"] = round(command_confirmed(platform), 2)
    check_money(load, platform)
    assert {name: platform.restarts(name) for name in KILLED} == restarts, "a process died of the outage"
    out["topups"], out["topup_retries"] = len(load.booked), load.failures
    return out


def stuck_collector(platform: Platform) -> dict[str, Any]:
    """A collector frozen (SIGSTOP) is seen as "collector down", not "gateway offline"; SIGCONT heals it."""
    pid = platform.kill("collector", signal.SIGSTOP)
    frozen_at = time.time()
    try:
        took = wait_until(lambda: {r[0] for r in platform.sql(
            "SELECT collector_state FROM gateways WHERE collector_state IS NOT NULL")} == {"down"},
            COLLECTOR_DOWN_S, "gateways marked collector down")
        statuses = {r[0] for r in platform.sql("SELECT status FROM gateways WHERE collector_state = 'down'")}
        assert "offline" not in statuses, "a stuck collector must not read as an offline gateway"
        events = platform.sql("SELECT count(*) FROM health_events WHERE event = 'collector_down' "
                              "AND at >= to_timestamp(:t)", t=frozen_at)[0][0]
        assert events >= 1
    finally:
        import os

        os.kill(pid, signal.SIGCONT)
    resumed = time.time()
    back = wait_until(lambda: {r[0] for r in platform.sql(
        "SELECT collector_state FROM gateways WHERE collector_state IS NOT NULL")} == {"polling"},
        JOBS_AGAIN_S, "gateways polling again")
    return {"collector_down_seen_s": round(took, 2), "collector_up_seen_s": round(back, 2),
            "frozen_s": round(resumed - frozen_at, 1)}


def hung_gateways(platform: Platform, hang_s: float = 12.0) -> dict[str, Any]:
    """Every gateway hangs (simulators SIGSTOPped, connections open, nothing answers) while commands wait on
    them: periodic jobs go on, and every meter is read again soon after the gateways come back."""
    meters = set(platform.polled_meters())
    pid = platform.kill("simulators", signal.SIGSTOP)
    hung_at = time.time()
    try:
        for meter in sorted(meters)[:6]:  # commands that wait on the hung buses
            platform.api("POST", f"/meters/{meter}/commands", {"kind": "read_now"})
        during = liveness_job_ran_after(platform, hung_at, JOBS_AGAIN_S)
        time.sleep(max(0.0, hung_at + hang_s - time.time()))
    finally:
        import os

        os.kill(pid, signal.SIGCONT)
    resumed = time.time()
    again = all_meters_read_after(platform, meters, resumed, READ_AGAIN_S)
    return {"periodic_jobs_during_hang_s": round(during, 2), "readings_after_hang_s": round(again, 2),
            "hung_s": round(resumed - hung_at, 1)}


def restart_mqtt_broker(platform: Platform, down_s: float = 4.0) -> dict[str, Any]:
    """The MQTT broker is killed (kill -9) and started again while a gateway publishes QoS 1 readings: the ingest
    reconnects by itself (nothing is restarted), every reading published before, during and after is stored once
    (those the broker acknowledged before dying come from its journal), and money goes on."""
    restarts = {name: platform.restarts(name) for name in KILLED}
    gateway = platform.mqtt_gateway()
    meter = gateway[2]

    def stored() -> list[Any]:
        return platform.sql("SELECT ts FROM readings WHERE meter_id = :m ORDER BY ts", m=meter)

    with TopUps(platform) as load, MqttReadings(platform, gateway) as readings:
        wait_until(lambda: len(stored()) >= 10, MQTT_STORED_S, "the gateway's readings are stored")
        killed, started = platform.restart_mqtt(down_s)
        before_restart = readings.acked
        wait_until(lambda: readings.acked >= before_restart + 20, MQTT_STORED_S,
                   "the gateway publishes again after the restart")
    published = readings.acked
    took = wait_until(lambda: len(stored()) >= published, MQTT_STORED_S, f"all {published} readings stored")
    rows = stored()
    expected = {readings.start_ts + seq for seq in range(1, published + 1)}
    assert {round(r[0].timestamp()) for r in rows} == {round(t) for t in expected}, "a reading lost or foreign"
    assert len(rows) == published, "a reading stored twice"
    check_money(load, platform)
    assert {name: platform.restarts(name) for name in KILLED} == restarts, "a process died of the broker restart"
    return {"mqtt_down_s": round(started - killed, 1), "mqtt_readings": published,
            "mqtt_stored_after_s": round(took, 2), "topups": len(load.booked)}
