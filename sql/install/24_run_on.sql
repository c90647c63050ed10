------------------------------------------------------------------------------
-- Where a sync runs (the sync option "run_on"; docs/operations.md, "Syncs
-- that run on a standby").  By default a sync runs on the primary.  Named
-- after a server's cluster_name, it runs on that server only: typically a
-- hot standby, so that reading and decoding stay off the primary.
--
-- A standby cannot write the catalog, which is its primary's read-only
-- copy.  There the catalog keeps what the DBA decides (definition, enabled,
-- the commands start_sync and resync), and the sync's progress (checkpoints,
-- batch numbers, counters, errors) lives in a state file of its own in the
-- standby's data directory (src/state_file.c), written atomically and
-- fsynced.  The state file holds the progress columns of the sync row and of
-- its sync_stream rows as JSON:
--   {"sync": {...}, "streams": [{"relid": <oid>, ...}, ...],
--    "applied_command": <sync.command_seq applied>, "writes": <n>}
-- and the functions below read the catalog through it (_sync_state,
-- _stream_state), so that the worker, sync_status and stream_status see
-- one sync whichever server it runs on.
------------------------------------------------------------------------------

-- Whether a sync with these options runs on this server.
CREATE FUNCTION _runs_here(options jsonb)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN coalesce(options->>'run_on', 'primary') = 'primary'
              THEN NOT pg_is_in_recovery()
              ELSE options->>'run_on' = current_setting('cluster_name') END
$$;
GRANT EXECUTE ON FUNCTION _runs_here(jsonb) TO PUBLIC;

-- The state file of a sync that runs on this standby (NULL: none, or this
-- server is not in recovery).  Executable by PUBLIC for sync_status; it
-- admits the roles that may read that view, as _sync_runtime() does.
CREATE FUNCTION _standby_state(sync_id uuid)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'calabi_push_standby_state'
LANGUAGE C STRICT STABLE;
GRANT EXECUTE ON FUNCTION _standby_state(uuid) TO PUBLIC;

-- The progress of a sync row (the columns its state file keeps).
CREATE FUNCTION _state_of_sync(s sync)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT jsonb_build_object(
      'next_batch_seq', s.next_batch_seq, 'batches_sent', s.batches_sent,
      'records_sent', s.records_sent, 'bytes_sent', s.bytes_sent,
      'retries', s.retries, 'last_ack_at', s.last_ack_at,
      'last_error', s.last_error, 'last_error_redacted', s.last_error_redacted,
      'last_error_at', s.last_error_at, 'error_stopped', s.error_stopped,
      'run_started_at', s.run_started_at, 'run_completed_at', s.run_completed_at,
      'cdc_lsn', s.cdc_lsn)
$$;

-- The progress of a sync_stream row; relid as a number (its name may change).
CREATE FUNCTION _state_of_stream(t sync_stream)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT jsonb_build_object(
      'relid', t.relid::oid, 'phase', t.phase, 'generation', t.generation,
      'checkpoint', t.checkpoint, 'rows_sent', t.rows_sent,
      'read_started_at', t.read_started_at, 'read_finished_at', t.read_finished_at)
$$;

-- A sync row as the state (NULL: the catalog's own) says it is.  Only the
-- progress columns are taken from the state, and a NOT NULL one only when
-- it is not null: the definition (method, role, destination, options) is
-- the catalog's, whatever a state file on disk holds.
CREATE FUNCTION _sync_state(s sync, state jsonb)
RETURNS sync
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
  SELECT jsonb_populate_record(s, (
      SELECT jsonb_object_agg(k, v) FROM jsonb_each(state->'sync') e(k, v)
       WHERE k IN ('last_ack_at', 'last_error', 'last_error_redacted', 'last_error_at',
                   'run_started_at', 'run_completed_at', 'cdc_lsn')
          OR (k IN ('next_batch_seq', 'batches_sent', 'records_sent', 'bytes_sent',
                    'retries', 'error_stopped') AND v <> 'null')))
$$;
GRANT EXECUTE ON FUNCTION _sync_state(sync, jsonb) TO PUBLIC;

-- The same of a stream row (its progress: phase, generation, checkpoint,
-- rows sent, read times).
CREATE FUNCTION _stream_state(t sync_stream, state jsonb)
RETURNS sync_stream
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
  SELECT jsonb_populate_record(t, (
      SELECT jsonb_object_agg(k, v)
        FROM jsonb_array_elements(state->'streams') e, jsonb_each(e) f(k, v)
       WHERE (e->>'relid')::oid = t.relid::oid
         AND (k IN ('checkpoint', 'read_started_at', 'read_finished_at')
              OR (k IN ('generation', 'rows_sent') AND v <> 'null')
              OR (k = 'phase' AND v <@ '["pending", "reading", "done"]'))))
$$;
GRANT EXECUTE ON FUNCTION _stream_state(sync_stream, jsonb) TO PUBLIC;

------------------------------------------------------------------------------
-- What a standby's worker records (src/catalog.c, file mode): each takes a
-- state and returns the next one, applying the rule the catalog's own
-- updates apply on a primary (shared where it is more than an assignment).
------------------------------------------------------------------------------

-- The endpoint acknowledged a checkpoint of stream t (state: its STATE
-- message's object).  A resync resets the stream to 'pending' without a
-- checkpoint while the worker may still be acknowledging the read it
-- abandons: never bring that back.  A new read always has a greater
-- generation.  A stream made 'pending' by start_sync or a new run keeps its
-- checkpoint, and an incremental run (xmin) its generation.
CREATE FUNCTION _acked_stream(t sync_stream, state jsonb)
RETURNS sync_stream
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
BEGIN
    IF t.phase = 'pending' AND t.checkpoint IS NULL
       AND NOT (state->>'generation')::int8 > t.generation THEN
        RETURN t;
    END IF;
    IF t.generation IS DISTINCT FROM (state->>'generation')::int8 OR t.phase = 'pending' THEN
        t.read_started_at := now();
    END IF;
    t.read_finished_at := CASE WHEN state->>'phase' = 'done' THEN now() END;
    t.checkpoint := state;
    t.phase := state->>'phase';
    t.rows_sent := coalesce((state->>'rows')::int8, 0);
    t.generation := coalesce((state->>'generation')::int8, t.generation);
    RETURN t;
END
$$;

-- The endpoint acknowledged batches: counters, and for cdc the position
-- they reach ('0/0': none).  A NULL cdc_lsn (resync asked for a new slot)
-- is not undone by a late acknowledgement.
CREATE FUNCTION _acked_sync(s sync, batches int8, records int8, bytes int8, retries int8,
                            reached pg_lsn)
RETURNS sync
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
BEGIN
    s.batches_sent := s.batches_sent + batches;
    s.records_sent := s.records_sent + records;
    s.bytes_sent := s.bytes_sent + bytes;
    s.retries := s.retries + _acked_sync.retries;
    s.last_ack_at := now();
    IF reached <> '0/0' AND s.cdc_lsn IS NOT NULL THEN
        s.cdc_lsn := greatest(s.cdc_lsn, reached);
    END IF;
    RETURN s;
END
$$;

-- state with its sync row's progress taken from s.
CREATE FUNCTION _state_with_sync(state jsonb, s sync)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$ SELECT jsonb_set(state, '{sync}', _state_of_sync(s)) $$;

-- The sync row (of the catalog, for what the state does not keep) read
-- through the state.
CREATE FUNCTION _state_sync(sync_id uuid, state jsonb)
RETURNS sync
LANGUAGE sql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$ SELECT _sync_state(s, state) FROM sync s WHERE s.id = sync_id $$;

-- acks: [{"relid": <oid>, "state": {...}}, ...]
CREATE FUNCTION _state_ack(sync_id uuid, state jsonb, acks jsonb, batches int8, records int8,
                           bytes int8, retries int8, reached pg_lsn)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
  SELECT _state_with_sync(
      jsonb_set(state, '{streams}', coalesce(
          (SELECT jsonb_agg(CASE WHEN a.ack IS NULL THEN e
                                 ELSE _state_of_stream(_acked_stream(
                                          jsonb_populate_record(NULL::sync_stream, e), a.ack))
                            END ORDER BY n)
             FROM jsonb_array_elements(state->'streams') WITH ORDINALITY x(e, n)
             LEFT JOIN LATERAL (SELECT k->'state' AS ack
                                  FROM jsonb_array_elements(acks) k
                                 WHERE (k->>'relid')::oid = (e->>'relid')::oid
                                 LIMIT 1) a ON true), '[]')),
      _acked_sync(_state_sync(sync_id, state), batches, records, bytes, retries, reached))
   WHERE EXISTS (SELECT 1 FROM sync y WHERE y.id = sync_id)
$$;

-- The stream's read starts again from the start (a stream reset: resync(),
-- or a table whose changes are missing from the WAL).  Its generation
-- stays: the next read takes a greater one.
CREATE FUNCTION _state_stream_reset(state jsonb, relid oid)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT jsonb_set(state, '{streams}', coalesce(
      (SELECT jsonb_agg(CASE WHEN relid IS NULL OR (e->>'relid')::oid = relid
                             THEN e || '{"phase": "pending", "checkpoint": null, "rows_sent": 0}'
                             ELSE e END ORDER BY n)
         FROM jsonb_array_elements(state->'streams') WITH ORDINALITY x(e, n)), '[]'))
$$;

-- The state of a sync that runs on this standby, as its worker starts
-- (NULL: the sync no longer exists).
--
-- The first time (no state file here), the catalog's progress -- which is
-- the primary's and may be far behind what ran elsewhere: on a standby
-- rebuilt or re-cloned from the primary, on one whose file was moved
-- away -- moved as after a failover (22_home.sql, _stream_moved): batch
-- numbers and generations above every one used before, reads under way in
-- refresh brackets started again.  Its writes count on from those the
-- catalog imported already (_state_import).
--
-- Then what the primary decided since the state last looked: start_sync
-- and resync (sync.command_seq numbers them; each records its number),
-- which on a primary change the progress columns themselves.  In their
-- order: the streams resync reset before a start_sync, then the start (a
-- new run reads every stream again once all are done), then those reset
-- after it.
CREATE FUNCTION _state_load(sync_id uuid, state jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    s sync;
    applied int8;
    t sync_stream;
    st jsonb := state;
BEGIN
    SELECT * INTO s FROM sync y WHERE y.id = _state_load.sync_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF st IS NULL THEN
        RETURN jsonb_build_object(
            'sync', _state_of_sync(s) || jsonb_build_object(
                'next_batch_seq', greatest(s.next_batch_seq, _identity_floor())),
            'streams', coalesce((SELECT jsonb_agg(_state_of_stream(_stream_moved(y, s.method, false))
                                                  ORDER BY y.ordinal)
                                   FROM sync_stream y WHERE y.sync_id = s.id), '[]'),
            'applied_command', s.command_seq,
            'writes', s.standby_import);
    END IF;
    applied := coalesce((st->>'applied_command')::int8, 0);
    IF s.command_seq <= applied THEN
        RETURN st;
    END IF;
    FOR t IN SELECT * FROM sync_stream y
              WHERE y.sync_id = s.id AND y.reset_command > applied
                AND (s.start_command <= applied OR y.reset_command < s.start_command) LOOP
        st := _state_stream_reset(st, t.relid);
        st := jsonb_set(st, '{sync,run_completed_at}', 'null');
    END LOOP;
    -- resync started it again (stopped in error, or maybe: 40_syncs.sql)
    IF s.restart_command > applied THEN
        st := jsonb_set(st, '{sync}', st->'sync' || jsonb_build_object(
            'error_stopped', false, 'run_started_at', s.run_started_at,
            'run_completed_at', null));
    END IF;
    IF s.start_command > applied THEN
        st := jsonb_set(st, '{sync}', st->'sync' || jsonb_build_object(
            'error_stopped', false, 'run_started_at', s.run_started_at,
            'run_completed_at', null));
        -- start_sync's new run (40_syncs.sql, _start_sync)
        IF s.method <> 'cdc' AND NOT EXISTS (
               SELECT 1 FROM jsonb_array_elements(st->'streams') e WHERE e->>'phase' <> 'done') THEN
            st := jsonb_set(st, '{streams}', coalesce(
                (SELECT jsonb_agg(e || '{"phase": "pending", "rows_sent": 0}' ORDER BY n)
                   FROM jsonb_array_elements(st->'streams') WITH ORDINALITY x(e, n)), '[]'));
        END IF;
        FOR t IN SELECT * FROM sync_stream y
                  WHERE y.sync_id = s.id AND y.reset_command > s.start_command LOOP
            st := _state_stream_reset(st, t.relid);
            st := jsonb_set(st, '{sync,run_completed_at}', 'null');
        END LOOP;
    END IF;
    IF s.slot_reset_command > applied THEN
        st := jsonb_set(st, '{sync,cdc_lsn}', 'null');
    END IF;
    RETURN jsonb_set(st, '{applied_command}', to_jsonb(s.command_seq));
END
$$;

-- A promoted server takes over the progress its state file kept while it
-- was a standby (once: sync.standby_import remembers the file's writes).
-- state has the commands the catalog holds applied (_state_load): those the
-- standby had not seen yet, and those taken here since the promotion.
CREATE FUNCTION _state_import(sync_id uuid, state jsonb)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    s sync;
    writes constant int8 := (state->>'writes')::int8;
BEGIN
    SELECT * INTO s FROM sync y WHERE y.id = _state_import.sync_id FOR UPDATE;
    IF NOT FOUND OR s.standby_import >= writes THEN
        RETURN false;
    END IF;
    s := _sync_state(s, state);
    UPDATE sync y
       SET next_batch_seq = greatest(y.next_batch_seq, s.next_batch_seq),
           batches_sent = s.batches_sent, records_sent = s.records_sent,
           bytes_sent = s.bytes_sent, retries = s.retries, last_ack_at = s.last_ack_at,
           last_error = s.last_error, last_error_redacted = s.last_error_redacted,
           last_error_at = s.last_error_at,
           enabled = y.enabled AND NOT s.error_stopped, error_stopped = s.error_stopped,
           run_started_at = s.run_started_at, run_completed_at = s.run_completed_at,
           cdc_lsn = s.cdc_lsn, standby_import = writes,
           -- its progress is this server's own: not a copy (src/home.c)
           home_timeline = (_here()).timeline
     WHERE y.id = s.id;
    UPDATE sync_stream y
       SET phase = n.phase, generation = n.generation, checkpoint = n.checkpoint,
           rows_sent = n.rows_sent, read_started_at = n.read_started_at,
           read_finished_at = n.read_finished_at
      FROM (SELECT (_stream_state(t, state)).* FROM sync_stream t
             WHERE t.sync_id = s.id) n
     WHERE y.sync_id = s.id AND y.relid = n.relid;
    RETURN true;
END
$$;

REVOKE ALL ON FUNCTION _state_of_sync(sync), _state_of_stream(sync_stream),
    _acked_stream(sync_stream, jsonb),
    _acked_sync(sync, int8, int8, int8, int8, pg_lsn), _state_with_sync(jsonb, sync),
    _state_sync(uuid, jsonb),
    _state_ack(uuid, jsonb, jsonb, int8, int8, int8, int8, pg_lsn),
    _state_stream_reset(jsonb, oid), _state_load(uuid, jsonb),
    _state_import(uuid, jsonb) FROM PUBLIC;

-- Each write of a state file is counted (a promoted server imports one
-- once: _state_import).
CREATE FUNCTION _state_written(state jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT jsonb_set(state, '{writes}', to_jsonb(coalesce((state->>'writes')::int8, 0) + 1)) $$;
REVOKE ALL ON FUNCTION _state_written(jsonb) FROM PUBLIC;
