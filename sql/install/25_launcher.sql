-- Called by the management functions when a sync should start, stop or
-- restart: takes effect when the calling transaction commits (the launcher
-- is told then, and only then).
-- dropped: the sync is being dropped (its replication slot goes too).
CREATE FUNCTION _sync_changed(sync_id uuid, should_run boolean, restart boolean DEFAULT false,
                              dropped boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'calabi_push_sync_changed'
LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION _sync_changed(uuid, boolean, boolean, boolean) FROM PUBLIC;

-- What the workers of this database's syncs are doing now (shared memory).
CREATE FUNCTION _sync_runtime(
    OUT sync_id uuid, OUT should_run boolean, OUT pid integer, OUT state text,
    OUT worker_started_at timestamptz, OUT retries bigint,
    OUT next_retry_at timestamptz, OUT next_restart_at timestamptz,
    OUT last_exit text, OUT cdc_sent_lsn pg_lsn, OUT cdc_acked_lsn pg_lsn,
    OUT cdc_pending_since timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'calabi_push_sync_runtime'
LANGUAGE C STRICT VOLATILE;
-- The sync_status view calls it as the role that queries the view, so every
-- role may execute it; the function itself refuses roles without SELECT on
-- sync_status (src/status.c).
GRANT EXECUTE ON FUNCTION _sync_runtime() TO PUBLIC;

-- CREATE EXTENSION in a server without calabi_push in
-- shared_preload_libraries warns now (with how to fix it) rather than
-- leaving the first start_sync to fail.  Called once here, then dropped:
-- it is no part of the API.
CREATE FUNCTION _warn_unless_preloaded()
RETURNS void
AS 'MODULE_PATHNAME', 'calabi_push_warn_unless_preloaded'
LANGUAGE C STRICT VOLATILE;
SELECT _warn_unless_preloaded();
DROP FUNCTION _warn_unless_preloaded();
