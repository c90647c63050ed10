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

-- Nothing of calabi_push is for PUBLIC: a DBA grants what a role needs.
REVOKE ALL ON FUNCTION preview(regclass, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION stream_schema(regclass) FROM PUBLIC;
