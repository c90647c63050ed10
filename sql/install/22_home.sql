------------------------------------------------------------------------------
-- Where a sync belongs (src/home.c).  A sync records the cluster, database
-- and timeline it was created on (sync.home_*); one found anywhere else is
-- a copy of it and must not run under its identity: the same batch numbers,
-- Idempotency-Keys and replication slot name as the original.
------------------------------------------------------------------------------

-- This server's system identifier, this database's OID and the timeline
-- WAL is written on now: the home of a sync created or adopted here.
-- Called by the SECURITY DEFINER management functions only.
CREATE FUNCTION _here(OUT system_identifier bigint, OUT database oid, OUT timeline integer)
AS 'MODULE_PATHNAME', 'calabi_push_here'
LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION _here() FROM PUBLIC;

-- NULL when the sync named name, whose home is given, belongs here; else
-- why it is a copy and the way out, as sync_status.last_error shows it.
-- The sync_status view calls it as the role that queries the view, so
-- every role may execute it; the function refuses roles without SELECT on
-- sync_status, as _sync_runtime() does.
-- runs_here_by_name: its run_on names this server (24_run_on.sql,
-- _runs_here()), which then compares no timeline.
CREATE FUNCTION _copied(name text, home_system bigint, home_database oid, home_timeline integer,
                        runs_here_by_name boolean)
RETURNS text
AS 'MODULE_PATHNAME', 'calabi_push_copied'
LANGUAGE C STRICT STABLE;
GRANT EXECUTE ON FUNCTION _copied(text, bigint, oid, integer, boolean) TO PUBLIC;

-- A sync goes on under its identity in a new home: after a failover, a
-- point-in-time recovery, or adopt_sync(keep_identity => true).  The
-- catalog here may be behind what the server it ran on recorded
-- (asynchronous replication, an older backup or dump), and the numbers that
-- server used after it cannot be reused for other contents:
-- - a batch number already sent with another body would be dropped by the
--   endpoint as a repeat (409) or refused;
-- - a stream's generation already completed there would have its records
--   ignored (a refresh_start of a completed generation is a resend), so the
--   destination would keep the other server's copy;
-- - a read under way resumed from a stale position in a newer generation
--   would open that generation without the rows before the position.
-- So batch numbers and generations jump to a floor above every number used
-- before, and bracketed reads under way start again (at least once:
-- nothing is skipped, some rows are sent again).  What the other server
-- sent is unknown here but bounded by time: numbers jump only to this
-- floor, 2^20 a second since 1970, and no sync sends 2^20 batches, nor
-- starts 2^20 reads of a stream, a second; so a number sent at any moment
-- is below the floor of that moment, and every number sent before a move
-- is below the floor the move takes, given clocks that agree to within the
-- time between two moves.  Numbers reserved and never sent do not matter:
-- only a number sent twice with different contents does.  The floor stays
-- below 2^53 (exact as a JSON double) until the year 2242.
CREATE FUNCTION _identity_floor()
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1048576)::bigint $$;
REVOKE ALL ON FUNCTION _identity_floor() FROM PUBLIC;

-- A stream of a sync (of method) in its new home: its generation above
-- every one used before, and its read started again where it must be.
-- Which streams read again from the start:
-- - reads under way in refresh_start/refresh_end brackets: a full refresh,
--   a CDC backfill.  An xmin or cursor read sends none, and resuming it
--   from a stale position sends some rows again, no more; its checkpoint
--   also holds the previous run's position, which a new read would lose,
--   reading the whole relation again.
-- - in another cluster, every xmin stream: its position is a snapshot of
--   the other cluster's transaction ids, which mean nothing here (rows
--   written here by transactions numbered below it would be taken as
--   unchanged and never sent).  A cursor's position is a value of the
--   data: it stays.
-- Also for the state file a standby starts from the catalog (24_run_on.sql).
CREATE FUNCTION _stream_moved(t sync_stream, method text, other_cluster boolean)
RETURNS sync_stream
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
BEGIN
    t.generation := greatest(t.generation, _identity_floor());
    IF (method IN ('full_refresh', 'cdc') AND t.phase = 'reading')
       OR (method = 'xmin' AND other_cluster) THEN
        t.phase := 'pending';
        t.checkpoint := NULL;
        t.rows_sent := 0;
    END IF;
    RETURN t;
END
$$;

-- other_cluster: the sync moved into another cluster (adopt_sync with
-- keep_identity after a dump and restore, or pg_upgrade).
CREATE FUNCTION _identity_moved(sync_id uuid, other_cluster boolean)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
    UPDATE sync y SET next_batch_seq = greatest(y.next_batch_seq, _identity_floor())
     WHERE y.id = _identity_moved.sync_id;
    UPDATE sync_stream t
       SET (generation, phase, checkpoint, rows_sent) =
           (SELECT m.generation, m.phase, m.checkpoint, m.rows_sent
              FROM _stream_moved(t, y.method, _identity_moved.other_cluster) m)
      FROM sync y
     WHERE y.id = t.sync_id AND t.sync_id = _identity_moved.sync_id;
$$;
REVOKE ALL ON FUNCTION _stream_moved(sync_stream, text, boolean),
    _identity_moved(uuid, boolean) FROM PUBLIC;
