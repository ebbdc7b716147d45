"""Database-side guarantees of the ledger, installed by migration 0003.

* ``ledger_entries`` zero-sum: a statement-level trigger over the inserted rows (transition table)
  rejects any statement whose entries of one transfer do not sum to zero. Entries can only be inserted,
  so every transfer sums to zero. (One statement per transfer's entries; set-based charging inserts
  whole transfers per statement.)
* ``ledger_balances`` is updated only by a statement-level trigger on entries (SECURITY DEFINER, owned by
  the service role); the app role cannot UPDATE it (append-only grant) and can only insert zero rows.
* UPDATE, DELETE and TRUNCATE of entries and transfers raise for every role.

Migration 0010 (``migrations/versions/0010_charging_perf.py``, SQL kept there) replaces the row-level
foreign keys of ``ledger_entries`` and ``prepaid_charges`` by statement-level reference checks over the
transition table (``meterhub_entry_refs``, ``meterhub_charge_refs``: the referenced transfer/account/meter
state must exist in the same group), adds guards refusing DELETE, TRUNCATE and key/group changes of
``ledger_accounts``, ``prepaid_accounts`` and ``prepaid_meter_state`` for every role, and makes the balance
trigger insert only the missing balance rows. See ``docs/money.md`` (References).
"""

UPGRADE = [
    """
CREATE OR REPLACE FUNCTION meterhub_ledger_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger rows are immutable (%): post a reversal transfer instead', TG_TABLE_NAME
    USING ERRCODE = 'restrict_violation';
END $$
""",
    """
CREATE OR REPLACE FUNCTION meterhub_ledger_zero_sum() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad bigint;
BEGIN
  SELECT transfer_id INTO bad FROM new_entries GROUP BY transfer_id HAVING sum(amount) <> 0 LIMIT 1;
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'ledger transfer % does not sum to zero', bad USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END $$
""",
    """
CREATE OR REPLACE FUNCTION meterhub_ledger_apply_balances() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  INSERT INTO ledger_balances (account_id, group_id, balance)
  SELECT n.account_id, min(n.group_id), 0 FROM new_entries n GROUP BY n.account_id
  ON CONFLICT (account_id) DO NOTHING;
  UPDATE ledger_balances b SET balance = b.balance + s.total
  FROM (SELECT account_id, sum(amount) AS total FROM new_entries GROUP BY account_id) s
  WHERE b.account_id = s.account_id;
  RETURN NULL;
END $$
""",
    """
CREATE OR REPLACE FUNCTION meterhub_ledger_balance_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.balance <> 0 THEN
    RAISE EXCEPTION 'a ledger balance row starts at 0 (account %)', NEW.account_id
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END $$
""",
    "CREATE TRIGGER ledger_entries_zero_sum AFTER INSERT ON ledger_entries REFERENCING NEW TABLE AS new_entries "
    "FOR EACH STATEMENT EXECUTE FUNCTION meterhub_ledger_zero_sum()",
    "CREATE TRIGGER ledger_entries_balances AFTER INSERT ON ledger_entries REFERENCING NEW TABLE AS new_entries "
    "FOR EACH STATEMENT EXECUTE FUNCTION meterhub_ledger_apply_balances()",
    "CREATE TRIGGER ledger_entries_immutable BEFORE UPDATE OR DELETE ON ledger_entries "
    "FOR EACH ROW EXECUTE FUNCTION meterhub_ledger_immutable()",
    "CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries "
    "FOR EACH STATEMENT EXECUTE FUNCTION meterhub_ledger_immutable()",
    "CREATE TRIGGER ledger_transfers_immutable BEFORE UPDATE OR DELETE ON ledger_transfers "
    "FOR EACH ROW EXECUTE FUNCTION meterhub_ledger_immutable()",
    "CREATE TRIGGER ledger_transfers_no_truncate BEFORE TRUNCATE ON ledger_transfers "
    "FOR EACH STATEMENT EXECUTE FUNCTION meterhub_ledger_immutable()",
    "CREATE TRIGGER ledger_balances_start_at_zero BEFORE INSERT ON ledger_balances "
    "FOR EACH ROW EXECUTE FUNCTION meterhub_ledger_balance_insert()",
]

DOWNGRADE = [
    "DROP FUNCTION IF EXISTS meterhub_ledger_apply_balances() CASCADE",
    "DROP FUNCTION IF EXISTS meterhub_ledger_zero_sum() CASCADE",
    "DROP FUNCTION IF EXISTS meterhub_ledger_immutable() CASCADE",
    "DROP FUNCTION IF EXISTS meterhub_ledger_balance_insert() CASCADE",
]
