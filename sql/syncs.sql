-- create_sync(), start_sync(), stop_sync(), resync(), drop_sync(): the
-- relations a sync accepts, its options and their normalization, the role it
-- reads as, its lifecycle, privileges, and every error a user can cause.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- cdc decodes with the library's own output plugin: allow it, on servers
-- whose output_plugin_libraries lists the allowed ones (TAP test 045 checks
-- the error when it is not)
SELECT count(set_config('output_plugin_libraries', 'pgoutput, test_decoding, calabi_push', false)) >= 0 AS allowed
  FROM pg_settings WHERE name = 'output_plugin_libraries';

-- an administrator who may read as cp_sync_reader (a member of it), a role
-- it is not a member of, and a role granted nothing
CREATE ROLE cp_sync_admin;
CREATE ROLE cp_sync_reader;
CREATE ROLE cp_sync_stranger;
CREATE ROLE cp_sync_nobody;
GRANT cp_sync_reader TO cp_sync_admin;
GRANT USAGE ON SCHEMA calabi_push TO cp_sync_admin, cp_sync_nobody;
GRANT EXECUTE ON FUNCTION
    calabi_push.create_sync(text, text, regclass[], text, text, jsonb),
    calabi_push.start_sync(text),
    calabi_push.stop_sync(text),
    calabi_push.resync(text, regclass),
    calabi_push.drop_sync(text)
  TO cp_sync_admin;

-- what can be streamed: tables, partitioned tables, views, materialized
-- views, foreign tables
CREATE SCHEMA cp_sync_test;
CREATE TABLE cp_sync_test.orders (id int PRIMARY KEY, status text, amount numeric);
CREATE TABLE cp_sync_test.events (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE cp_sync_test.events_2025 PARTITION OF cp_sync_test.events
  FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE VIEW cp_sync_test.paid AS SELECT id, amount FROM cp_sync_test.orders WHERE status = 'paid';
CREATE MATERIALIZED VIEW cp_sync_test.totals AS SELECT status, sum(amount) AS total FROM cp_sync_test.orders GROUP BY status;
CREATE FOREIGN DATA WRAPPER cp_sync_fdw;
CREATE SERVER cp_sync_server FOREIGN DATA WRAPPER cp_sync_fdw;
CREATE FOREIGN TABLE cp_sync_test.remote (id int) SERVER cp_sync_server;
-- and what cannot
CREATE SEQUENCE cp_sync_test.order_seq;
CREATE TYPE cp_sync_test.pair AS (a int, b int);
CREATE TABLE cp_sync_test.secret (id int, card text);
CREATE TABLE cp_sync_test.hidden (id int);

GRANT USAGE ON SCHEMA cp_sync_test TO cp_sync_reader, cp_sync_admin;
GRANT SELECT ON cp_sync_test.orders, cp_sync_test.events, cp_sync_test.paid,
    cp_sync_test.totals, cp_sync_test.remote TO cp_sync_reader;
GRANT SELECT ON cp_sync_test.orders TO cp_sync_admin;
GRANT SELECT (id) ON cp_sync_test.secret TO cp_sync_reader;

SELECT calabi_push.create_destination('sync-dest', 'https://ingest.example.com/v1/batches', token => 'tok-sync-1');
SELECT calabi_push.create_destination('sync-dest-2', 'https://ingest2.example.com/v1/batches');

------------------------------------------------------------------------------
-- privileges: EXECUTE is needed
SET ROLE cp_sync_nobody;
SELECT calabi_push.create_sync('nope', 'sync-dest', NULL);
SELECT calabi_push.start_sync('nope');
RESET ROLE;
-- the public functions are C entry points that run as the caller (they
-- take its identity); their _-prefixed implementations run as the owner
SELECT p.proname, l.lanname, p.prosecdef, p.proconfig
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace = 'calabi_push'::regnamespace
   AND (p.proname IN ('create_sync', 'start_sync', 'stop_sync', 'resync', 'drop_sync')
        OR p.proname IN (SELECT '_' || n FROM unnest(ARRAY['create_sync', 'start_sync', 'stop_sync', 'resync', 'drop_sync']) n))
 ORDER BY 1;

------------------------------------------------------------------------------
-- create_sync: created stopped, one stream per relation in the order given
SET ROLE cp_sync_admin;
SELECT calabi_push.create_sync('all-kinds', 'sync-dest',
    ARRAY['cp_sync_test.orders', 'cp_sync_test.events', 'cp_sync_test.paid',
          'cp_sync_test.totals', 'cp_sync_test.remote']::regclass[],
    options => '{"run_as": "cp_sync_reader"}') AS all_kinds_id \gset
-- defaults: full_refresh, overwrite, read as the caller
SELECT calabi_push.create_sync('orders-only', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[]) IS NOT NULL AS created;
-- options normalized: durations as interval texts in one unit, sizes in bytes
SELECT calabi_push.create_sync('tuned', 'sync-dest-2', ARRAY['cp_sync_test.orders']::regclass[],
    method => 'full_refresh', destination_sync_mode => 'append',
    options => '{"schedule": "1 hour 30 minutes", "batch_rows": 500, "batch_bytes": "1MB",
                 "batch_linger_ms": 0, "chunk_rows": 2000, "max_backoff": 90, "run_as": null}') IS NOT NULL AS created;
-- column privileges on every column are as good as SELECT on the table
RESET ROLE;
GRANT SELECT (card) ON cp_sync_test.secret TO cp_sync_reader;
SET ROLE cp_sync_admin;
SELECT calabi_push.create_sync('by-columns', 'sync-dest', ARRAY['cp_sync_test.secret']::regclass[],
    options => '{"run_as": "cp_sync_reader", "schedule": 60, "batch_bytes": 65536}') IS NOT NULL AS created;
RESET ROLE;

SELECT id = :'all_kinds_id' AS returned_id, name, destination, method, destination_sync_mode,
       run_as, created_by, enabled, error_stopped, run_started_at, run_completed_at
  FROM calabi_push.sync WHERE name = 'all-kinds';
SELECT name, method, destination_sync_mode, run_as, created_by, enabled, options
  FROM calabi_push.sync ORDER BY name COLLATE "C";
-- the defaults come from the library (src/catalog.h), the one place that
-- defines them: what "orders-only" was stored with
SELECT calabi_push._sync_defaults();
SELECT (options->'batch_rows') = d->'batch_rows' AND (options->'batch_bytes') = d->'batch_bytes'
       AND (options->'batch_linger_ms') = d->'batch_linger_ms' AND (options->'chunk_rows') = d->'chunk_rows'
       AND (options->>'max_backoff')::interval = make_interval(secs => (d->>'max_backoff_ms')::numeric / 1000)
       AS orders_only_has_the_defaults
  FROM calabi_push.sync, calabi_push._sync_defaults() d WHERE name = 'orders-only';
SELECT s.name, st.relid, st.ordinal, st.phase, st.generation, st.checkpoint, st.rows_sent
  FROM calabi_push.sync_stream st JOIN calabi_push.sync s ON s.id = st.sync_id
 ORDER BY s.name COLLATE "C", st.ordinal;

------------------------------------------------------------------------------
-- the role a sync reads as: the caller, or a role the caller is a member of
-- (superusers: any); it must be able to use the schema and SELECT every
-- column of every relation
SET ROLE cp_sync_admin;
SELECT calabi_push.create_sync('as-stranger', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
    options => '{"run_as": "cp_sync_stranger"}');
SELECT calabi_push.create_sync('as-nobody-known', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
    options => '{"run_as": "no_such_role"}');
SELECT calabi_push.create_sync('as-upper', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
    options => '{"run_as": "CP_SYNC_READER"}');
SELECT calabi_push.create_sync('as-number', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
    options => '{"run_as": 10}');
-- the caller (the default) cannot read hidden
SELECT calabi_push.create_sync('mine', 'sync-dest', ARRAY['cp_sync_test.orders', 'cp_sync_test.hidden']::regclass[]);
-- the reader cannot read hidden, and only some columns of a table
SELECT calabi_push.create_sync('theirs', 'sync-dest', ARRAY['cp_sync_test.hidden']::regclass[],
    options => '{"run_as": "cp_sync_reader"}');
RESET ROLE;
REVOKE SELECT (card) ON cp_sync_test.secret FROM cp_sync_reader;
SET ROLE cp_sync_admin;
SELECT calabi_push.create_sync('theirs', 'sync-dest', ARRAY['cp_sync_test.secret']::regclass[],
    options => '{"run_as": "cp_sync_reader"}');
RESET ROLE;
-- no USAGE on the schema (the administrator has it, the reader not)
CREATE SCHEMA cp_sync_closed;
CREATE TABLE cp_sync_closed.t (id int);
GRANT SELECT ON cp_sync_closed.t TO cp_sync_reader;
GRANT USAGE ON SCHEMA cp_sync_closed TO cp_sync_admin;
SET ROLE cp_sync_admin;
SELECT calabi_push.create_sync('closed', 'sync-dest', ARRAY['cp_sync_closed.t']::regclass[],
    options => '{"run_as": "cp_sync_reader"}');
RESET ROLE;
-- a superuser may have a sync read as any role (which needs the privileges
-- all the same)
SELECT calabi_push.create_sync('strangers', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
    options => '{"run_as": "cp_sync_stranger"}');
GRANT SELECT ON cp_sync_test.orders TO cp_sync_stranger;
GRANT USAGE ON SCHEMA cp_sync_test TO cp_sync_stranger;
SELECT calabi_push.create_sync('strangers', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
    options => '{"run_as": "cp_sync_stranger"}') IS NOT NULL AS created;
SELECT name, run_as, created_by = current_user AS created_by_me FROM calabi_push.sync WHERE name = 'strangers';
-- ... and only its members (and superusers) manage it
SET ROLE cp_sync_admin;
SELECT calabi_push.start_sync('strangers');
SELECT calabi_push.stop_sync('strangers');
SELECT calabi_push.resync('strangers');
SELECT calabi_push.drop_sync('strangers');
RESET ROLE;
SELECT calabi_push.drop_sync('strangers');

------------------------------------------------------------------------------
-- errors a user can cause in create_sync (as the administrator)
SET ROLE cp_sync_admin;
-- names
SELECT calabi_push.create_sync(NULL, 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[]);
SELECT calabi_push.create_sync('', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[]);
SELECT calabi_push.create_sync('orders/daily', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[]);
SELECT calabi_push.create_sync(repeat('s', 64), 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[]);
SELECT calabi_push.create_sync('orders-only', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[]);
-- destination
SELECT calabi_push.create_sync('x', NULL, ARRAY['cp_sync_test.orders']::regclass[]);
SELECT calabi_push.create_sync('x', 'no-such-dest', ARRAY['cp_sync_test.orders']::regclass[]);
-- method and destination_sync_mode
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'xmin', destination_sync_mode => 'overwrite');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'xmin', destination_sync_mode => 'upsert');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cursor');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cdc', destination_sync_mode => 'overwrite');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cdc', destination_sync_mode => 'upsert');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'FULL_REFRESH');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => NULL);
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], destination_sync_mode => 'append_dedup');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], destination_sync_mode => 'upsert');
-- NULL: the method's default
SELECT calabi_push.create_sync('x-fr', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], destination_sync_mode => NULL) IS NOT NULL AS created;
SELECT calabi_push.create_sync('x-cdc', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cdc', destination_sync_mode => NULL) IS NOT NULL AS created;
SELECT name, method, destination_sync_mode FROM calabi_push.sync_status WHERE name IN ('x-fr', 'x-cdc') ORDER BY name;
SELECT calabi_push.drop_sync('x-fr'), calabi_push.drop_sync('x-cdc');
-- every replication slot in use: a cdc sync that has no slot yet cannot get
-- one, and create_sync and start_sync say so (and how to fix it); slots are
-- made and dropped by the superuser
RESET ROLE;
SELECT calabi_push.create_sync('x-cdc', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cdc') IS NOT NULL AS created;
SELECT count(pg_create_physical_replication_slot('cp_sync_fill_' || g)) > 0 AS filled
  FROM generate_series(1, current_setting('max_replication_slots')::int
                          - (SELECT count(*)::int FROM pg_replication_slots)) g;
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cdc');
SELECT calabi_push.start_sync('x-cdc');
SELECT name, state FROM calabi_push.sync_status WHERE name = 'x-cdc';
-- a full refresh needs no slot
SELECT calabi_push.create_sync('x-fr', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[]) IS NOT NULL AS created;
SELECT count(pg_drop_replication_slot(slot_name)) > 0 AS freed
  FROM pg_replication_slots WHERE slot_name LIKE 'cp_sync_fill_%';
SELECT calabi_push.drop_sync('x-fr'), calabi_push.drop_sync('x-cdc');
SET ROLE cp_sync_admin;
-- relations
SELECT calabi_push.create_sync('x', 'sync-dest', NULL);
SELECT calabi_push.create_sync('x', 'sync-dest', '{}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders', NULL]::regclass[]);
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders', 'cp_sync_test.paid', 'cp_sync_test.orders']::regclass[]);
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY[['cp_sync_test.orders'], ['cp_sync_test.paid']]::regclass[]);
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.order_seq']::regclass[]);
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders_pkey']::regclass[]);
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.pair']::regclass[]);
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY[4294967295::oid::regclass]);
CREATE TEMPORARY TABLE scratch (id int);
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['scratch']::regclass[]);
-- options
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '[1]');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"batch_size": 10}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"schedule": "30 seconds"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"schedule": "2 years"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"schedule": "hourly"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"batch_rows": 0}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"batch_rows": 1000001}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"batch_rows": 10.5}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"batch_rows": "100"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"batch_bytes": 1024}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"batch_bytes": "1GB"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"batch_bytes": "lots"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"batch_linger_ms": -1}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"batch_linger_ms": "1s"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"chunk_rows": 0}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"max_backoff": "100ms"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"max_backoff": "2 days"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"run_as": ""}');
RESET ROLE;
SELECT count(*) AS syncs_named_x FROM calabi_push.sync WHERE name = 'x';

------------------------------------------------------------------------------
-- try(statement): 'ok', or the SQLSTATE and message of its error
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    msg text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
    RETURN format('%s: %s', SQLSTATE, msg);
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.try(text) TO cp_sync_admin;

------------------------------------------------------------------------------
-- lifecycle.  Inside a transaction that is rolled back: the launcher only
-- hears of a change when its transaction commits, so no worker starts and
-- the worker's part (phases, completion, refusal) is played by UPDATEs.
\set ON_ERROR_ROLLBACK on
BEGIN;
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.stop_sync('all-kinds');
SELECT calabi_push.start_sync('all-kinds');
RESET ROLE;
SELECT enabled, error_stopped, run_started_at = now() AS started_now, run_completed_at
  FROM calabi_push.sync WHERE name = 'all-kinds';
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.start_sync('all-kinds');
RESET ROLE;

-- the worker read the first relation, is reading the second; stopped
UPDATE calabi_push.sync_stream SET phase = 'done', checkpoint = '{"phase": "done"}', rows_sent = 3
 WHERE sync_id = :'all_kinds_id' AND ordinal = 1;
UPDATE calabi_push.sync_stream SET phase = 'reading', checkpoint = '{"phase": "reading", "after": ["7"]}', rows_sent = 7
 WHERE sync_id = :'all_kinds_id' AND ordinal = 2;
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.stop_sync('all-kinds');
SELECT calabi_push.stop_sync('all-kinds');
RESET ROLE;
SELECT enabled FROM calabi_push.sync WHERE name = 'all-kinds';
-- started again, the run resumes: done stays done, reading keeps its checkpoint
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.start_sync('all-kinds');
RESET ROLE;
SELECT relid, phase, checkpoint, rows_sent FROM calabi_push.sync_stream
 WHERE sync_id = :'all_kinds_id' ORDER BY ordinal;

-- the run completes (no schedule: the worker exits, the sync stays enabled);
-- start_sync begins a new run that reads everything again
UPDATE calabi_push.sync_stream SET phase = 'done', checkpoint = '{"phase": "done"}'
 WHERE sync_id = :'all_kinds_id';
UPDATE calabi_push.sync SET run_completed_at = now() - interval '1 minute' WHERE name = 'all-kinds';
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.start_sync('all-kinds');
RESET ROLE;
SELECT enabled, run_started_at = now() AS started_now, run_completed_at FROM calabi_push.sync WHERE name = 'all-kinds';
SELECT relid, phase, checkpoint, rows_sent FROM calabi_push.sync_stream
 WHERE sync_id = :'all_kinds_id' ORDER BY ordinal;

-- the endpoint refuses a batch: the worker stops the sync in error; stop_sync
-- has nothing to stop; start_sync clears the error state, keeps last_error
UPDATE calabi_push.sync
   SET enabled = false, error_stopped = true, last_error = 'HTTP 400: {"error":"bad batch"}', last_error_at = now()
 WHERE name = 'all-kinds';
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.stop_sync('all-kinds');
SELECT calabi_push.start_sync('all-kinds');
RESET ROLE;
SELECT enabled, error_stopped, last_error FROM calabi_push.sync WHERE name = 'all-kinds';

-- a change of the destination restarts its running syncs' workers (at commit)
SELECT calabi_push.alter_destination('sync-dest', options => '{"request_timeout": "5 minutes"}');

-- resync one relation, then all of them
UPDATE calabi_push.sync_stream SET phase = 'done', checkpoint = '{"phase": "done"}', rows_sent = 9, generation = 2
 WHERE sync_id = :'all_kinds_id';
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.resync('all-kinds', 'cp_sync_test.paid');
RESET ROLE;
SELECT relid, phase, generation, checkpoint, rows_sent FROM calabi_push.sync_stream
 WHERE sync_id = :'all_kinds_id' ORDER BY ordinal;
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.resync('all-kinds');
RESET ROLE;
SELECT relid, phase, generation, checkpoint, rows_sent FROM calabi_push.sync_stream
 WHERE sync_id = :'all_kinds_id' ORDER BY ordinal;
-- a relation that is not part of the sync
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.resync('all-kinds', 'cp_sync_test.secret');
SELECT calabi_push.resync('all-kinds', 4294967295::oid::regclass);
RESET ROLE;

-- a scheduled sync waiting for its next run is running; resync reads at once
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.start_sync('tuned');
RESET ROLE;
UPDATE calabi_push.sync SET run_completed_at = now() WHERE name = 'tuned';
UPDATE calabi_push.sync_stream SET phase = 'done'
 WHERE sync_id = (SELECT id FROM calabi_push.sync WHERE name = 'tuned');
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.start_sync('tuned');
SELECT calabi_push.resync('tuned');
RESET ROLE;
SELECT s.enabled, s.run_completed_at, st.phase
  FROM calabi_push.sync s JOIN calabi_push.sync_stream st ON st.sync_id = s.id
 WHERE s.name = 'tuned';

-- a sync without a schedule that completed its run is idle: resync resets
-- its streams and reads them at once (the run is no longer complete, so a
-- start_sync right after says it is running)
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.start_sync('orders-only');
RESET ROLE;
UPDATE calabi_push.sync SET run_completed_at = now() WHERE name = 'orders-only';
UPDATE calabi_push.sync_stream SET phase = 'done'
 WHERE sync_id = (SELECT id FROM calabi_push.sync WHERE name = 'orders-only');
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.resync('orders-only');
RESET ROLE;
SELECT s.enabled, s.run_completed_at IS NOT NULL AS completed, st.phase
  FROM calabi_push.sync s JOIN calabi_push.sync_stream st ON st.sync_id = s.id
 WHERE s.name = 'orders-only';
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.start_sync('orders-only');
RESET ROLE;
SELECT s.enabled, s.run_completed_at IS NOT NULL AS completed, st.phase
  FROM calabi_push.sync s JOIN calabi_push.sync_stream st ON st.sync_id = s.id
 WHERE s.name = 'orders-only';

-- resync of a stopped sync resets its streams and leaves it stopped
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.resync('by-columns');
RESET ROLE;
SELECT enabled FROM calabi_push.sync WHERE name = 'by-columns';

-- start_sync checks the relations again: privileges may have been revoked,
-- relations dropped
REVOKE SELECT ON cp_sync_test.totals FROM cp_sync_reader;
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.stop_sync('all-kinds');
SELECT calabi_push.start_sync('all-kinds');
RESET ROLE;
GRANT SELECT ON cp_sync_test.totals TO cp_sync_reader;
DROP VIEW cp_sync_test.paid;
SET LOCAL ROLE cp_sync_admin;
SELECT regexp_replace(pg_temp.try('SELECT calabi_push.start_sync(''all-kinds'')'),
                      'OID [0-9]+', 'OID N') AS start_after_drop;
RESET ROLE;

-- drop_sync, running or not: the sync and its streams go
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.drop_sync('tuned');
SELECT calabi_push.drop_sync('tuned');
RESET ROLE;
SELECT count(*) AS tuned_rows FROM calabi_push.sync WHERE name = 'tuned';
SELECT count(*) AS orphan_streams FROM calabi_push.sync_stream st
 WHERE NOT EXISTS (SELECT 1 FROM calabi_push.sync s WHERE s.id = st.sync_id);
ROLLBACK;
\set ON_ERROR_ROLLBACK off

-- other errors of the lifecycle functions
SET ROLE cp_sync_admin;
SELECT calabi_push.start_sync('no-such-sync');
SELECT calabi_push.stop_sync(NULL);
SELECT calabi_push.resync('no-such-sync');
SELECT calabi_push.drop_sync('no-such-sync');
RESET ROLE;
-- the role a sync reads as was dropped: only superusers may manage it, and
-- it cannot start
CREATE ROLE cp_sync_gone;
GRANT USAGE ON SCHEMA cp_sync_test TO cp_sync_gone;
GRANT SELECT ON cp_sync_test.orders TO cp_sync_gone;
SELECT calabi_push.create_sync('orphaned', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
    options => '{"run_as": "cp_sync_gone"}') IS NOT NULL AS created;
DROP OWNED BY cp_sync_gone;
-- from this database, DROP ROLE of a role a sync reads as is refused
DROP ROLE cp_sync_gone;
-- from another database (which cannot see this one's syncs) it is not: do
-- the same here by moving the sync off the role for the moment
SELECT 'cp_sync_gone'::regrole::oid AS gone_oid \gset
UPDATE calabi_push.sync SET run_as = 'cp_sync_admin' WHERE name = 'orphaned';
DROP ROLE cp_sync_gone;
UPDATE calabi_push.sync SET run_as = :gone_oid WHERE name = 'orphaned';
SET ROLE cp_sync_admin;
SELECT calabi_push.drop_sync('orphaned');
RESET ROLE;
SELECT calabi_push.start_sync('orphaned');
SELECT calabi_push.drop_sync('orphaned');

------------------------------------------------------------------------------
-- change data capture: what a cdc sync accepts (tables its changes can key,
-- WAL-logged, without row security the role is subject to), the publication
-- option, the method's default mode, its slot's name and resync's reset
CREATE TABLE cp_sync_test.keyless (x int, y text);
CREATE TABLE cp_sync_test.full_keyless (x int, y text);
ALTER TABLE cp_sync_test.full_keyless REPLICA IDENTITY FULL;
CREATE TABLE cp_sync_test.nothing (id int PRIMARY KEY, y text);
ALTER TABLE cp_sync_test.nothing REPLICA IDENTITY NOTHING;
CREATE UNLOGGED TABLE cp_sync_test.scratchpad (id int PRIMARY KEY);
CREATE TABLE cp_sync_test.guarded (id int PRIMARY KEY, owner_name text);
ALTER TABLE cp_sync_test.guarded ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON cp_sync_test.keyless, cp_sync_test.full_keyless, cp_sync_test.nothing,
  cp_sync_test.scratchpad, cp_sync_test.guarded TO cp_sync_reader;
CREATE TABLE cp_sync_test.colliding (id int PRIMARY KEY, _calabi_cdc_lsn bigint);
GRANT SELECT ON cp_sync_test.colliding TO cp_sync_reader;
CREATE PUBLICATION cp_sync_pub FOR TABLE cp_sync_test.orders, cp_sync_test.keyless;
CREATE PUBLICATION cp_sync_empty_pub;
SET ROLE cp_sync_admin;
SELECT calabi_push.create_sync('c', 'sync-dest', ARRAY['cp_sync_test.keyless']::regclass[], method => 'cdc');
SELECT calabi_push.create_sync('c', 'sync-dest', ARRAY['cp_sync_test.full_keyless']::regclass[], method => 'cdc');
SELECT calabi_push.create_sync('c', 'sync-dest', ARRAY['cp_sync_test.nothing']::regclass[], method => 'cdc');
SELECT calabi_push.create_sync('c', 'sync-dest', ARRAY['cp_sync_test.scratchpad']::regclass[], method => 'cdc');
SELECT calabi_push.create_sync('c', 'sync-dest', ARRAY['cp_sync_test.events']::regclass[], method => 'cdc');
SELECT calabi_push.create_sync('c', 'sync-dest', ARRAY['cp_sync_test.paid']::regclass[], method => 'cdc');
SELECT calabi_push.create_sync('c', 'sync-dest', ARRAY['cp_sync_test.guarded']::regclass[], method => 'cdc');
SELECT calabi_push.create_sync('c', 'sync-dest', ARRAY['cp_sync_test.colliding']::regclass[], method => 'cdc');
SELECT calabi_push.create_sync('c', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"publication": "cp_sync_pub"}');
SELECT calabi_push.create_sync('c', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cdc', options => '{"schedule": "1 hour"}');
SELECT calabi_push.create_sync('c', 'sync-dest', method => 'cdc', options => '{"publication": "no_such_pub"}');
SELECT calabi_push.create_sync('c', 'sync-dest', method => 'cdc', options => '{"publication": "cp_sync_empty_pub"}');
SELECT calabi_push.create_sync('c', 'sync-dest', ARRAY['cp_sync_test.nothing']::regclass[], method => 'cdc', options => '{"publication": "cp_sync_pub"}');
-- "failover" is for cdc and a boolean (its refusal before PostgreSQL 17
-- names the version: TAP 096)
SELECT calabi_push.create_sync('c', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], options => '{"failover": true}');
SELECT calabi_push.create_sync('c', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'xmin', options => '{"failover": false}');
SELECT calabi_push.create_sync('c', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cdc', options => '{"failover": "yes"}');
-- append takes what append_dedup cannot key
SELECT calabi_push.create_sync('c-append', 'sync-dest',
  ARRAY['cp_sync_test.keyless', 'cp_sync_test.full_keyless', 'cp_sync_test.nothing']::regclass[],
  method => 'cdc', destination_sync_mode => 'append') IS NOT NULL AS created;
-- a publication's tables, when none are listed (keyless needs append)
SELECT calabi_push.create_sync('c-pub', 'sync-dest', method => 'cdc', destination_sync_mode => 'append',
  options => '{"publication": "cp_sync_pub"}') IS NOT NULL AS created;
SELECT calabi_push.create_sync('c-dedup', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cdc') IS NOT NULL AS created;
RESET ROLE;
-- a cdc sync stores "failover", false unless asked
SELECT name, options->'failover' AS failover FROM calabi_push.sync WHERE name LIKE 'c-%' ORDER BY name;
SELECT relation, ordinal FROM calabi_push.stream_status WHERE sync = 'c-pub' ORDER BY ordinal;
SELECT name, destination_sync_mode, state, slot_name ~ '^calabi_push_[0-9a-f]{32}$' AS slot_named,
       lsn_sent, lsn_acknowledged, lag_bytes, lag_time
  FROM calabi_push.sync_status WHERE name LIKE 'c-%' ORDER BY name;
-- resync of every table starts over from a new slot; of one, only that one
UPDATE calabi_push.sync SET cdc_lsn = '0/1234' WHERE name = 'c-dedup';
UPDATE calabi_push.sync_stream SET phase = 'done' WHERE sync_id = (SELECT id FROM calabi_push.sync WHERE name = 'c-append');
SET ROLE cp_sync_admin;
SELECT calabi_push.resync('c-append', 'cp_sync_test.nothing');
SELECT calabi_push.resync('c-dedup');
RESET ROLE;
SELECT name, cdc_lsn FROM calabi_push.sync WHERE name IN ('c-append', 'c-dedup') ORDER BY name;
SELECT relation, phase FROM calabi_push.stream_status WHERE sync = 'c-append' ORDER BY ordinal;
SELECT calabi_push.drop_sync('c-append'), calabi_push.drop_sync('c-pub'), calabi_push.drop_sync('c-dedup');
DROP PUBLICATION cp_sync_pub, cp_sync_empty_pub;

------------------------------------------------------------------------------
-- xmin: what it accepts (relations whose rows are a heap's: tables,
-- partitioned tables through their partitions, materialized views; unlogged
-- ones too), its default mode (append_dedup where every relation has a key,
-- else append), schedule but not publication; what start_sync checks again;
-- resync; the columns of stream_status it fills
CREATE TABLE cp_sync_test.keyed_parts (id int PRIMARY KEY, at date) PARTITION BY RANGE (id);
CREATE TABLE cp_sync_test.keyed_parts_1 PARTITION OF cp_sync_test.keyed_parts FOR VALUES FROM (0) TO (1000);
CREATE TABLE cp_sync_test.mixed_parts (id int, at date) PARTITION BY RANGE (id);
CREATE TABLE cp_sync_test.mixed_parts_1 PARTITION OF cp_sync_test.mixed_parts FOR VALUES FROM (0) TO (1000);
CREATE FOREIGN TABLE cp_sync_test.mixed_parts_2 PARTITION OF cp_sync_test.mixed_parts
  FOR VALUES FROM (1000) TO (2000) SERVER cp_sync_server;
-- an access method other than heap (here heap's own handler under another
-- name: the check is by access method, not by what it does)
CREATE ACCESS METHOD cp_sync_heap2 TYPE TABLE HANDLER heap_tableam_handler;
CREATE TABLE cp_sync_test.other_am (id int PRIMARY KEY) USING cp_sync_heap2;
CREATE TABLE cp_sync_test.key_dropped (id int CONSTRAINT key_dropped_pkey PRIMARY KEY);
GRANT SELECT ON cp_sync_test.keyed_parts, cp_sync_test.mixed_parts, cp_sync_test.other_am,
  cp_sync_test.key_dropped TO cp_sync_reader;
SET ROLE cp_sync_admin;
SELECT calabi_push.create_sync('xm-keyed', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'xmin') IS NOT NULL AS created;
SELECT calabi_push.create_sync('xm-keyless', 'sync-dest', ARRAY['cp_sync_test.keyless']::regclass[], method => 'xmin',
  options => '{"run_as": "cp_sync_reader"}') IS NOT NULL AS created;
SELECT calabi_push.create_sync('xm-mixed', 'sync-dest', ARRAY['cp_sync_test.orders', 'cp_sync_test.keyless']::regclass[],
  method => 'xmin', destination_sync_mode => NULL, options => '{"run_as": "cp_sync_reader"}') IS NOT NULL AS created;
SELECT calabi_push.create_sync('xm-matview', 'sync-dest', ARRAY['cp_sync_test.totals']::regclass[], method => 'xmin',
  options => '{"run_as": "cp_sync_reader", "schedule": "90 minutes", "chunk_rows": 500}') IS NOT NULL AS created;
SELECT calabi_push.create_sync('xm-parted', 'sync-dest', ARRAY['cp_sync_test.events', 'cp_sync_test.keyed_parts']::regclass[],
  method => 'xmin', options => '{"run_as": "cp_sync_reader"}') IS NOT NULL AS created;
SELECT calabi_push.create_sync('xm-parted-key', 'sync-dest', ARRAY['cp_sync_test.keyed_parts']::regclass[],
  method => 'xmin', options => '{"run_as": "cp_sync_reader"}') IS NOT NULL AS created;
SELECT calabi_push.create_sync('xm-unlogged', 'sync-dest', ARRAY['cp_sync_test.scratchpad', 'cp_sync_test.key_dropped']::regclass[],
  method => 'xmin', destination_sync_mode => 'append_dedup', options => '{"run_as": "cp_sync_reader"}') IS NOT NULL AS created;
SELECT calabi_push.create_sync('xm-append', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'xmin',
  destination_sync_mode => 'append') IS NOT NULL AS created;
RESET ROLE;
SELECT name, method, destination_sync_mode, run_as, options
  FROM calabi_push.sync WHERE method = 'xmin' ORDER BY name COLLATE "C";
-- refused: no xmin (views, foreign tables, a foreign partition), another
-- access method, append_dedup without a key, overwrite, publication; and what
-- every method refuses
SET ROLE cp_sync_admin;
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders', 'cp_sync_test.paid']::regclass[], method => 'xmin',
  options => '{"run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.remote']::regclass[], method => 'xmin',
  options => '{"run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.mixed_parts']::regclass[], method => 'xmin',
  options => '{"run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.other_am']::regclass[], method => 'xmin',
  options => '{"run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders', 'cp_sync_test.keyless']::regclass[], method => 'xmin',
  destination_sync_mode => 'append_dedup', options => '{"run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.events']::regclass[], method => 'xmin',
  destination_sync_mode => 'append_dedup', options => '{"run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.totals']::regclass[], method => 'xmin',
  destination_sync_mode => 'append_dedup', options => '{"run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'xmin',
  options => '{"publication": "cp_sync_pub"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.hidden']::regclass[], method => 'xmin');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['scratch']::regclass[], method => 'xmin');
RESET ROLE;
SELECT count(*) AS syncs_named_x FROM calabi_push.sync WHERE name = 'x';
-- start_sync checks again what create_sync checked: a key dropped since
ALTER TABLE cp_sync_test.key_dropped DROP CONSTRAINT key_dropped_pkey;
SET ROLE cp_sync_admin;
SELECT calabi_push.start_sync('xm-unlogged');
RESET ROLE;
-- stream_status: nothing read yet, so no read, position or counts
SELECT sync, relation, phase, read, position, last_run_rows, pages_examined, pages_skipped,
       pages_found_by, wal_bytes_read, full_read_reason
  FROM calabi_push.stream_status WHERE sync LIKE 'xm-%' ORDER BY sync COLLATE "C", ordinal;
-- as the worker leaves them (its checkpoint is the contract): one stream
-- done by an incremental run, one being read whole as its position was too
-- old
UPDATE calabi_push.sync_stream t
   SET phase = 'done', generation = 2, rows_sent = 2,
       checkpoint = '{"method": "xmin", "generation": 2, "phase": "done", "read": "incremental",
                      "rows": 2, "relfilenode": 16400, "since": "4294967801:4294967805:4294967802,4294967803",
                      "pages_examined": 3, "pages_skipped": 997,
                      "pages_found_by": "wal", "wal_bytes_read": 81920}'
 WHERE t.sync_id = (SELECT id FROM calabi_push.sync WHERE name = 'xm-mixed') AND t.ordinal = 1;
UPDATE calabi_push.sync_stream t
   SET phase = 'reading', generation = 3, rows_sent = 10000,
       checkpoint = '{"method": "xmin", "generation": 3, "phase": "reading", "read": "full", "rows": 10000,
                      "block": 120, "relfilenode": 16401,
                      "pages_examined": 120, "pages_skipped": 0,
                      "pages_found_by": "every_page", "wal_bytes_read": 0,
                      "full_reason": "the previous position is more than 2^31 transactions old"}'
 WHERE t.sync_id = (SELECT id FROM calabi_push.sync WHERE name = 'xm-mixed') AND t.ordinal = 2;
SELECT relation, phase, generation, read, position, last_run_rows, pages_examined, pages_skipped,
       pages_found_by, wal_bytes_read, full_read_reason
  FROM calabi_push.stream_status WHERE sync = 'xm-mixed' ORDER BY ordinal;
-- resync of one stream: read whole again (no checkpoint: the worker starts
-- a new generation), the other keeps its position; then of every stream
SET ROLE cp_sync_admin;
SELECT calabi_push.resync('xm-mixed', 'cp_sync_test.keyless');
RESET ROLE;
SELECT relation, phase, generation, rows_sent, checkpoint IS NULL AS no_checkpoint, read, position, last_run_rows
  FROM calabi_push.stream_status WHERE sync = 'xm-mixed' ORDER BY ordinal;
SET ROLE cp_sync_admin;
SELECT calabi_push.resync('xm-mixed');
RESET ROLE;
SELECT relation, phase, generation, rows_sent, checkpoint IS NULL AS no_checkpoint, read, position, last_run_rows
  FROM calabi_push.stream_status WHERE sync = 'xm-mixed' ORDER BY ordinal;
SELECT string_agg(name, ', ' ORDER BY name COLLATE "C") AS dropped
  FROM (SELECT name, calabi_push.drop_sync(name) FROM calabi_push.sync WHERE method = 'xmin') s;
DROP TABLE cp_sync_test.other_am;
DROP ACCESS METHOD cp_sync_heap2;

------------------------------------------------------------------------------
-- cursor: every kind of relation, read by a column of an ordered type (its
-- cursor, kept per stream in sync_stream.cursor_column, not in the options);
-- the "cursor" option as one name or as an object from relation to name;
-- the default mode (append_dedup where every relation has a key, else
-- append); "lookback" (an interval or a number, by the cursor's type);
-- NOTICEs for cursors that can be NULL; every refusal; what start_sync
-- checks again; what stream_status shows
CREATE DOMAIN cp_sync_test.version_no AS bigint CHECK (VALUE >= 0);
CREATE DOMAIN cp_sync_test.place AS point;
CREATE TYPE cp_sync_test.mood AS ENUM ('low', 'high');
CREATE TABLE cp_sync_test.cur_items (
    id int PRIMARY KEY, updated_at timestamptz NOT NULL, seq bigint NOT NULL,
    version cp_sync_test.version_no NOT NULL, "Stamp" date NOT NULL,
    label text NOT NULL, code varchar(10), price numeric NOT NULL,
    spot point, spot_too cp_sync_test.place, gone int);
ALTER TABLE cp_sync_test.cur_items DROP COLUMN gone;
CREATE VIEW cp_sync_test.cur_view AS SELECT id, updated_at, seq FROM cp_sync_test.cur_items;
CREATE FOREIGN TABLE cp_sync_test.cur_remote (id int NOT NULL, changed_at timestamp NOT NULL)
  SERVER cp_sync_server;
CREATE TABLE cp_sync_test.cur_shifting (id int PRIMARY KEY, v int NOT NULL);
GRANT SELECT ON cp_sync_test.cur_items, cp_sync_test.cur_view, cp_sync_test.cur_remote,
  cp_sync_test.cur_shifting TO cp_sync_reader;
-- which types have a default ordering: their own btree operator class, a
-- binary-coercible type's (varchar: text's), a domain's base type's, an
-- enum's, a range's; arrays and composites by their elements and fields
SELECT t AS type, calabi_push._type_is_ordered(t::regtype) AS ordered
  FROM unnest(ARRAY['timestamptz', 'int4', 'text', 'varchar', 'uuid', 'jsonb',
                    'cp_sync_test.version_no', 'cp_sync_test.mood', 'int4range',
                    'int4[]', 'cp_sync_test.pair', 'point', 'cp_sync_test.place',
                    'point[]', 'json', 'xid']) t;
SET ROLE cp_sync_admin;
-- one column for every relation; a table with a key: append_dedup
SELECT calabi_push.create_sync('cu-table', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[],
  method => 'cursor', options => '{"cursor": "updated_at", "run_as": "cp_sync_reader"}') IS NOT NULL AS created;
-- an object from relation (as in tables: schema-qualified, or by its name
-- alone) to column, for every kind of relation; a view has no key: append.
-- Columns that can be NULL are noticed, with what becomes of their rows
SELECT calabi_push.create_sync('cu-kinds', 'sync-dest',
  ARRAY['cp_sync_test.orders', 'cp_sync_test.events', 'cp_sync_test.paid',
        'cp_sync_test.totals', 'cp_sync_test.remote']::regclass[],
  method => 'cursor', destination_sync_mode => NULL,
  options => '{"cursor": {"cp_sync_test.orders": "id", "events": "at", "cp_sync_test.paid": "amount",
                          "totals": "total", "\"cp_sync_test\".\"remote\"": "id"},
               "run_as": "cp_sync_reader"}') IS NOT NULL AS created;
-- lookback: an interval for a date or time cursor (stored as the interval's
-- text in PostgreSQL's own style, whatever the session's), a number for a
-- numeric one (domains: their base type's)
SET IntervalStyle = iso_8601;
SELECT calabi_push.create_sync('cu-view', 'sync-dest', ARRAY['cp_sync_test.cur_view', 'cp_sync_test.cur_remote']::regclass[],
  method => 'cursor', options => '{"cursor": {"cp_sync_test.cur_view": "updated_at", "cp_sync_test.cur_remote": "changed_at"},
                                   "lookback": "1 hour 30 minutes", "run_as": "cp_sync_reader", "schedule": "5 minutes"}') IS NOT NULL AS created;
RESET IntervalStyle;
SELECT calabi_push.create_sync('cu-seq', 'sync-dest', ARRAY['cp_sync_test.cur_items', 'cp_sync_test.cur_view']::regclass[],
  method => 'cursor', destination_sync_mode => 'append',
  options => '{"cursor": "seq", "lookback": 100, "run_as": "cp_sync_reader"}') IS NOT NULL AS created;
SELECT calabi_push.create_sync('cu-domain', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[],
  method => 'cursor', options => '{"cursor": "version", "lookback": 0, "run_as": "cp_sync_reader"}') IS NOT NULL AS created;
SELECT calabi_push.create_sync('cu-price', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[],
  method => 'cursor', options => '{"cursor": "price", "lookback": 0.5, "run_as": "cp_sync_reader"}') IS NOT NULL AS created;
SELECT calabi_push.create_sync('cu-code', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[],
  method => 'cursor', options => '{"cursor": "code", "lookback": null, "run_as": "cp_sync_reader"}') IS NOT NULL AS created;
SELECT calabi_push.create_sync('cu-shift', 'sync-dest', ARRAY['cp_sync_test.cur_shifting']::regclass[],
  method => 'cursor', options => '{"cursor": "v", "run_as": "cp_sync_reader"}') IS NOT NULL AS created;
SELECT calabi_push.create_sync('cu-shift-lookback', 'sync-dest', ARRAY['cp_sync_test.cur_shifting']::regclass[],
  method => 'cursor', options => '{"cursor": "v", "lookback": 10, "run_as": "cp_sync_reader"}') IS NOT NULL AS created;
RESET ROLE;
-- the options keep lookback, not cursor; the streams keep their column
SELECT name, method, destination_sync_mode, options
  FROM calabi_push.sync WHERE method = 'cursor' ORDER BY name COLLATE "C";
SELECT s.name, st.relid, st.ordinal, st.cursor_column
  FROM calabi_push.sync_stream st JOIN calabi_push.sync s ON s.id = st.sync_id
 WHERE s.method = 'cursor' ORDER BY s.name COLLATE "C", st.ordinal;
-- the other methods' streams have none
SELECT count(*) AS other_streams_with_cursor
  FROM calabi_push.sync_stream st JOIN calabi_push.sync s ON s.id = st.sync_id
 WHERE s.method <> 'cursor' AND st.cursor_column IS NOT NULL;

-- refused: the option missing, or with another method; its value of
-- another shape; relations the object does not name, or names that are not
-- the sync's relations
SET ROLE cp_sync_admin;
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cursor',
  options => '{"cursor": null}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'xmin',
  options => '{"cursor": "id"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
  options => '{"lookback": "10 minutes"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cursor',
  options => '{"cursor": 5}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cursor',
  options => '{"cursor": ["id"]}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cursor',
  options => '{"cursor": ""}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cursor',
  options => '{"cursor": {"cp_sync_test.orders": 1}}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cursor',
  options => '{"cursor": {"cp_sync_test.orders": "id", "cp_sync_test.paid": "id"}}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cursor',
  options => '{"cursor": {"cp_sync_test.no_such_table": "id"}}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[], method => 'cursor',
  options => '{"cursor": {"cp_sync_test.orders": "id", "orders": "status"}}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders', 'cp_sync_test.paid']::regclass[], method => 'cursor',
  options => '{"cursor": {"cp_sync_test.orders": "id"}, "run_as": "cp_sync_reader"}');
RESET ROLE;
CREATE TABLE cp_sync_test.t (id int);
SET ROLE cp_sync_admin;
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_closed.t', 'cp_sync_test.t']::regclass[], method => 'cursor',
  options => '{"cursor": {"t": "id"}}');
RESET ROLE;
DROP TABLE cp_sync_test.t;
SET ROLE cp_sync_admin;
-- the column: missing (names are exact), dropped, a system column, of a
-- type without a default ordering (a domain's: its base type's)
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "updated", "run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "stamp", "run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "gone", "run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "xmin", "run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "ctid", "run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "spot", "run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "spot_too", "run_as": "cp_sync_reader"}');
-- the mode: overwrite, an unknown one, append_dedup without a key (a
-- table, a view, a foreign table)
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  destination_sync_mode => 'overwrite', options => '{"cursor": "updated_at", "run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  destination_sync_mode => 'upsert', options => '{"cursor": "updated_at", "run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.keyless']::regclass[], method => 'cursor',
  destination_sync_mode => 'append_dedup', options => '{"cursor": "x", "run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items', 'cp_sync_test.cur_view']::regclass[], method => 'cursor',
  destination_sync_mode => 'append_dedup', options => '{"cursor": "updated_at", "run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_remote']::regclass[], method => 'cursor',
  destination_sync_mode => 'append_dedup', options => '{"cursor": "changed_at", "run_as": "cp_sync_reader"}');
-- lookback: of the wrong form, negative, not fitting the cursor's type
-- (an interval for a number, a number for a timestamp, either for text, a
-- fraction for an integer)
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "updated_at", "lookback": true}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "updated_at", "lookback": "a while"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "updated_at", "lookback": "-5 minutes"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "seq", "lookback": -1}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "seq", "lookback": "10 minutes", "run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "updated_at", "lookback": 600, "run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "label", "lookback": "10 minutes", "run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.cur_items']::regclass[], method => 'cursor',
  options => '{"cursor": "seq", "lookback": 2.5, "run_as": "cp_sync_reader"}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders', 'cp_sync_test.events']::regclass[], method => 'cursor',
  destination_sync_mode => 'append',
  options => '{"cursor": {"cp_sync_test.orders": "id", "cp_sync_test.events": "at"}, "lookback": 10, "run_as": "cp_sync_reader"}');
RESET ROLE;
SELECT count(*) AS syncs_named_x FROM calabi_push.sync WHERE name = 'x';
-- a role that may not SELECT the cursor column: create_sync and start_sync
-- ask for SELECT on every column of each relation first, so the cursor's
-- own check is seen by calling it directly (cp_sync_reader may SELECT
-- only id of secret)
SELECT calabi_push._check_cursor_relation('cp_sync_test.secret', 'cp_sync_reader'::regrole, 'append', 'card', NULL);

-- start_sync checks the cursor columns again, naming the sync, the
-- relation and the column: renamed, changed to a type that does not fit
-- "lookback", or to one without an ordering
ALTER TABLE cp_sync_test.cur_items RENAME COLUMN updated_at TO modified_at;
SET ROLE cp_sync_admin;
SELECT calabi_push.start_sync('cu-table');
RESET ROLE;
ALTER TABLE cp_sync_test.cur_items RENAME COLUMN modified_at TO updated_at;
ALTER TABLE cp_sync_test.cur_shifting ALTER COLUMN v TYPE timestamptz USING to_timestamp(v);
SET ROLE cp_sync_admin;
SELECT calabi_push.start_sync('cu-shift-lookback');
RESET ROLE;
ALTER TABLE cp_sync_test.cur_shifting ALTER COLUMN v TYPE point USING point(extract(epoch FROM v), 0);
SET ROLE cp_sync_admin;
SELECT calabi_push.start_sync('cu-shift');
RESET ROLE;
-- a stream left without a column (the catalog edited by hand)
BEGIN;
UPDATE calabi_push.sync_stream SET cursor_column = NULL
 WHERE sync_id = (SELECT id FROM calabi_push.sync WHERE name = 'cu-table');
SELECT calabi_push.start_sync('cu-table');
ROLLBACK;
-- back as it was, it starts (rolled back: no worker)
BEGIN;
SET LOCAL ROLE cp_sync_admin;
SELECT calabi_push.start_sync('cu-table');
SELECT calabi_push.start_sync('cu-kinds');
ROLLBACK;

-- stream_status: the cursor column of each stream; nothing read yet
SELECT sync, relation, cursor_field, cursor_value, read, position
  FROM calabi_push.stream_status WHERE sync IN ('cu-kinds', 'cu-view') ORDER BY sync COLLATE "C", ordinal;
-- as the worker leaves them (its checkpoint is the contract): a view read
-- incrementally from the previous run's largest cursor value, a table
-- whose position is a snapshot
UPDATE calabi_push.sync_stream t
   SET phase = 'done', generation = 1, rows_sent = 4,
       checkpoint = '{"method": "cursor", "generation": 1, "phase": "done", "read": "incremental",
                      "rows": 4, "since": "2025-03-01 10:00:00+00", "cursor": "2025-03-01 10:20:00+00"}'
 WHERE t.sync_id = (SELECT id FROM calabi_push.sync WHERE name = 'cu-view') AND t.ordinal = 1;
UPDATE calabi_push.sync_stream t
   SET phase = 'done', generation = 1, rows_sent = 2,
       checkpoint = '{"method": "cursor", "generation": 1, "phase": "done", "read": "incremental",
                      "rows": 2, "since": "800:805:802", "cursor": "41",
                      "pages_examined": 2, "pages_skipped": 30,
                      "pages_found_by": "page_lsn", "wal_bytes_read": 0}'
 WHERE t.sync_id = (SELECT id FROM calabi_push.sync WHERE name = 'cu-kinds') AND t.ordinal = 1;
SELECT sync, relation, phase, read, position, cursor_field, cursor_value, last_run_rows, pages_examined, pages_skipped,
       pages_found_by, wal_bytes_read
  FROM calabi_push.stream_status WHERE sync IN ('cu-kinds', 'cu-view') ORDER BY sync COLLATE "C", ordinal;
-- resync forgets the position and the largest value, not the column
SET ROLE cp_sync_admin;
SELECT calabi_push.resync('cu-view');
RESET ROLE;
SELECT sync, relation, phase, cursor_field, cursor_value, position
  FROM calabi_push.stream_status WHERE sync = 'cu-view' ORDER BY ordinal;
SELECT string_agg(name, ', ' ORDER BY name COLLATE "C") AS dropped
  FROM (SELECT name, calabi_push.drop_sync(name) FROM calabi_push.sync WHERE method = 'cursor') s;

------------------------------------------------------------------------------
-- error codes, one of each kind
SET ROLE cp_sync_admin;
SELECT stmt, pg_temp.try(stmt) FROM (VALUES
    ('SELECT calabi_push.create_sync(NULL, ''sync-dest'', ''{cp_sync_test.orders}'')'),
    ('SELECT calabi_push.create_sync(''a b'', ''sync-dest'', ''{cp_sync_test.orders}'')'),
    ('SELECT calabi_push.create_sync(''orders-only'', ''sync-dest'', ''{cp_sync_test.orders}'')'),
    ('SELECT calabi_push.create_sync(''x'', ''no-such-dest'', ''{cp_sync_test.orders}'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{cp_sync_test.orders}'', method => ''cdc'', destination_sync_mode => ''overwrite'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{cp_sync_test.orders}'', method => ''push'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{cp_sync_test.orders}'', destination_sync_mode => ''append_dedup'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{}'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{cp_sync_test.orders,NULL}'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{cp_sync_test.order_seq}'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{4294967295}'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{cp_sync_test.hidden}'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{cp_sync_test.orders}'', options => ''{"run_as": "cp_sync_stranger"}'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{cp_sync_test.orders}'', options => ''{"run_as": "no_such_role"}'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{cp_sync_test.orders}'', options => ''{"batch_rows": 0}'')'),
    ('SELECT calabi_push.stop_sync(''orders-only'')'),
    ('SELECT calabi_push.resync(''orders-only'', ''cp_sync_test.paid'')'),
    ('SELECT calabi_push.start_sync(''no-such-sync'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{cp_sync_test.orders}'', method => ''cursor'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{cp_sync_test.orders}'', method => ''cursor'', options => ''{"cursor": "updated"}'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{cp_sync_test.cur_items}'', method => ''cursor'', options => ''{"cursor": "spot", "run_as": "cp_sync_reader"}'')'),
    ('SELECT calabi_push.create_sync(''x'', ''sync-dest'', ''{cp_sync_test.paid}'', method => ''cursor'', destination_sync_mode => ''append_dedup'', options => ''{"cursor": "id", "run_as": "cp_sync_reader"}'')')
  ) v(stmt);
RESET ROLE;

------------------------------------------------------------------------------
-- a table of a sync that was dropped meanwhile: start_sync says which and how
-- to recover; stream_status shows it by its OID
CREATE TABLE cp_sync_test.vanishing (id int PRIMARY KEY);
SELECT calabi_push.create_sync('vanish', 'sync-dest', ARRAY['cp_sync_test.vanishing']::regclass[]) IS NOT NULL AS created;
DROP TABLE cp_sync_test.vanishing;
\set VERBOSITY terse
SELECT calabi_push.start_sync('vanish');
\set VERBOSITY default
DO $$ BEGIN PERFORM calabi_push.start_sync('vanish');
EXCEPTION WHEN undefined_table THEN
  DECLARE hint text;
  BEGIN
    GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
    RAISE NOTICE 'hint: %', hint;
  END;
END $$;
SELECT relation::oid > 0 AS dangling_oid, phase FROM calabi_push.stream_status WHERE sync = 'vanish';
-- run_on: where a sync runs (24_run_on.sql).  Checked for its form.
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
                               options => '{"run_on": 5}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
                               options => '{"run_on": ""}');
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
                               options => jsonb_build_object('run_on', repeat('r', 64)));
SELECT calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
                               options => '{"run_on": "replica\n1"}');
-- A cdc sync runs on a standby from PostgreSQL 16 on (TAP 100); before,
-- create_sync refuses it (feature_not_supported).
DO $$
BEGIN
  PERFORM calabi_push.create_sync('x', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
                                  method => 'cdc', options => '{"run_on": "replica1"}');
  RAISE NOTICE 'cdc on a standby, as the version says: %',
    current_setting('server_version_num')::int >= 160000;
  PERFORM calabi_push.drop_sync('x');
EXCEPTION WHEN feature_not_supported THEN
  RAISE NOTICE 'cdc on a standby, as the version says: %',
    current_setting('server_version_num')::int < 160000;
END $$;
SELECT count(*) AS half_created FROM calabi_push.sync WHERE name = 'x';
-- "primary" is the default, stored as no option
SELECT calabi_push.create_sync('on_primary', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
                               options => '{"run_on": "primary"}') IS NOT NULL AS created;
SELECT options ? 'run_on' AS has_run_on FROM calabi_push.sync WHERE name = 'on_primary';
SELECT calabi_push.drop_sync('on_primary');
-- a sync that runs on a standby: this server (no such cluster_name) starts
-- no worker for it, and says where it runs
SELECT calabi_push.create_sync('on_replica', 'sync-dest', ARRAY['cp_sync_test.orders']::regclass[],
                               options => '{"run_on": "replica1"}') IS NOT NULL AS created;
SELECT options->>'run_on' AS run_on FROM calabi_push.sync WHERE name = 'on_replica';
SELECT calabi_push._runs_here(options) AS runs_here FROM calabi_push.sync WHERE name = 'on_replica';
SELECT calabi_push.start_sync('on_replica');
SELECT pg_sleep(0.5);
SELECT state, state_detail, pid FROM calabi_push.sync_status WHERE name = 'on_replica';
-- its server may have stopped it (a refusal, a run done) without this
-- catalog knowing: start_sync and resync are commands it applies, numbered
SELECT calabi_push.start_sync('on_replica');
SELECT calabi_push.resync('on_replica', 'cp_sync_test.orders');
SELECT command_seq, start_command, restart_command, slot_reset_command, enabled, error_stopped
  FROM calabi_push.sync WHERE name = 'on_replica';
SELECT t.reset_command FROM calabi_push.sync_stream t
  JOIN calabi_push.sync s ON s.id = t.sync_id WHERE s.name = 'on_replica';
SELECT calabi_push.stop_sync('on_replica');
SELECT state FROM calabi_push.sync_status WHERE name = 'on_replica';
SELECT calabi_push.drop_sync('on_replica');

-- The state a standby keeps for such a sync (24_run_on.sql), computed by
-- SQL functions that run on a primary as well.
SELECT calabi_push.create_sync('on_replica', 'sync-dest',
                               ARRAY['cp_sync_test.orders', 'cp_sync_test.paid']::regclass[],
                               destination_sync_mode => 'append',
                               options => '{"run_on": "replica1"}') IS NOT NULL AS created;
CREATE TEMP TABLE st AS
SELECT s.id, calabi_push._state_load(s.id, NULL) AS state FROM calabi_push.sync s WHERE s.name = 'on_replica';
-- the first state: the catalog's progress, numbers above any used before
SELECT (state#>>'{sync,next_batch_seq}')::int8 > 1700000000::int8 * 1048576 AS seq_above_floor,
       (SELECT bool_and((e->>'generation')::int8 > 1700000000::int8 * 1048576)
          FROM jsonb_array_elements(state->'streams') e) AS generations_above_floor,
       state->'applied_command' AS applied, state->'writes' AS writes
  FROM st;
-- only progress is read from a state: never the definition
SELECT y.method, y.run_as, y.destination, y.records_sent, y.next_batch_seq
  FROM calabi_push.sync s,
       calabi_push._sync_state(s, '{"sync": {"method": null, "run_as": 10, "destination": "x",
                                             "records_sent": 7, "next_batch_seq": null}}') y
 WHERE s.name = 'on_replica';
SELECT y.phase, y.rows_sent, y.cursor_column
  FROM calabi_push.sync_stream t,
       calabi_push._stream_state(t, jsonb_build_object('streams', jsonb_build_array(jsonb_build_object(
           'relid', t.relid::oid, 'phase', 'nonsense', 'rows_sent', 3, 'cursor_column', 'x')))) y
 WHERE t.relid = 'cp_sync_test.orders'::regclass
   AND t.sync_id = (SELECT id FROM calabi_push.sync WHERE name = 'on_replica');
-- both streams done; then start_sync, then resync of one: applied in their
-- order, the new run reads both, the resync's stream from its start
UPDATE st SET state = jsonb_set(state, '{streams}', (
    SELECT jsonb_agg(e || '{"phase": "done", "checkpoint": {"phase": "done"}, "rows_sent": 5}')
      FROM jsonb_array_elements(state->'streams') e));
SELECT calabi_push.start_sync('on_replica');
SELECT calabi_push.resync('on_replica', 'cp_sync_test.paid');
SELECT e->>'relid' = 'cp_sync_test.paid'::regclass::oid::text AS paid, e->>'phase' AS phase,
       e->'checkpoint' AS checkpoint, e->'rows_sent' AS rows_sent
  FROM st, jsonb_array_elements(calabi_push._state_load(st.id, st.state)->'streams') e ORDER BY 1;
SELECT calabi_push._state_load(st.id, st.state)->'applied_command' AS applied FROM st;
-- a promoted standby takes its state over, with the commands applied,
-- once (the file's writes)
UPDATE st SET state = calabi_push._state_written(jsonb_set(state, '{sync,records_sent}', '42'));
SELECT calabi_push._state_import(st.id, calabi_push._state_load(st.id, st.state)) AS imported FROM st;
SELECT calabi_push._state_import(st.id, calabi_push._state_load(st.id, st.state)) AS imported_again FROM st;
SELECT records_sent, standby_import > 0 AS import_recorded,
       next_batch_seq > 1700000000::int8 * 1048576 AS seq_above_floor
  FROM calabi_push.sync WHERE name = 'on_replica';
SELECT t.phase, t.checkpoint FROM calabi_push.sync_stream t JOIN calabi_push.sync s ON s.id = t.sync_id
 WHERE s.name = 'on_replica' ORDER BY t.ordinal;
-- a sync cannot name this server's own cluster_name (not testable here:
-- this instance has none; test/t/099_run_on_standby.pl)
SELECT calabi_push.drop_sync('on_replica');


------------------------------------------------------------------------------
-- clean up
SELECT string_agg(name, ', ' ORDER BY name COLLATE "C") AS dropped
  FROM (SELECT name, calabi_push.drop_sync(name) FROM calabi_push.sync ORDER BY name COLLATE "C") s;
SELECT calabi_push.drop_destination('sync-dest');
SELECT calabi_push.drop_destination('sync-dest-2');
SET client_min_messages = warning;
DROP SCHEMA cp_sync_test, cp_sync_closed CASCADE;
RESET client_min_messages;
DROP SERVER cp_sync_server;
DROP FOREIGN DATA WRAPPER cp_sync_fdw;
DROP OWNED BY cp_sync_admin, cp_sync_reader, cp_sync_stranger, cp_sync_nobody;
DROP ROLE cp_sync_admin, cp_sync_reader, cp_sync_stranger, cp_sync_nobody;

------------------------------------------------------------------------------
-- the identity a management function acts for cannot be borrowed: not by
-- calling the implementation directly, not from inside a security-restricted
-- operation (here an index expression's function during CREATE INDEX and
-- ANALYZE, which run it as the table's owner), even for a superuser
CREATE TABLE cp_planted_t (i int);
CREATE ROLE cp_sync_direct;
GRANT USAGE ON SCHEMA calabi_push TO cp_sync_direct;
GRANT EXECUTE ON FUNCTION calabi_push.create_sync(text, text, regclass[], text, text, jsonb)
  TO cp_sync_direct;
SET ROLE cp_sync_direct;
SELECT calabi_push._create_sync('direct', 'sync-dest', ARRAY['cp_planted_t']::regclass[]);
SELECT calabi_push._caller();
RESET ROLE;
CREATE FUNCTION cp_planted(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  PERFORM calabi_push.create_sync('planted', 'sync-dest', ARRAY['public.cp_planted_t']::regclass[]);
  RETURN i;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE NOTICE 'refused: %', SQLERRM;
  RETURN i;
END $$;
INSERT INTO cp_planted_t VALUES (1);
CREATE INDEX ON cp_planted_t (cp_planted(i));
ANALYZE cp_planted_t;
SELECT count(*) AS planted_syncs FROM calabi_push.sync_status WHERE name = 'planted';
-- a superuser's sync of a view another role owns: warned that the view's
-- functions will run as a superuser
CREATE ROLE cp_view_owner;
CREATE VIEW cp_planted_v AS SELECT i FROM cp_planted_t;
ALTER VIEW cp_planted_v OWNER TO cp_view_owner;
GRANT SELECT ON cp_planted_t TO cp_view_owner;
SELECT calabi_push.create_destination('view-dest', 'https://ingest.example.com/v1');
CREATE ROLE cp_view_su SUPERUSER;
SELECT calabi_push.create_sync('su_view', 'view-dest', ARRAY['cp_planted_v']::regclass[],
                               options => '{"run_as": "cp_view_su"}') IS NOT NULL AS created;
SELECT calabi_push.drop_sync('su_view');
SELECT calabi_push.drop_destination('view-dest');
DROP VIEW cp_planted_v;
REVOKE ALL ON cp_planted_t FROM cp_view_owner;
DROP ROLE cp_view_owner, cp_view_su;
DROP TABLE cp_planted_t;
DROP FUNCTION cp_planted(int);
REVOKE ALL ON SCHEMA calabi_push FROM cp_sync_direct;
REVOKE ALL ON FUNCTION calabi_push.create_sync(text, text, regclass[], text, text, jsonb)
  FROM cp_sync_direct;
DROP ROLE cp_sync_direct;

