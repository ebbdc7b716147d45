"""Sharded charging (``charge_all``): shards by account in concurrent transactions, each crediting its own
charges clearing accounts, then a sweep to revenue. Same charges as one transaction; nothing lost if the
sweep never ran."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select, text

from meterhub.commands.models import Command
from meterhub.db import service_session
from meterhub.ledger import check_ledger
from meterhub.modules.prepaid import accounts, cashier
from meterhub.modules.prepaid.charging import charge_all, charge_new_intervals
from meterhub.modules.prepaid.models import PrepaidAccount

from .conftest import EPOCH, add_meters, write_readings

D = Decimal
PAIRS = 6  # meters A_i and B_i get the same readings; A is charged in one transaction, B in shards


def _pairs(world) -> tuple[list[int], list[int], dict[int, int], dict[int, int]]:
    """PAIRS meters A and B, one account each (accounts of both parities, so both shards work); returns the
    meters and the account of each meter."""
    with world.app.app_context(), service_session() as s:
        a = add_meters(s, world.group_id, world.property_id, world.gateway_id, world.room_id, PAIRS)
        b = add_meters(s, world.group_id, world.property_id, world.gateway_id, world.room_id, PAIRS)
        write_readings(s, world.group_id, [(m, EPOCH, D(0)) for m in a + b])
    owner = {}
    with world.app.app_context(), service_session() as s:
        for i, meter in enumerate(a + b):
            account = accounts.create_account(s, world.group_id, world.property_id, [meter], customer_name=f"C{i}",
                                              alarm1="3.00", alarm2="1.00", actor="t")
            owner[meter] = account.id
            if i % PAIRS:  # the first meter of each set stays unfunded: it trips
                cashier.topup(s, world.group_id, account.id, "5.00", "cash", f"open-{account.id}", actor="t")
    return a, b, owner, {v: k for k, v in owner.items()}


def _write_round(world, a, b, t, step: int) -> None:
    rows = []
    for i, (ma, mb) in enumerate(zip(a, b, strict=True)):
        kwh = D(step * (i + 1)) * D("0.137") + D(i) / 1000  # sub-cent costs: the rounding total matters
        rows += [(ma, t, kwh), (mb, t, kwh)]
    with world.app.app_context(), service_session() as s:
        write_readings(s, world.group_id, rows)


def _charges(s, meters):
    return [tuple(r) for r in s.execute(text(
        "SELECT meter_id, interval_start, interval_end, usage, cost_exact, amount, note FROM prepaid_charges "
        "WHERE meter_id = ANY(:m) ORDER BY meter_id, interval_end"), {"m": meters}).all()]


def _money(s, g):
    """(sum of charges, revenue balances, clearing balances) of the group."""
    return s.execute(text(
        "SELECT (SELECT coalesce(sum(amount), 0) FROM prepaid_charges WHERE group_id = :g), "
        "(SELECT coalesce(sum(b.balance), 0) FROM ledger_balances b JOIN ledger_accounts a ON a.id = b.account_id "
        " WHERE a.group_id = :g AND a.kind LIKE 'revenue%'), "
        "(SELECT coalesce(sum(b.balance), 0) FROM ledger_balances b JOIN ledger_accounts a ON a.id = b.account_id "
        " WHERE a.group_id = :g AND a.kind = 'charge_clearing')"), {"g": g}).one()


def _no_interval_twice(s, g) -> bool:
    """Each charge of a meter starts where its previous one ended (no overlap, no gap)."""
    return s.execute(text(
        "SELECT meter_id FROM (SELECT meter_id, interval_start, lag(interval_end) OVER "
        "(PARTITION BY meter_id ORDER BY interval_end) AS prev_end FROM prepaid_charges WHERE group_id = :g) x "
        "WHERE prev_end IS NOT NULL AND prev_end <> interval_start"), {"g": g}).all() == []


def test_sharded_run_charges_what_a_single_run_charges(world):
    a, b, owner, _ = _pairs(world)
    g = world.group_id
    assert {owner[m] % 2 for m in b} == {0, 1}, "both shards must have accounts"
    t = EPOCH
    for step in range(1, 5):
        t += timedelta(minutes=30)
        _write_round(world, a, b, t, step)
        with world.app.app_context(), service_session() as s:
            single = charge_new_intervals(s, meter_ids=a, until=t)  # one transaction, revenue credited
        with world.app.app_context():
            sharded = charge_all(shards=2, until=t)  # everything else (B), in 2 shards
            assert len(sharded.shards) == 2 and sharded.swept == sharded.amount
            assert all(part.intervals > 0 for part in sharded.shards), "both shards charged"
        assert single.intervals == PAIRS
        with world.app.app_context(), service_session() as s:
            charged, revenue, clearing = _money(s, g)
            assert clearing == 0 and charged == revenue, "after every run: clearing swept, charges = revenue"
    with world.app.app_context(), service_session() as s:
        ca, cb = _charges(s, a), _charges(s, b)
        assert len(ca) == len(cb) == 4 * PAIRS
        pair = dict(zip(a, b, strict=True))
        assert [(pair[m], *rest) for m, *rest in ca] == cb, "same intervals, costs and booked amounts"
        assert sum(r[5] for r in ca) == sum(r[5] for r in cb) > 0
        assert _no_interval_twice(s, g)
        for ma, mb in pair.items():  # same balance, alarm level and relay commands
            acc_a, acc_b = s.get(PrepaidAccount, owner[ma]), s.get(PrepaidAccount, owner[mb])
            assert acc_a.alarm_level == acc_b.alarm_level
            cmds = [[(c.kind, c.params) for c in s.execute(select(Command).where(Command.meter_id == m)
                                                            .order_by(Command.id)).scalars()] for m in (ma, mb)]
            assert cmds[0] == cmds[1]
        assert {s.get(PrepaidAccount, owner[m]).alarm_level for m in b} >= {3, 0}  # some tripped, some fine
        balances = s.execute(text(
            "SELECT p.id, b.balance FROM prepaid_accounts p JOIN ledger_balances b ON b.account_id = p.wallet_account_id "
            "WHERE p.id = ANY(:ids)"), {"ids": list(owner.values())}).all()
        by_account = dict(balances)
        assert [by_account[owner[m]] for m in a] == [by_account[owner[m]] for m in b]
        kinds = set(s.execute(text("SELECT kind FROM ledger_accounts WHERE group_id = :g"), {"g": g}).scalars())
        assert "charge_clearing" in kinds and "revenue_electricity" in kinds
        assert check_ledger(s, g).ok


def test_crash_between_shard_commit_and_sweep_is_recovered_by_next_run(world):
    a, b, owner, _ = _pairs(world)
    g = world.group_id
    t = EPOCH + timedelta(minutes=30)
    _write_round(world, a, b, t, 1)
    # the process dies after both shards committed, before the sweep: run the shards alone
    for k in range(2):
        with world.app.app_context(), service_session() as s:
            charge_new_intervals(s, until=t, shard=(k, 2), run_key=f"charge:crashed:{k}/2")
    with world.app.app_context(), service_session() as s:
        charged, revenue, clearing = _money(s, g)
        assert charged > 0 and clearing == charged - revenue and clearing > 0  # late, not lost
        assert check_ledger(s, g).ok
    # the next run sweeps what the clearing accounts hold, with its own charges
    t += timedelta(minutes=30)
    _write_round(world, a, b, t, 2)
    with world.app.app_context():
        summary = charge_all(shards=2, until=t)
    with world.app.app_context(), service_session() as s:
        charged2, revenue2, clearing2 = _money(s, g)
        assert summary.swept >= charged2 - revenue and summary.intervals >= 2 * PAIRS
        assert clearing2 == 0 and charged2 == revenue2 and charged2 > charged
        assert _no_interval_twice(s, g)
        assert s.execute(text("SELECT count(*) FROM prepaid_charges WHERE group_id = :g"), {"g": g}).scalar() \
            == 2 * 2 * PAIRS
        sweeps = s.execute(text("SELECT t.id, sum(e.amount) FILTER (WHERE e.amount > 0) FROM ledger_transfers t "
                                "JOIN ledger_entries e ON e.transfer_id = t.id WHERE t.group_id = :g "
                                "AND t.kind = 'charge_sweep' GROUP BY t.id"), {"g": g}).all()
        assert len(sweeps) == 1 and sweeps[0][1] == charged2 - revenue  # one transfer moved old and new
        assert check_ledger(s, g).ok
    with world.app.app_context():  # nothing new: nothing charged, nothing swept
        again = charge_all(shards=2, until=t)
    assert again.intervals == 0 and again.swept == 0


def test_one_shard_credits_revenue_directly(world):
    a, b, owner, _ = _pairs(world)
    g = world.group_id
    t = EPOCH + timedelta(minutes=30)
    _write_round(world, a, b, t, 1)
    with world.app.app_context():
        summary = charge_all(shards=1, until=t)
    assert len(summary.shards) == 1 and summary.swept == 0 and summary.intervals >= 2 * PAIRS
    with world.app.app_context(), service_session() as s:
        charged, revenue, clearing = _money(s, g)
        assert charged == revenue > 0 and clearing == 0
        assert not s.execute(text("SELECT count(*) FROM ledger_accounts WHERE group_id = :g AND kind = "
                                  "'charge_clearing'"), {"g": g}).scalar()
        assert check_ledger(s, g).ok
