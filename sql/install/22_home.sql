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
CREATE FUNCTION _copied(name text, home_system bigint, home_database oid, home_timeline integer)
RETURNS text
AS 'MODULE_PATHNAME', 'calabi_push_copied'
LANGUAGE C STRICT STABLE;
GRANT EXECUTE ON FUNCTION _copied(text, bigint, oid, integer) TO PUBLIC;
