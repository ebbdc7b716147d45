"""The set-based charging statement: every new interval of every active meter, priced in one query.

It implements ``meterhub.tariffs.pricing.price_interval`` and ``ledger.money.booked_increment`` in SQL
(tests compare both). Output: temp table ``_chg``, one row per (meter, interval).
"""

BUILD = """
CREATE TEMP TABLE _chg ON COMMIT DROP AS
WITH st AS (
  SELECT s.meter_id, s.group_id, s.account_id, s.property_id, s.utility, s.last_ts, s.last_total,
         s.last_sharp, s.last_peak, s.last_flat, s.last_valley, s.cost_exact_total, s.period_start,
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
), ver AS (
  SELECT tv.*, lead(tv.effective_from) OVER (PARTITION BY tv.tariff_id ORDER BY tv.effective_from) AS effective_to
  FROM tariff_versions tv WHERE tv.tariff_id IN (SELECT DISTINCT tariff_id FROM st)
), tiers AS (
  SELECT tt.version_id, tt.lower, tt.surcharge,
         lead(tt.lower) OVER (PARTITION BY tt.version_id ORDER BY tt.lower) AS upper
  FROM tariff_tiers tt WHERE tt.version_id IN (SELECT id FROM ver)
), seq AS (
  SELECT st.meter_id, st.last_ts AS ts, st.last_total AS total, st.last_sharp AS sharp, st.last_peak AS peak,
         st.last_flat AS flat, st.last_valley AS valley, true AS is_state
  FROM st
  UNION ALL
  SELECT st.meter_id, x.ts, CASE WHEN st.utility = 'water' THEN x.water_m3 ELSE x.energy_kwh END,
         x.energy_sharp_kwh, x.energy_peak_kwh, x.energy_flat_kwh, x.energy_valley_kwh, false
  FROM st JOIN readings x ON x.meter_id = st.meter_id AND x.ts > st.last_ts AND x.ts <= :until
  WHERE x.quality = 0 AND (CASE WHEN st.utility = 'water' THEN x.water_m3 ELSE x.energy_kwh END) IS NOT NULL
), seqmax AS (
  -- counters only count up: usage is the increase of each counter's running maximum, so a reading that
  -- goes backwards (glitch or reset) costs nothing and its recovery costs nothing extra.
  SELECT meter_id, is_state, ts, total AS raw_total, max(total) OVER w AS total, max(sharp) OVER w AS sharp,
         max(peak) OVER w AS peak, max(flat) OVER w AS flat, max(valley) OVER w AS valley
  FROM seq WINDOW w AS (PARTITION BY meter_id ORDER BY ts ROWS UNBOUNDED PRECEDING)
), iv AS (
  SELECT meter_id, is_state, raw_total, ts AS t1, total AS total1, sharp AS sharp1, peak AS peak1, flat AS flat1,
         valley AS valley1, lag(ts) OVER w AS t0, lag(total) OVER w AS total0, lag(sharp) OVER w AS sharp0,
         lag(peak) OVER w AS peak0, lag(flat) OVER w AS flat0, lag(valley) OVER w AS valley0
  FROM seqmax WINDOW w AS (PARTITION BY meter_id ORDER BY ts)
), iv2 AS (
  SELECT iv.*, st.group_id, st.account_id, st.property_id, st.utility, st.tz, st.cost_exact_total,
         st.period_start AS state_period, st.period_usage AS state_period_usage,
         v.id AS version_id, v.kind, v.tier_period, v.price_sharp, v.price_peak, v.price_flat, v.price_valley,
         (iv.t0 AT TIME ZONE st.tz) AS lt0, (iv.t1 AT TIME ZONE st.tz) AS lt1,
         CASE WHEN iv.total0 IS NULL THEN 'baseline' WHEN iv.raw_total < iv.total0 THEN 'reset' ELSE '' END AS note,
         (iv.sharp0 IS NOT NULL AND iv.peak0 IS NOT NULL AND iv.flat0 IS NOT NULL AND iv.valley0 IS NOT NULL
          AND iv.sharp1 >= iv.sharp0 AND iv.peak1 >= iv.peak0 AND iv.flat1 >= iv.flat0
          AND iv.valley1 >= iv.valley0 AND iv.total1 >= iv.total0) AS has_regs
  FROM iv JOIN st ON st.meter_id = iv.meter_id
  LEFT JOIN ver v ON v.tariff_id = st.tariff_id AND v.effective_from <= iv.t0
       AND (v.effective_to IS NULL OR iv.t0 < v.effective_to)
  WHERE NOT iv.is_state
), iv3 AS (
  SELECT iv2.*, (has_regs AND kind IN ('tou', 'tiered_tou')) AS use_regs,
         date_trunc(CASE WHEN tier_period = 'year' THEN 'year' ELSE 'month' END, lt0)::date AS period,
         bool_and(version_id IS NOT NULL OR note <> '') OVER (PARTITION BY meter_id) AS priceable
  FROM iv2
), pcum AS MATERIALIZED (
  -- seconds of each rate from local midnight to the start of each period (periods tile the day)
  SELECT tp.version_id, tp.start_minute * 60 AS s0, tp.end_minute * 60 AS s1, tp.rate,
         coalesce(sum(CASE WHEN tp.rate = 'sharp' THEN tp.end_minute - tp.start_minute END) OVER w, 0) * 60 AS c_sharp,
         coalesce(sum(CASE WHEN tp.rate = 'peak' THEN tp.end_minute - tp.start_minute END) OVER w, 0) * 60 AS c_peak,
         coalesce(sum(CASE WHEN tp.rate = 'flat' THEN tp.end_minute - tp.start_minute END) OVER w, 0) * 60 AS c_flat,
         coalesce(sum(CASE WHEN tp.rate = 'valley' THEN tp.end_minute - tp.start_minute END) OVER w, 0) * 60
           AS c_valley,
         sum(CASE WHEN tp.rate = 'sharp' THEN tp.end_minute - tp.start_minute ELSE 0 END) OVER v * 60 AS d_sharp,
         sum(CASE WHEN tp.rate = 'peak' THEN tp.end_minute - tp.start_minute ELSE 0 END) OVER v * 60 AS d_peak,
         sum(CASE WHEN tp.rate = 'flat' THEN tp.end_minute - tp.start_minute ELSE 0 END) OVER v * 60 AS d_flat,
         sum(CASE WHEN tp.rate = 'valley' THEN tp.end_minute - tp.start_minute ELSE 0 END) OVER v * 60 AS d_valley
  FROM tariff_periods tp WHERE tp.version_id IN (SELECT id FROM ver)
  WINDOW w AS (PARTITION BY tp.version_id ORDER BY tp.start_minute ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
         v AS (PARTITION BY tp.version_id)
), ends AS MATERIALIZED (
  -- both ends of every time-split interval: local time and seconds since local midnight. MATERIALIZED (with
  -- pcum): otherwise the planner nests the VALUES lateral inside a loop over intervals x periods (1.4M rows
  -- for 100k meters and 14 periods); computed once, the ends are joined to pcum by version (~1 s less).
  SELECT i.meter_id, i.t1, i.version_id, e.sign, e.lt, e.x
  FROM iv3 i
  CROSS JOIN LATERAL (VALUES (-1, i.lt0, extract(epoch FROM i.lt0 - date_trunc('day', i.lt0))),
                             (1, i.lt1, extract(epoch FROM i.lt1 - date_trunc('day', i.lt1)))) e(sign, lt, x)
  WHERE i.priceable AND i.note = '' AND i.kind IN ('tou', 'tiered_tou') AND NOT i.use_regs
), g AS (
  -- G_r(lt): seconds of rate r from local 2000-01-01 00:00 to lt; an interval's seconds per rate are
  -- G_r(lt1) - G_r(lt0) (the same as summing its overlaps with every period of every day it spans).
  SELECT e.meter_id, e.t1, e.sign,
         (e.lt::date - DATE '2000-01-01') * p.d_sharp + p.c_sharp
           + CASE WHEN p.rate = 'sharp' THEN e.x - p.s0 ELSE 0 END AS g_sharp,
         (e.lt::date - DATE '2000-01-01') * p.d_peak + p.c_peak
           + CASE WHEN p.rate = 'peak' THEN e.x - p.s0 ELSE 0 END AS g_peak,
         (e.lt::date - DATE '2000-01-01') * p.d_flat + p.c_flat
           + CASE WHEN p.rate = 'flat' THEN e.x - p.s0 ELSE 0 END AS g_flat,
         (e.lt::date - DATE '2000-01-01') * p.d_valley + p.c_valley
           + CASE WHEN p.rate = 'valley' THEN e.x - p.s0 ELSE 0 END AS g_valley
  FROM ends e JOIN pcum p ON p.version_id = e.version_id AND e.x >= p.s0 AND e.x < p.s1
), split AS (
  SELECT meter_id, t1, sum(sign * g_sharp) AS s_sharp, sum(sign * g_peak) AS s_peak, sum(sign * g_flat) AS s_flat,
         sum(sign * g_valley) AS s_valley,
         sum(sign * (g_sharp + g_peak + g_flat + g_valley)) AS s_total
  FROM g GROUP BY meter_id, t1
), used AS (
  SELECT i.*, s.s_sharp, s.s_peak, s.s_flat, s.s_valley, s.s_total,
         CASE WHEN i.note <> '' THEN 0
              WHEN i.use_regs THEN (i.sharp1 - i.sharp0) + (i.peak1 - i.peak0) + (i.flat1 - i.flat0)
                                   + (i.valley1 - i.valley0)
              ELSE i.total1 - i.total0 END AS usage
  FROM iv3 i LEFT JOIN split s ON s.meter_id = i.meter_id AND s.t1 = i.t1
  WHERE i.priceable
), cum AS (
  SELECT u.*,
         (CASE WHEN u.state_period = u.period THEN u.state_period_usage ELSE 0 END)
         + coalesce(sum(u.usage) OVER (PARTITION BY u.meter_id, u.period ORDER BY u.t1
                                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS cum_before
  FROM used u
), tier_cost AS (
  SELECT c.meter_id, c.t1,
         sum(greatest(0, least(c.cum_before + c.usage, coalesce(t.upper, c.cum_before + c.usage))
                         - greatest(c.cum_before, t.lower)) * t.surcharge) AS tier_cost
  FROM cum c JOIN tiers t ON t.version_id = c.version_id
  WHERE c.kind IN ('tiered', 'tiered_tou') AND c.note = ''
  GROUP BY c.meter_id, c.t1
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
         + coalesce(tc.tier_cost, 0), 8) AS cost_exact
  FROM cum c LEFT JOIN tier_cost tc ON tc.meter_id = c.meter_id AND tc.t1 = c.t1
), booked AS (
  SELECT p.*,
         p.cost_exact_total + coalesce(sum(p.cost_exact) OVER (PARTITION BY p.meter_id ORDER BY p.t1
                              ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS exact_before
  FROM priced p
)
SELECT group_id, meter_id, account_id, property_id, utility, version_id, t0, t1, note, usage,
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
       total1, raw_total, sharp1, peak1, flat1, valley1, period, cum_before + usage AS cum_after
FROM booked
"""

REVENUE_ACCOUNTS = """
INSERT INTO ledger_accounts (group_id, property_id, kind, code, name, created_at)
SELECT DISTINCT group_id, property_id, 'revenue_' || utility, 'revenue_' || utility || ':' || property_id,
       'Revenue ' || utility || ' property ' || property_id, now()
FROM _chg
ON CONFLICT (group_id, code) DO NOTHING
"""

TRANSFERS = """
INSERT INTO ledger_transfers (group_id, kind, idempotency_key, request_hash, amount, channel, reason, actor,
                              detail, created_at)
SELECT group_id, 'charge', :run_key || ':' || group_id, md5(:run_key || ':' || group_id), -sum(amount), '',
       'consumption', 'charging', jsonb_build_object('intervals', count(*)), now()
FROM _chg GROUP BY group_id HAVING bool_or(amount <> 0)
"""

CHARGES = """
INSERT INTO prepaid_charges (group_id, meter_id, account_id, transfer_id, tariff_version_id, interval_start,
                             interval_end, usage, usage_sharp, usage_peak, usage_flat, usage_valley, cost_exact,
                             amount, note, created_at)
SELECT c.group_id, c.meter_id, c.account_id, t.id, c.version_id, c.t0, c.t1, c.usage, c.usage_sharp,
       c.usage_peak, c.usage_flat, c.usage_valley, c.cost_exact, c.amount, c.note, now()
FROM _chg c LEFT JOIN ledger_transfers t ON t.group_id = c.group_id AND t.idempotency_key = :run_key || ':' || c.group_id
"""

ENTRIES = """
INSERT INTO ledger_entries (group_id, transfer_id, account_id, amount, created_at)
SELECT c.group_id, t.id, a.wallet_account_id, -sum(c.amount), now()
FROM _chg c JOIN prepaid_accounts a ON a.id = c.account_id
JOIN ledger_transfers t ON t.group_id = c.group_id AND t.idempotency_key = :run_key || ':' || c.group_id
GROUP BY c.group_id, t.id, a.wallet_account_id HAVING sum(c.amount) <> 0
UNION ALL
SELECT c.group_id, t.id, la.id, sum(c.amount), now()
FROM _chg c JOIN ledger_accounts la ON la.group_id = c.group_id
  AND la.code = 'revenue_' || c.utility || ':' || c.property_id
JOIN ledger_transfers t ON t.group_id = c.group_id AND t.idempotency_key = :run_key || ':' || c.group_id
GROUP BY c.group_id, t.id, la.id HAVING sum(c.amount) <> 0
"""

STATE = """
UPDATE prepaid_meter_state s SET last_ts = l.t1, last_total = l.total1, last_sharp = l.sharp1,
       last_peak = l.peak1, last_flat = l.flat1, last_valley = l.valley1, cost_exact_total = l.exact_after,
       charged_total = s.charged_total + l.booked, period_start = l.period, period_usage = l.cum_after
FROM (SELECT DISTINCT ON (meter_id) meter_id, t1, total1, sharp1, peak1, flat1, valley1, exact_after, period,
             cum_after, sum(amount) OVER (PARTITION BY meter_id) AS booked
      FROM _chg ORDER BY meter_id, t1 DESC) l
WHERE s.meter_id = l.meter_id
"""

RESET_EVENTS = """
INSERT INTO prepaid_events (group_id, account_id, meter_id, kind, detail, at)
SELECT group_id, account_id, meter_id, 'counter_reset',
       jsonb_build_object('interval_end', t1, 'reading', raw_total), now()
FROM _chg WHERE note = 'reset'
"""

SUMMARY = """
SELECT c.group_id, count(*) AS intervals, sum(c.amount) AS amount, min(t.id) AS transfer_id,
       array_agg(DISTINCT c.account_id) FILTER (WHERE c.amount <> 0) AS accounts
FROM _chg c LEFT JOIN ledger_transfers t ON t.group_id = c.group_id AND t.idempotency_key = :run_key || ':' || c.group_id
GROUP BY c.group_id
"""
