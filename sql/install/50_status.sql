-- Observation: one row per sync, one row per sync and stream.  No secrets;
-- nothing granted to PUBLIC (GRANT SELECT to the roles that watch: that is
-- enough, _sync_runtime() admits them).

CREATE VIEW sync_status AS
SELECT s.name,
       s.id,
       s.method,
       s.destination_sync_mode,
       s.destination,
       CASE
           -- made elsewhere (a restored dump, a promoted clone beside its
           -- primary): it does not run here until adopt_sync(); last_error
           -- says why and how
           WHEN c.why IS NOT NULL THEN 'copied'
           -- (on a standby that runs the sync, its state file says so)
           WHEN s.error_stopped THEN 'error'
           WHEN NOT s.enabled THEN 'stopped'
           -- the sync runs on another server (option run_on): on the
           -- primary, one of its standbys; on a hot standby, its primary
           -- (a promoted server runs them from then on)
           WHEN NOT calabi_push._runs_here(s.options) THEN
               CASE WHEN pg_catalog.pg_is_in_recovery() THEN 'standby' ELSE 'on_standby' END
           -- a CDC sync's first start creates its slot, which waits for
           -- the transactions running then to end (state_detail: which);
           -- on a standby always, for the primary's (docs/cdc.md)
           WHEN r.state = 'creating_slot' THEN
               CASE WHEN w.waits_for IS NOT NULL OR pg_catalog.pg_is_in_recovery()
                    THEN 'waiting_for_transactions' ELSE 'starting' END
           WHEN r.state IS NOT NULL THEN r.state
           WHEN s.run_completed_at IS NOT NULL AND r.last_exit = 'done' THEN 'idle'
           WHEN r.next_restart_at IS NOT NULL THEN 'retrying'
           ELSE 'starting'
       END AS state,
       -- where it runs, and (on the primary) how many standbys of that
       -- name stream from it now: none, the sync does not run; more than
       -- one, each runs it (give each its own cluster_name)
       CASE WHEN NOT calabi_push._runs_here(s.options) AND s.options ? 'run_on' THEN
                pg_catalog.format('it runs on the server whose cluster_name is %L: its sync_status there shows its progress%s',
                                  s.options->>'run_on',
                                  CASE WHEN NOT pg_catalog.pg_is_in_recovery() THEN
                                      (SELECT CASE pg_catalog.count(*)
                                                  WHEN 0 THEN ' (no standby of that name streams from this server now)'
                                                  WHEN 1 THEN ''
                                                  ELSE pg_catalog.format(' (%s standbys of that name stream from this server: each runs the sync; give each its own cluster_name)',
                                                                         pg_catalog.count(*))
                                              END
                                         FROM pg_catalog.pg_stat_replication r
                                        WHERE r.application_name = s.options->>'run_on')
                                  ELSE '' END)
            WHEN r.state = 'creating_slot' AND pg_catalog.pg_is_in_recovery() THEN
                'its new replication slot waits for the primary to record the transactions running there, and for those to end: the primary records them every 15 s while it writes, SELECT pg_log_standby_snapshot() on the primary at once'
            WHEN r.state = 'waiting_for_standbys' THEN
                'its failover slot waits for the standbys of synchronized_standby_slots ('
                || pg_catalog.current_setting('synchronized_standby_slots', true)
                || ') to flush the WAL it would decode: see pg_replication_slots'
            ELSE 'its new replication slot waits for these transactions to end: ' || w.waits_for
       END AS state_detail,
       r.pid,
       s.run_started_at AS started_at,
       s.run_completed_at AS completed_at,
       s.last_ack_at,
       s.batches_sent,
       s.records_sent,
       s.bytes_sent,
       s.retries + coalesce(r.retries, 0) AS retries,
       coalesce(r.next_retry_at, r.next_restart_at) AS next_attempt_at,
       -- the start of an endpoint's response may hold what another service
       -- keeps secret: shown to the destination's owner (members of its
       -- created_by role) and superusers only, the others see the message
       -- without it
       CASE WHEN c.why IS NOT NULL THEN c.why
            WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles u
                          WHERE u.rolname = current_user AND u.rolsuper)
                 OR EXISTS (SELECT 1
                              FROM calabi_push.destination d
                              JOIN pg_catalog.pg_roles o ON o.rolname = d.created_by
                             WHERE d.name = s.destination
                               AND pg_catalog.pg_has_role(o.oid, 'MEMBER'))
            THEN s.last_error
            ELSE coalesce(s.last_error_redacted, s.last_error)
       END AS last_error,
       s.last_error_at,
       -- cdc: the sync's slot, the positions sent and acknowledged, and how
       -- far behind the WAL the acknowledged position is
       CASE WHEN s.method = 'cdc' THEN 'calabi_push_' || replace(s.id::text, '-', '') END AS slot_name,
       r.cdc_sent_lsn AS lsn_sent,
       coalesce(r.cdc_acked_lsn, s.cdc_lsn) AS lsn_acknowledged,
       CASE WHEN s.method = 'cdc' THEN
           pg_catalog.pg_wal_lsn_diff(CASE WHEN pg_catalog.pg_is_in_recovery()
                                           THEN pg_catalog.pg_last_wal_replay_lsn()
                                           ELSE pg_catalog.pg_current_wal_lsn() END,
                                      coalesce(r.cdc_acked_lsn, s.cdc_lsn))::int8
       END AS lag_bytes,
       -- the age of the oldest committed change not yet acknowledged:
       -- its commit time when decoded, else the last time the decoder had
       -- read all the WAL flushed (cdc_sync.c, report_progress); 0 when
       -- caught up.  now() may precede a commit seen after this statement
       -- began: never negative.
       CASE WHEN s.method = 'cdc' AND r.pid IS NOT NULL THEN
           greatest(coalesce(now() - r.cdc_pending_since, interval '0'), interval '0')
       END AS lag_time
  -- a sync that runs on this standby: its progress is in its state file
  FROM calabi_push.sync s0
  CROSS JOIN LATERAL calabi_push._sync_state(s0, calabi_push._standby_state(s0.id)) s
  -- why the sync is a copy of one made elsewhere (NULL: it belongs here)
  CROSS JOIN LATERAL (SELECT calabi_push._copied(s.name, s.home_system, s.home_database,
                                                 s.home_timeline,
                                                 s.options ? 'run_on'
                                                 AND calabi_push._runs_here(s.options)) AS why) c
  LEFT JOIN calabi_push._sync_runtime() r ON r.sync_id = s.id
  -- the worker creating the slot waits on the lock of each transaction
  -- running when it began, in turn: the sessions holding them.  A prepared
  -- transaction has none (pid 0).  The age of another role's transaction
  -- is shown only to roles that may see it in pg_stat_activity.
  LEFT JOIN LATERAL (
      SELECT pg_catalog.string_agg(
                 CASE WHEN b.pid = 0 THEN 'a prepared transaction (see pg_prepared_xacts)'
                      ELSE pg_catalog.format('process %s (transaction %s%s)', b.pid, a.backend_xid,
                                             ', open for ' || pg_catalog.date_trunc('second', now() - a.xact_start))
                 END, ', ' ORDER BY a.xact_start, b.pid) AS waits_for
        FROM pg_catalog.unnest(CASE WHEN r.state = 'creating_slot'
                                    THEN pg_catalog.pg_blocking_pids(r.pid) END) AS b(pid)
        LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = b.pid AND b.pid <> 0) w ON true;

COMMENT ON VIEW sync_status IS
'one row per sync: state (starting, waiting_for_transactions, running, waiting_for_standbys, retrying, idle, waiting_for_worker, stopped, error, copied, standby, on_standby) and what it waits for, worker, progress counters and the last error';

CREATE VIEW stream_status AS
-- a sync that runs on this standby: its progress is in its state file,
-- read once per sync (not once per stream)
WITH states AS MATERIALIZED (
    SELECT y.id, calabi_push._standby_state(y.id) AS state FROM calabi_push.sync y
),
streams AS (
    SELECT st.*, c.relkind,
           CASE c.relkind
               WHEN 'p' THEN (SELECT sum(greatest(pc.reltuples, 0))::int8
                                FROM pg_catalog.pg_partition_tree(st0.relid) pt
                                JOIN pg_catalog.pg_class pc ON pc.oid = pt.relid
                               WHERE pt.isleaf)
               WHEN 'r' THEN nullif(c.reltuples, -1)::int8
               WHEN 'm' THEN nullif(c.reltuples, -1)::int8
           END AS rows_estimate
      FROM calabi_push.sync_stream st0
      JOIN states f ON f.id = st0.sync_id
      CROSS JOIN LATERAL calabi_push._stream_state(st0, f.state) st
      LEFT JOIN pg_catalog.pg_class c ON c.oid = st0.relid
)
SELECT s.name AS sync,
       st.relid AS relation,
       st.ordinal,
       st.phase,
       st.generation,
       st.rows_sent,
       st.rows_estimate,
       CASE
           WHEN st.phase = 'done' THEN 100.0
           WHEN st.rows_estimate > 0
               THEN least(round(100.0 * st.rows_sent / st.rows_estimate, 1), 99.9)
       END AS percent_done,
       CASE
           WHEN st.phase = 'reading' AND st.rows_sent > 0 AND st.rows_estimate > st.rows_sent
               THEN now() + (now() - st.read_started_at)
                            * ((st.rows_estimate - st.rows_sent)::float8 / st.rows_sent)
       END AS eta,
       st.read_started_at,
       st.read_finished_at,
       st.checkpoint,
       -- methods that read what changed since their previous run (xmin,
       -- cursor; NULL for the others): whether the current or last run
       -- reads the stream whole ('full': the first run, after resync, or
       -- when the position could not be used, as full_read_reason says) or
       -- what changed ('incremental'); the position (xmin, and cursor over
       -- a table, a partitioned table or a materialized view: a snapshot in
       -- pg_snapshot text form; cursor over a view or a foreign table: the
       -- previous run's largest cursor value, as text; once the stream is
       -- done, its run's, which the next run compares against; while a run
       -- reads incrementally, the one it compares against; none during a
       -- full read); the rows, pages examined and pages skipped of that run
       -- (so far, while it reads); how it found the pages it examined
       -- ('wal': the blocks the WAL written since the previous run
       -- references; 'page_lsn': every page's LSN, the WAL being removed or
       -- larger than the relation; 'every_page': no position to compare
       -- LSNs with: a full read, an unlogged or rewritten relation) and the
       -- bytes of WAL it read for that.  The worker's checkpoint JSON is the
       -- contract (src/xmin*.c, and the cursor method's).
       st.checkpoint->>'read' AS read,
       st.checkpoint->>'since' AS position,
       CASE WHEN st.checkpoint->>'read' IS NOT NULL THEN (st.checkpoint->>'rows')::int8 END AS last_run_rows,
       (st.checkpoint->>'pages_examined')::int8 AS pages_examined,
       (st.checkpoint->>'pages_skipped')::int8 AS pages_skipped,
       st.checkpoint->>'pages_found_by' AS pages_found_by,
       (st.checkpoint->>'wal_bytes_read')::int8 AS wal_bytes_read,
       st.checkpoint->>'full_reason' AS full_read_reason,
       -- cursor (NULL for the other methods): the stream's cursor column,
       -- and the largest value of it the stream's reads have sent so far
       -- (as text; NULL before the first acknowledged batch)
       st.cursor_column AS cursor_field,
       st.checkpoint->>'cursor' AS cursor_value
  FROM streams st
  JOIN calabi_push.sync s ON s.id = st.sync_id;

COMMENT ON VIEW stream_status IS
'one row per sync and stream: phase, rows sent, estimated total, percent done, ETA and the acknowledged checkpoint; for xmin and cursor, whether the run reads the stream whole or what changed (read, full_read_reason), its position, and the rows and pages (examined, skipped, how they were found, WAL bytes read) of the last run; for cursor, the cursor column (cursor_field) and the largest value of it sent so far (cursor_value)';

REVOKE ALL ON sync_status, stream_status FROM PUBLIC;
