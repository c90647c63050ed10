-- preview() and stream_schema(): what a sync of a relation would send.

-- The data objects of the RECORDs a sync of rel would send, one per row.
-- max_rows NULL: every row.  Reads as the caller: SELECT privilege and
-- row-level security apply.
CREATE FUNCTION preview(rel regclass, max_rows integer DEFAULT 10)
RETURNS SETOF json
AS 'MODULE_PATHNAME', 'calabi_push_preview'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION preview(regclass, integer) IS
'the data objects of the RECORD messages a sync of rel would send (max_rows NULL: all rows)';

-- The "stream" object of the STREAM message for rel.
CREATE FUNCTION stream_schema(rel regclass)
RETURNS json
AS 'MODULE_PATHNAME', 'calabi_push_stream_schema'
LANGUAGE C STRICT STABLE PARALLEL UNSAFE;

COMMENT ON FUNCTION stream_schema(regclass) IS
'the stream object of the STREAM message for rel: namespace, name, json_schema, primary_key';

-- The library's version and the compressor it uses:
-- 'calabi_push 0.1.0, gzip by isa-l 2.30'.  Always schema-qualified here:
-- unqualified, version() is pg_catalog's, which comes first in any path.
CREATE FUNCTION calabi_push.version()
RETURNS text
AS 'MODULE_PATHNAME', 'calabi_push_version'
LANGUAGE C STABLE;

COMMENT ON FUNCTION calabi_push.version() IS
'the calabi_push library''s version and the gzip library it compresses with (setting calabi_push.gzip_library)';

-- Nothing of calabi_push is for PUBLIC: a DBA grants what a role needs.
REVOKE ALL ON FUNCTION preview(regclass, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION stream_schema(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION calabi_push.version() FROM PUBLIC;
