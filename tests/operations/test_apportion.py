"""Apportioning with hand-worked numbers: ratio, area, usage (each with a remainder cent), a sub-meter offline
in the period, an account closed mid-period, refusal to re-post, reversal and correction."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from meterhub.db import service_session
from meterhub.ledger import balance_of, check_ledger
from meterhub.ledger.models import Transfer
from meterhub.modules.apportion.models import ApportionShare
from meterhub.modules.apportion.posting import AlreadyPosted, post_run, reverse_run, share_key
from meterhub.modules.apportion.rules import create_rule
from meterhub.modules.apportion.statement import compute, month_bounds
from meterhub.modules.prepaid.models import PrepaidAccount
from meterhub.tenants.lookup import label_of

from .conftest import close_on, local, readings

D = Decimal
JAN = month_bounds("Asia/Shanghai", 2026, 1)
FEB = month_bounds("Asia/Shanghai", 2026, 2)


def january(site, subs=("10", "20", "40"), parent="170"):
    """Parent 0 → 170 kWh, sub-meters (the accounts' meters) 10, 20, 40: public usage 100 kWh = 100.00."""
    rows = [(site.parent, local(2026, 1, 1), "0"), (site.parent, local(2026, 2, 1), parent)]
    for meter, used in zip(site.meters, subs, strict=True):
        rows += [(meter, local(2026, 1, 1), "0"), (meter, local(2026, 2, 1), used)]
    readings(site, rows)


def rule(site, method, remainder_index, ratios=("1", "1", "1"), mode="deduct"):
    with site.app.app_context(), service_session() as s:
        return create_rule(s, site.group_id, site.property_id, name=f"R {method} {site.parent}",
                           parent_meter_id=site.parent, sub_meter_ids=site.meters, method=method,
                           tariff_id=site.tariff_id, members=list(zip(site.accounts, ratios, strict=True)),
                           remainder_account_id=site.accounts[remainder_index], post_mode=mode, actor="t").id


def amounts(site, rule_id, period=JAN):
    with site.app.app_context(), service_session() as s:
        st = compute(s, site.group_id, rule_id, *period)
        return st, [line.amount for line in st.lines]


def balances(site):
    with site.app.app_context(), service_session() as s:
        return [balance_of(s, s.get(PrepaidAccount, a).wallet_account_id) for a in site.accounts]


@pytest.mark.parametrize("method, remainder_index, expected", [
    ("ratio", 2, ["33.33", "33.33", "33.34"]),   # 100/3 = 33.333… each, 0.01 left → 3rd
    ("area", 0, ["16.67", "33.33", "50.00"]),    # 10:20:30 m² → 16.666…, 33.333…, 50 → 99.99, 0.01 → 1st
    ("usage", 1, ["14.28", "28.58", "57.14"]),   # 10:20:40 kWh → 14.2857, 28.5714, 57.1428 → 99.99, 0.01 → 2nd
])
def test_methods_with_remainder_cent(site, method, remainder_index, expected):
    january(site)
    rule_id = rule(site, method, remainder_index)
    st, got = amounts(site, rule_id)
    assert st.usage == D("100") and st.amount == D("100.00")
    assert got == [D(x) for x in expected] and sum(got) == st.amount
    assert st.lines[remainder_index].remainder == D("0.01")
    before = balances(site)
    with site.app.app_context(), service_session() as s:
        run = post_run(s, site.group_id, rule_id, *JAN, actor="t")
        assert run.amount == D("100.00")
        keys = [t.idempotency_key for t in s.execute(select(Transfer).where(Transfer.kind == "apportion",
                                                                            Transfer.group_id == site.group_id)).scalars()]
        assert sorted(keys) == sorted(share_key(rule_id, *JAN, a, 0) for a in site.accounts)
        assert check_ledger(s, site.group_id).ok
    assert [b - a for a, b in zip(balances(site), before, strict=True)] == got


def test_repost_refused_reversal_then_correction(site):
    january(site)
    rule_id = rule(site, "ratio", 2)
    before = balances(site)
    with site.app.app_context(), service_session() as s:
        run_id = post_run(s, site.group_id, rule_id, *JAN, actor="t").id
    with site.app.app_context(), service_session() as s, pytest.raises(AlreadyPosted):
        post_run(s, site.group_id, rule_id, *JAN, actor="t")
    with site.app.app_context(), service_session() as s, pytest.raises(AlreadyPosted):  # overlapping period
        post_run(s, site.group_id, rule_id, local(2026, 1, 15), local(2026, 2, 15), actor="t")
    with site.app.app_context(), service_session() as s:
        reverse_run(s, site.group_id, run_id, "wrong parent reading", actor="t")
    assert balances(site) == before
    readings(site, [(site.parent, local(2026, 1, 31, 23), "170")])  # a correction run, new keys (:c1)
    with site.app.app_context(), service_session() as s:
        run = post_run(s, site.group_id, rule_id, *JAN, actor="t")
        assert run.correction == 1
        assert s.execute(select(Transfer).where(Transfer.idempotency_key == share_key(
            rule_id, *JAN, site.accounts[0], 1))).scalar() is not None
        assert check_ledger(s, site.group_id).ok
    assert sum(b - a for a, b in zip(balances(site), before, strict=True)) == D("100.00")


def test_sub_meter_offline_counts_to_last_reading_and_self_corrects(site):
    """Rule: an offline sub-meter counts up to its last good reading; the rest shows up when it reports again."""
    rows = [(site.parent, local(2026, 1, 1), "0"), (site.parent, local(2026, 2, 1), "170"),
            (site.parent, local(2026, 3, 1), "300")]
    for meter, jan, feb in zip(site.meters[:2], ("10", "20"), ("20", "40"), strict=True):
        rows += [(meter, local(2026, 1, 1), "0"), (meter, local(2026, 2, 1), jan), (meter, local(2026, 3, 1), feb)]
    offline = site.meters[2]
    rows += [(offline, local(2026, 1, 1), "0"), (offline, local(2026, 1, 10), "15"), (offline, local(2026, 3, 1), "60")]
    readings(site, rows)
    rule_id = rule(site, "ratio", 0)
    jan, _ = amounts(site, rule_id, JAN)
    feb, _ = amounts(site, rule_id, FEB)
    sub = {u.meter_id: u for u in jan.subs}[offline]
    with site.app.app_context(), service_session() as s:
        serial = label_of(s, site.group_id, "meter", offline)  # warnings name the meter as the console shows it
    assert sub.offline and sub.usage == D("15") and any(serial in str(w) for w in jan.warnings)
    assert jan.usage == D("125")  # 170 − 10 − 20 − 15
    assert feb.usage == D("55")  # 130 − 10 − 20 − 45 (the offline meter's Jan–Feb usage counted now)
    assert jan.usage + feb.usage == D("300") - D("20") - D("40") - D("60")  # nothing lost or counted twice


def test_account_closed_mid_period_pays_its_days_and_is_billed(site):
    january(site)
    rule_id = rule(site, "ratio", 2)
    close_on(site, site.accounts[1], local(2026, 1, 16))  # open 15 of 31 days
    st, got = amounts(site, rule_id)
    # weights 1, 15/31, 1 (total 77/31): 40.2597…, 19.4805…, 40.2597… → 40.25, 19.48, 40.25 (+0.02 → 3rd)
    assert got == [D("40.25"), D("19.48"), D("40.27")] and sum(got) == D("100.00")
    with site.app.app_context(), service_session() as s:
        run = post_run(s, site.group_id, rule_id, *JAN, actor="t")
        shares = {sh.account_id: sh for sh in s.execute(select(ApportionShare).where(
            ApportionShare.run_id == run.id)).scalars()}
        closed = shares[site.accounts[1]]
        assert closed.disposition == "billed" and closed.transfer_id is None and closed.amount == D("19.48")
        assert shares[site.accounts[0]].disposition == "deducted"


def test_parent_without_readings_is_refused(site):
    rule_id = rule(site, "ratio", 0)
    from meterhub.errors import ValidationError

    with site.app.app_context(), service_session() as s, pytest.raises(ValidationError, match="parent meter"):
        compute(s, site.group_id, rule_id, *JAN)
