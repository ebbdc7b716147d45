"""The chaos suite's meter-side invariant (issue 22, item 6) fails on a missing or out-of-order write.

Fast: a simulated meter channel and the check itself, without a platform (``test_chaos.py`` runs it under faults).
"""

from __future__ import annotations

import random
from decimal import Decimal
from types import SimpleNamespace

import pytest

from meterhub.simulator.model import ElectricChannel
from tests.chaos.scenarios import check_meter_side_writes

BOOKED = [Decimal("1.01"), Decimal("1.02"), Decimal("1.03")]


def _platform(channel: ElectricChannel, account_count: int = 3) -> SimpleNamespace:
    side = SimpleNamespace(sim=SimpleNamespace(channel=channel), booked=list(BOOKED), account_id=1,
                           accepted=lambda: list(channel.accepted_topups))
    return SimpleNamespace(meter_side=side, sql=lambda query, **params: [(account_count,)])


def test_the_simulator_records_only_the_writes_it_accepted_in_order():
    channel = ElectricChannel(random.Random(1))
    assert channel.topup(Decimal("1.01"), 1)
    assert not channel.topup(Decimal("1.03"), 3)  # skips a count: refused, not recorded
    assert not channel.topup(Decimal("1.01"), 1)  # a repeat: refused
    assert channel.topup(Decimal("1.02"), 2)
    assert channel.accepted_topups == [(1, Decimal("1.01")), (2, Decimal("1.02"))]


def test_all_writes_in_booking_order_pass():
    channel = ElectricChannel(random.Random(1))
    for count, amount in enumerate(BOOKED, start=1):
        channel.topup(amount, count)
    check_meter_side_writes(_platform(channel), timeout=0.5)


def test_a_missing_write_fails():
    channel = ElectricChannel(random.Random(1))
    channel.topup(BOOKED[0], 1)  # counts 2 and 3 never reached the meter
    with pytest.raises(AssertionError, match="the meter's count is 1"):
        check_meter_side_writes(_platform(channel), timeout=0.5)


def test_amounts_out_of_booking_order_fail():
    channel = ElectricChannel(random.Random(1))
    for count, amount in enumerate([BOOKED[0], BOOKED[2], BOOKED[1]], start=1):
        channel.topup(amount, count)
    with pytest.raises(AssertionError, match="booked in order"):
        check_meter_side_writes(_platform(channel), timeout=0.5)


def test_a_booking_the_account_does_not_count_fails():
    channel = ElectricChannel(random.Random(1))
    with pytest.raises(AssertionError, match="the account counts 2"):
        check_meter_side_writes(_platform(channel, account_count=2), timeout=0.5)
