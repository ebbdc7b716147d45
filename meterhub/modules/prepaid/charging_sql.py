"""The set-based charging statement: every new interval of every active meter, priced in one query.

It implements ``meterhub.tariffs.pricing.price_interval`` and ``ledger.money.booked_increment`` in SQL
(tests compare both). Output: temp table ``_chg``, one row per (meter, interval).
"""

MINUTE_US = 60_000_000  # rate codes in the day arrays: 1 sharp, 2 peak, 3 flat, 4 valley


def _rate_us(code: int) -> str:
    """Microseconds of rate ``code`` in the interval: G(lt1) - G(lt0), G(lt) = microseconds of the rate from local
    2000-01-01 00:00 to lt = whole days + whole minutes of the day before lt + lt's own minute if of that rate."""
    def g(end: int) -> str:
        return (f"i.d{end} * i.c{code}[1441] * {MINUTE_US} + i.c{code}[i.m{end} + 1] * {MINUTE_US}"
                f" + CASE WHEN i.mr[i.m{end} + 1] = {code} THEN i.f{end} ELSE 0 END")
    return f"({g(1)}) - ({g(0)})"


BUILD = """
CREATE TEMP TABLE _chg ON COMMIT DROP AS
WITH st AS MATERIALIZED (
  SELECT s.meter_id, s.group_id, s.account_id, a.wallet_account_id, s.property_id, s.utility, s.last_ts,
         s.last_total, s.last_sharp, s.last_peak, s.last_flat, s.last_valley, s.cost_exact_total, s.period_start,
         s.period_usage, p.timezone AS tz,
         coalesce(am.tariff_id, ar.tariff_id, ab.tariff_id, ap.tariff_id) AS tariff_id  -- most specific wins
  FROM prepaid_meter_state s
  JOIN prepaid_accounts a ON a.id = s.account_id AND a.status = 'open'
  JOIN meters m ON m.id = s.meter_id
  JOIN properties p ON p.id = s.property_id
  LEFT JOIN rooms r ON r.id = m.room_id
  LEFT JOIN tariff_assignments am ON am.scope = 'meter' AND am.scope_id = s.meter_id AND am.utility = s.utility
       AND am.group_id = s.group_id
  LEFT JOIN tariff_assignments ar ON ar.scope = 'room' AND ar.scope_id = m.room_id AND ar.utility = s.utility
       AND ar.group_id = s.group_id
  LEFT JOIN tariff_assignments ab ON ab.scope = 'building' AND ab.scope_id = r.building_id
       AND ab.utility = s.utility AND ab.group_id = s.group_id
  LEFT JOIN tariff_assignments ap ON ap.scope = 'property' AND ap.scope_id = s.property_id
       AND ap.utility = s.utility AND ap.group_id = s.group_id
  WHERE s.active AND (CAST(:meter_ids AS bigint[]) IS NULL OR s.meter_id = ANY(CAST(:meter_ids AS bigint[])))
    AND s.account_id %% CAST(:shards AS int) = CAST(:shard AS int)  -- a shard: one wallet in one shard only
), ver AS MATERIALIZED (
  -- The versions in use. A TOU version's day as arrays over its minutes (periods are whole minutes and tile
  -- the day): mr[k + 1] is the rate code of minute k (1 sharp, 2 peak, 3 flat, 4 valley), c<code>[k + 1] the
  -- minutes of that rate before minute k (c<code>[1441]: per day). Tiers as arrays (threshold, next
  -- threshold, surcharge). Each interval is then priced from its own row: no join with periods or tiers
  -- and no aggregation over 100k intervals x 14 periods.
  SELECT tv.id, tv.tariff_id, tv.effective_from, tv.kind, tv.tier_period, tv.price_sharp, tv.price_peak,
         tv.price_flat, tv.price_valley,
         lead(tv.effective_from) OVER (PARTITION BY tv.tariff_id ORDER BY tv.effective_from) AS effective_to,
         d.mr, d.c1, d.c2, d.c3, d.c4, t.t_lower, t.t_upper, t.t_surcharge
  FROM tariff_versions tv
  LEFT JOIN LATERAL (
    SELECT array_agg(x.r ORDER BY x.k) AS mr,
           '{0}'::int[] || array_agg(x.n1 ORDER BY x.k) AS c1, '{0}'::int[] || array_agg(x.n2 ORDER BY x.k) AS c2,
           '{0}'::int[] || array_agg(x.n3 ORDER BY x.k) AS c3, '{0}'::int[] || array_agg(x.n4 ORDER BY x.k) AS c4
    FROM (SELECT k, r, count(*) FILTER (WHERE r = 1) OVER w AS n1, count(*) FILTER (WHERE r = 2) OVER w AS n2,
                 count(*) FILTER (WHERE r = 3) OVER w AS n3, count(*) FILTER (WHERE r = 4) OVER w AS n4
          FROM (SELECT k, CASE tp.rate WHEN 'sharp' THEN 1 WHEN 'peak' THEN 2 WHEN 'flat' THEN 3 ELSE 4 END AS r
                FROM tariff_periods tp CROSS JOIN LATERAL generate_series(tp.start_minute, tp.end_minute - 1) k
                WHERE tp.version_id = tv.id AND tv.kind IN ('tou', 'tiered_tou')) m
          WINDOW w AS (ORDER BY k ROWS UNBOUNDED PRECEDING)) x
    HAVING count(*) = 1440 AND count(DISTINCT x.k) = 1440
  ) d ON tv.kind IN ('tou', 'tiered_tou')
  LEFT JOIN LATERAL (
    SELECT array_agg(tt.lower ORDER BY tt.lower) AS t_lower, array_agg(tt.upper ORDER BY tt.lower) AS t_upper,
           array_agg(tt.surcharge ORDER BY tt.lower) AS t_surcharge
    FROM (SELECT lower, surcharge, lead(lower) OVER (ORDER BY lower) AS upper FROM tariff_tiers
          WHERE version_id = tv.id AND tv.kind IN ('tiered', 'tiered_tou')) tt
  ) t ON tv.kind IN ('tiered', 'tiered_tou')
  WHERE tv.tariff_id IN (SELECT tariff_id FROM st)
), iv AS (
  -- The new readings of each meter in order, each row carrying its meter's state. Counters only count up:
  -- usage is the increase of each counter's running maximum (starting from the charged state), so a reading
  -- that goes backwards (glitch or reset) costs nothing and its recovery costs nothing extra. An interval
  -- runs from the previous reading (the charged state for the first one) to this one.
  SELECT st.meter_id, st.group_id, st.account_id, st.wallet_account_id, st.property_id, st.utility, st.tz,
         st.tariff_id, st.cost_exact_total, st.period_start AS state_period, st.period_usage AS state_period_usage,
         x.total AS raw_total, x.ts AS t1, coalesce(lag(x.ts) OVER w, st.last_ts) AS t0,
         greatest(st.last_total, max(x.total) OVER w1) AS total1, greatest(st.last_total, max(x.total) OVER w0) AS total0,
         greatest(st.last_sharp, max(x.sharp) OVER w1) AS sharp1, greatest(st.last_sharp, max(x.sharp) OVER w0) AS sharp0,
         greatest(st.last_peak, max(x.peak) OVER w1) AS peak1, greatest(st.last_peak, max(x.peak) OVER w0) AS peak0,
         greatest(st.last_flat, max(x.flat) OVER w1) AS flat1, greatest(st.last_flat, max(x.flat) OVER w0) AS flat0,
         greatest(st.last_valley, max(x.valley) OVER w1) AS valley1,
         greatest(st.last_valley, max(x.valley) OVER w0) AS valley0,
         lead(x.ts) OVER w IS NULL AS is_last  -- the meter's last interval carries its new state
  FROM st JOIN LATERAL (
    SELECT r.ts, CASE WHEN st.utility = 'water' THEN r.water_m3 ELSE r.energy_kwh END AS total,
           r.energy_sharp_kwh AS sharp, r.energy_peak_kwh AS peak, r.energy_flat_kwh AS flat,
           r.energy_valley_kwh AS valley
    FROM tenant_readings r WHERE r.meter_id = st.meter_id AND r.ts > st.last_ts AND r.ts <= :until AND r.quality = 0
  ) x ON x.total IS NOT NULL
  WINDOW w AS (PARTITION BY st.meter_id ORDER BY x.ts), w1 AS (w ROWS UNBOUNDED PRECEDING),
         w0 AS (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
), iv2 AS (
  SELECT iv.*, v.id AS version_id, v.kind, v.tier_period, v.price_sharp, v.price_peak, v.price_flat,
         v.price_valley, v.mr, v.c1, v.c2, v.c3, v.c4, v.t_lower, v.t_upper, v.t_surcharge,
         (iv.t0 AT TIME ZONE iv.tz) AS lt0, (iv.t1 AT TIME ZONE iv.tz) AS lt1,
         CASE WHEN iv.total0 IS NULL THEN 'baseline' WHEN iv.raw_total < iv.total0 THEN 'reset' ELSE '' END AS note,
         (iv.sharp0 IS NOT NULL AND iv.peak0 IS NOT NULL AND iv.flat0 IS NOT NULL AND iv.valley0 IS NOT NULL
          AND iv.sharp1 >= iv.sharp0 AND iv.peak1 >= iv.peak0 AND iv.flat1 >= iv.flat0
          AND iv.valley1 >= iv.valley0 AND iv.total1 >= iv.total0) AS has_regs
  FROM iv LEFT JOIN ver v ON v.tariff_id = iv.tariff_id AND v.effective_from <= iv.t0
       AND (v.effective_to IS NULL OR iv.t0 < v.effective_to)
  OFFSET 0  -- a fence: computed once per row (an inlined subquery re-evaluates an expression at every use)
), iv3 AS (
  -- both ends of the interval as local days since 2000-01-01, minute of the day and microseconds into that
  -- minute (integers: exact; a time of day in float8 seconds is far finer than a microsecond)
  SELECT iv2.*, (has_regs AND kind IN ('tou', 'tiered_tou')) AS use_regs,
         date_trunc(CASE WHEN tier_period = 'year' THEN 'year' ELSE 'month' END, lt0)::date AS period,
         (lt0::date - DATE '2000-01-01')::bigint AS d0, (lt1::date - DATE '2000-01-01')::bigint AS d1,
         round(date_part('epoch', lt0::time) * 1000000)::bigint AS u0,
         round(date_part('epoch', lt1::time) * 1000000)::bigint AS u1
  FROM iv2 OFFSET 0
), used AS (
  SELECT i.meter_id, i.group_id, i.account_id, i.wallet_account_id, i.property_id, i.utility, i.cost_exact_total,
         i.state_period, i.state_period_usage, i.raw_total, i.t0, i.t1, i.total0, i.total1, i.sharp0, i.sharp1,
         i.peak0, i.peak1, i.flat0, i.flat1, i.valley0, i.valley1, i.version_id, i.kind, i.price_sharp,
         i.price_peak, i.price_flat, i.price_valley, i.t_lower, i.t_upper, i.t_surcharge, i.note, i.use_regs,
         i.period, i.is_last, t.s_sharp, t.s_peak, t.s_flat, t.s_valley, t.s_sharp + t.s_peak + t.s_flat + t.s_valley AS s_total,
         CASE WHEN i.note <> '' THEN 0
              WHEN i.use_regs THEN (i.sharp1 - i.sharp0) + (i.peak1 - i.peak0) + (i.flat1 - i.flat0)
                                   + (i.valley1 - i.valley0)
              ELSE i.total1 - i.total0 END AS usage
  FROM (SELECT iv3.*, u0 / %(minute)s AS m0, u0 %% %(minute)s AS f0, u1 / %(minute)s AS m1,
               u1 %% %(minute)s AS f1 FROM iv3 OFFSET 0) i
  LEFT JOIN LATERAL (SELECT %(s_sharp)s AS s_sharp, %(s_peak)s AS s_peak, %(s_flat)s AS s_flat,
                            %(s_valley)s AS s_valley) t
       ON i.kind IN ('tou', 'tiered_tou') AND NOT i.use_regs AND i.note = '' AND i.mr IS NOT NULL
), cum AS (
  SELECT u.*,
         (CASE WHEN u.state_period = u.period THEN u.state_period_usage ELSE 0 END)
         + coalesce(sum(u.usage) OVER (PARTITION BY u.meter_id, u.period ORDER BY u.t1
                                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS cum_before,
         -- a meter is charged only if every new interval of it has a price (or costs nothing)
         bool_and(u.version_id IS NOT NULL OR u.note <> '') OVER (PARTITION BY u.meter_id) AS priceable
  FROM used u
), priced AS (
  SELECT c.*,
         round(CASE
           WHEN c.note <> '' THEN 0
           WHEN c.use_regs THEN (c.sharp1 - c.sharp0) * c.price_sharp + (c.peak1 - c.peak0) * c.price_peak
                                + (c.flat1 - c.flat0) * c.price_flat + (c.valley1 - c.valley0) * c.price_valley
           WHEN c.kind IN ('tou', 'tiered_tou') THEN c.usage * (coalesce(c.s_sharp, 0) * c.price_sharp
                + coalesce(c.s_peak, 0) * c.price_peak + coalesce(c.s_flat, 0) * c.price_flat
                + coalesce(c.s_valley, 0) * c.price_valley) / c.s_total
           ELSE c.usage * c.price_flat END
         + CASE WHEN c.kind IN ('tiered', 'tiered_tou') AND c.note = '' THEN coalesce(
             (SELECT sum(greatest(0, least(c.cum_before + c.usage, coalesce(t.upper, c.cum_before + c.usage))
                                     - greatest(c.cum_before, t.lower)) * t.surcharge)
              FROM unnest(c.t_lower, c.t_upper, c.t_surcharge) AS t(lower, upper, surcharge)), 0)
           ELSE 0 END, 8) AS cost_exact
  FROM cum c WHERE c.priceable
  OFFSET 0  -- computed once per row
), booked AS (
  SELECT p.*,
         p.cost_exact_total + coalesce(sum(p.cost_exact) OVER w, 0) AS exact_before
  FROM priced p WINDOW w AS (PARTITION BY p.meter_id ORDER BY p.t1 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
)
SELECT group_id, meter_id, account_id, wallet_account_id, property_id, utility, version_id, t0, t1, note, usage,
       CASE WHEN use_regs THEN sharp1 - sharp0 WHEN s_total > 0 THEN round(usage * s_sharp / s_total, 4) END
         AS usage_sharp,
       CASE WHEN use_regs THEN peak1 - peak0 WHEN s_total > 0 THEN round(usage * s_peak / s_total, 4) END
         AS usage_peak,
       CASE WHEN use_regs THEN flat1 - flat0 WHEN s_total > 0 THEN round(usage * s_flat / s_total, 4)
            WHEN kind IN ('flat', 'tiered') THEN usage END AS usage_flat,
       CASE WHEN use_regs THEN valley1 - valley0 WHEN s_total > 0 THEN round(usage * s_valley / s_total, 4) END
         AS usage_valley,
       cost_exact, exact_before + cost_exact AS exact_after,
       round(exact_before + cost_exact, 2) - round(exact_before, 2) AS amount,
       total1, raw_total, sharp1, peak1, flat1, valley1, period, cum_before + usage AS cum_after, is_last
FROM booked
""" % {"minute": MINUTE_US, "s_sharp": _rate_us(1), "s_peak": _rate_us(2), "s_flat": _rate_us(3),
       "s_valley": _rate_us(4)}

# Where a run credits its charges: the revenue account of each utility and property (one transaction at a
# time: the single-transaction path), or the shard's own charges clearing account (shard k of a sharded
# run), so that concurrent shards never update the same ledger_balances row; the sweep (SWEEP_*) moves
# the clearing balances to revenue after the shards commit.
REVENUE_CODE = "'revenue_' || utility || ':' || property_id"
CLEARING_CODE = "'charge_clearing:' || utility || ':' || property_id || ':' || CAST(:shard AS int)"

CREDIT_ACCOUNTS = {
    "revenue": """
INSERT INTO ledger_accounts (group_id, property_id, kind, code, name, created_at)
SELECT DISTINCT group_id, property_id, 'revenue_' || utility, """ + REVENUE_CODE + """,
       'Revenue ' || utility || ' property ' || property_id, now()
FROM _chg
ON CONFLICT (group_id, code) DO NOTHING
""",
    "clearing": """
INSERT INTO ledger_accounts (group_id, property_id, kind, code, name, created_at)
SELECT DISTINCT group_id, property_id, 'charge_clearing', """ + CLEARING_CODE + """,
       'Charges clearing ' || utility || ' property ' || property_id || ' shard ' || CAST(:shard AS int), now()
FROM _chg
ON CONFLICT (group_id, code) DO NOTHING
"""}

TRANSFERS = """
INSERT INTO ledger_transfers (group_id, kind, idempotency_key, request_hash, amount, channel, reason, actor,
                              detail, created_at)
SELECT group_id, 'charge', :run_key || ':' || group_id, md5(:run_key || ':' || group_id), -sum(amount), '',
       'consumption', 'charging', jsonb_build_object('intervals', count(*)), now()
FROM _chg GROUP BY group_id HAVING bool_or(amount <> 0)
"""

# the run's transfer of each group, looked up once per group (not a text key built for every row)
RUN_TRANSFERS = """run_transfers AS (
  SELECT t.group_id, t.id FROM (SELECT DISTINCT group_id FROM _chg) g
  JOIN ledger_transfers t ON t.group_id = g.group_id AND t.idempotency_key = :run_key || ':' || g.group_id
)"""

CHARGES = """
WITH """ + RUN_TRANSFERS + """
INSERT INTO prepaid_charges (group_id, meter_id, account_id, transfer_id, tariff_version_id, interval_start,
                             interval_end, usage, usage_sharp, usage_peak, usage_flat, usage_valley, cost_exact,
                             amount, note, created_at)
SELECT c.group_id, c.meter_id, c.account_id, t.id, c.version_id, c.t0, c.t1, c.usage, c.usage_sharp,
       c.usage_peak, c.usage_flat, c.usage_valley, c.cost_exact, c.amount, c.note, now()
FROM _chg c LEFT JOIN run_transfers t ON t.group_id = c.group_id
"""

ENTRIES_SQL = """
WITH w AS (  -- aggregated first, then joined: one row per wallet and per credited account
  SELECT group_id, wallet_account_id, -sum(amount) AS amount FROM _chg GROUP BY group_id, wallet_account_id
), r AS (
  SELECT group_id, %s AS code, sum(amount) AS amount
  FROM _chg GROUP BY group_id, utility, property_id
)
INSERT INTO ledger_entries (group_id, transfer_id, account_id, amount, created_at)
SELECT w.group_id, t.id, w.wallet_account_id, w.amount, now()
FROM w JOIN ledger_transfers t ON t.group_id = w.group_id AND t.idempotency_key = :run_key || ':' || w.group_id
WHERE w.amount <> 0
UNION ALL
SELECT r.group_id, t.id, la.id, r.amount, now()
FROM r JOIN ledger_accounts la ON la.group_id = r.group_id AND la.code = r.code
JOIN ledger_transfers t ON t.group_id = r.group_id AND t.idempotency_key = :run_key || ':' || r.group_id
WHERE r.amount <> 0
"""
ENTRIES = {"revenue": ENTRIES_SQL % REVENUE_CODE, "clearing": ENTRIES_SQL % CLEARING_CODE}

# The meter's last interval carries its new state. The amounts booked by the run telescope (docs/money.md):
# their sum is round2(exact total after) - round2(exact total before).
STATE = """
UPDATE prepaid_meter_state s SET last_ts = l.t1, last_total = l.total1, last_sharp = l.sharp1,
       last_peak = l.peak1, last_flat = l.flat1, last_valley = l.valley1, cost_exact_total = l.exact_after,
       charged_total = s.charged_total + round(l.exact_after, 2) - round(s.cost_exact_total, 2),
       period_start = l.period, period_usage = l.cum_after
FROM _chg l
WHERE l.is_last AND s.meter_id = l.meter_id
"""

RESET_EVENTS = """
INSERT INTO prepaid_events (group_id, account_id, meter_id, kind, detail, at)
SELECT group_id, account_id, meter_id, 'counter_reset',
       jsonb_build_object('interval_end', t1, 'reading', raw_total), now()
FROM _chg WHERE note = 'reset'
"""

SUMMARY = """
WITH """ + RUN_TRANSFERS + """
SELECT c.group_id, count(*) AS intervals, sum(c.amount) AS amount, min(t.id) AS transfer_id,
       array_agg(DISTINCT c.account_id) FILTER (WHERE c.amount <> 0) AS accounts
FROM _chg c LEFT JOIN run_transfers t ON t.group_id = c.group_id
GROUP BY c.group_id
"""

# The sweep: every charges clearing account's balance to the revenue account of its utility and property,
# one transfer per group (kind charge_sweep, no wallet side). Locked rows: the clearing balances.
SWEEP_BALANCES = """
SELECT a.group_id, a.id AS account_id, a.property_id, split_part(a.code, ':', 2) AS utility, b.balance
FROM ledger_accounts a JOIN ledger_balances b ON b.account_id = a.id
WHERE a.kind = 'charge_clearing' AND b.balance <> 0
ORDER BY a.group_id, a.id
FOR UPDATE OF b
"""

SWEEP_REVENUE_ACCOUNTS = """
INSERT INTO ledger_accounts (group_id, property_id, kind, code, name, created_at)
SELECT DISTINCT g, p, 'revenue_' || u, 'revenue_' || u || ':' || p, 'Revenue ' || u || ' property ' || p, now()
FROM unnest(CAST(:groups AS bigint[]), CAST(:properties AS bigint[]), CAST(:utilities AS text[])) x(g, p, u)
ON CONFLICT (group_id, code) DO NOTHING
"""

SWEEP_TRANSFERS = """
INSERT INTO ledger_transfers (group_id, kind, idempotency_key, request_hash, amount, channel, reason, actor,
                              detail, created_at)
SELECT g, 'charge_sweep', :key || ':' || g, md5(:key || ':' || g), 0, '', 'charges clearing to revenue',
       'charging', jsonb_build_object('accounts', count(*), 'amount', sum(b)), now()
FROM unnest(CAST(:groups AS bigint[]), CAST(:balances AS numeric[])) x(g, b)
GROUP BY g
RETURNING group_id, id
"""

SWEEP_ENTRIES = """
WITH x AS (
  SELECT * FROM unnest(CAST(:groups AS bigint[]), CAST(:accounts AS bigint[]), CAST(:properties AS bigint[]),
                       CAST(:utilities AS text[]), CAST(:balances AS numeric[])) x(g, a, p, u, b)
), t AS (
  SELECT group_id, id FROM ledger_transfers
  WHERE group_id = ANY(CAST(:groups AS bigint[])) AND idempotency_key IN (SELECT DISTINCT :key || ':' || g FROM x)
), r AS (
  SELECT g, 'revenue_' || u || ':' || p AS code, sum(b) AS amount FROM x GROUP BY g, u, p
)
INSERT INTO ledger_entries (group_id, transfer_id, account_id, amount, created_at)
SELECT x.g, t.id, x.a, -x.b, now() FROM x JOIN t ON t.group_id = x.g
UNION ALL
SELECT r.g, t.id, la.id, r.amount, now()
FROM r JOIN t ON t.group_id = r.g JOIN ledger_accounts la ON la.group_id = r.g AND la.code = r.code
WHERE r.amount <> 0
"""
