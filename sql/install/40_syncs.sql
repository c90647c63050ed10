------------------------------------------------------------------------------
-- Syncs: create_sync(), start_sync(), stop_sync(), drop_sync(), resync().
-- The contract is docs/syncs.md.
--
-- As for destinations: a C entry point that takes the caller's identity,
-- then a SECURITY DEFINER implementation (_create_sync, ...) with a fixed
-- search_path; nothing granted to PUBLIC.  A sync belongs to the role it reads as (run_as): only members
-- of that role and superusers may create, start, stop, resync or drop it,
-- so that no one makes a sync read more than they could read themselves.
-- Each change that bears on whether or how a sync's worker runs tells the
-- launcher through _sync_changed(), which acts when the transaction commits.
------------------------------------------------------------------------------

-- Checks that rel can be streamed by a worker reading as role: it exists, is
-- a kind of relation that can be streamed (as src/stream.c: tables,
-- partitioned tables, views, materialized views, foreign tables), is not
-- temporary, and role may use its schema and SELECT every column of it.
CREATE FUNCTION _check_stream_relation(rel regclass, role oid)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    c record;
BEGIN
    SELECT k.relkind, k.relpersistence, k.relnamespace, n.nspname
      INTO c
      FROM pg_class k JOIN pg_namespace n ON n.oid = k.relnamespace
     WHERE k.oid = rel;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relation with OID % does not exist', rel::oid
            USING ERRCODE = 'undefined_table',
                  HINT = 'Name an existing table, view or materialized view, e.g. ''public.orders''.';
    END IF;
    IF c.relkind NOT IN ('r', 'p', 'v', 'm', 'f') THEN
        RAISE EXCEPTION '"%" cannot be streamed: it is %', rel,
            CASE c.relkind WHEN 'S' THEN 'a sequence'
                           WHEN 'i' THEN 'an index'
                           WHEN 'I' THEN 'an index'
                           WHEN 'c' THEN 'a composite type'
                           WHEN 't' THEN 'a TOAST table'
                           ELSE 'not a table or view' END
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'calabi_push streams tables, partitioned tables, views, materialized views and foreign tables.';
    END IF;
    IF c.relpersistence = 't' THEN
        RAISE EXCEPTION '"%" cannot be streamed: it is a temporary table', rel
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'A temporary table exists only in the session that created it; sync a permanent or unlogged table.';
    END IF;
    IF NOT has_schema_privilege(role, c.relnamespace, 'USAGE') THEN
        RAISE EXCEPTION 'permission denied for schema %', quote_ident(c.nspname)
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Role %s does not have USAGE on the schema of "%s".', role::regrole, rel),
                  HINT = format('GRANT USAGE ON SCHEMA %s TO %s;', quote_ident(c.nspname), role::regrole);
    END IF;
    -- SELECT on the relation, or on every column of it (as src/stream.c)
    IF NOT has_table_privilege(role, rel, 'SELECT')
       AND (NOT EXISTS (SELECT 1 FROM pg_attribute a
                         WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped)
            OR EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
                          AND NOT has_column_privilege(role, rel, a.attnum, 'SELECT'))) THEN
        RAISE EXCEPTION 'permission denied for relation "%"', rel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Role %s does not have SELECT on all columns of it.', role::regrole),
                  HINT = format('GRANT SELECT ON %s TO %s;', rel, role::regrole);
    END IF;
END
$$;

-- The options a sync is stored with unless it gives them (src/catalog.h).
CREATE FUNCTION _sync_defaults()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'calabi_push_sync_defaults'
LANGUAGE C IMMUTABLE;

-- An interval as text in PostgreSQL's own style ('00:10:00', '1 day
-- 02:00:00'), whatever the session's IntervalStyle: how a cursor sync's
-- "lookback" is stored, for the worker to cast back to interval.
CREATE FUNCTION _interval_text(i interval)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, calabi_push, pg_temp
SET IntervalStyle = postgres
AS $$ SELECT i::text $$;

-- Validates and normalizes a sync's options: the stored options (defaults
-- filled in; durations as interval texts in one unit, e.g. '90 minutes',
-- which the worker casts to interval), the run_as role name given (NULL:
-- none) and the "cursor" option as given (NULL: none).  Neither run_as nor
-- cursor is an option that is stored: run_as is the sync's column, the
-- cursor columns are its streams' (sync_stream.cursor_column), resolved
-- against the relations by _cursor_columns().  "failover" is checked for its
-- form here and stored as given; _create_sync refuses it for other methods
-- than cdc and fills its default (false) in for cdc.  "lookback" is checked for
-- its form here (an interval, or a number, not negative) and stored as
-- the interval's text ('00:10:00') or the number; whether it fits the
-- cursor columns' types, and the method, is for _create_sync to check.
CREATE FUNCTION _sync_options(options jsonb, OUT r_options jsonb, OUT r_run_as text,
                              OUT r_cursor jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    known constant text[] := ARRAY['batch_bytes', 'batch_linger_ms', 'batch_rows',
        'chunk_rows', 'cursor', 'failover', 'lookback', 'max_backoff', 'publication',
        'run_as', 'run_on', 'schedule'];
    o jsonb;
    w constant text := 'sync';
    defaults constant jsonb := _sync_defaults();
    batch_rows bigint := (defaults->'batch_rows')::bigint;
    batch_bytes bigint := (defaults->'batch_bytes')::bigint;
    batch_linger_ms bigint := (defaults->'batch_linger_ms')::bigint;
    chunk_rows bigint := (defaults->'chunk_rows')::bigint;
    max_backoff_ms bigint := (defaults->'max_backoff_ms')::bigint;
    schedule_ms bigint;
    publication text;
    failover boolean;
    run_on text;
    lookback jsonb;
    lookback_interval interval;
    v jsonb;
BEGIN
    o := coalesce(options, '{}');
    PERFORM _check_option_keys(w, o, known);
    o := jsonb_strip_nulls(o);

    IF o ? 'schedule' THEN
        schedule_ms := _duration_ms(w, 'schedule', o->'schedule', 60000, 366 * 86400000::bigint, '1 hour');
    END IF;
    IF o ? 'batch_rows' THEN
        batch_rows := _integer_option(w, 'batch_rows', o->'batch_rows', 1, 1000000, batch_rows);
    END IF;
    IF o ? 'batch_bytes' THEN
        v := o->'batch_bytes';
        IF jsonb_typeof(v) = 'string' THEN
            BEGIN
                v := to_jsonb(pg_size_bytes(v #>> '{}'));
            EXCEPTION WHEN invalid_parameter_value OR numeric_value_out_of_range THEN
                RAISE EXCEPTION 'sync option "batch_bytes" is not a valid size'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Give a number of bytes, or a size such as ''8MB'' or ''512kB'' (units of 1024).';
            END;
        END IF;
        IF jsonb_typeof(v) = 'number' AND v::numeric = trunc(v::numeric)
           AND v::numeric NOT BETWEEN 65536 AND 268435456 THEN
            RAISE EXCEPTION 'sync option "batch_bytes" must be between 64kB and 256MB'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give a number of bytes, or a size such as ''8MB'' or ''512kB'' (units of 1024).';
        END IF;
        batch_bytes := _integer_option(w, 'batch_bytes', v, 65536, 268435456, batch_bytes);
    END IF;
    IF o ? 'batch_linger_ms' THEN
        batch_linger_ms := _integer_option(w, 'batch_linger_ms', o->'batch_linger_ms', 0, 60000, batch_linger_ms);
    END IF;
    IF o ? 'chunk_rows' THEN
        chunk_rows := _integer_option(w, 'chunk_rows', o->'chunk_rows', 1, 1000000, chunk_rows);
    END IF;
    IF o ? 'max_backoff' THEN
        max_backoff_ms := _duration_ms(w, 'max_backoff', o->'max_backoff', 1000, 86400000, '5 minutes');
    END IF;
    IF o ? 'run_as' THEN
        r_run_as := _string_option(w, 'run_as', o->'run_as');
    END IF;
    IF o ? 'publication' THEN
        publication := _string_option(w, 'publication', o->'publication');
    END IF;
    IF o ? 'failover' THEN
        failover := _boolean_option(w, 'failover', o->'failover');
    END IF;
    -- where the sync runs: 'primary' (stored as no option), or the
    -- cluster_name of the server that runs it (24_run_on.sql)
    IF o ? 'run_on' THEN
        run_on := _string_option(w, 'run_on', o->'run_on');
        IF length(run_on) > 63 OR run_on ~ '[^\x20-\x7e]' THEN
            RAISE EXCEPTION 'sync option "run_on" must be "primary" or a cluster_name'
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'A cluster_name is at most 63 printable ASCII characters.',
                      HINT = 'Give the cluster_name setting of the standby that should run the sync, e.g. ''{"run_on": "replica1"}''.';
        END IF;
        IF run_on = 'primary' THEN
            run_on := NULL;
        -- every server of that name runs it: this one too, and the
        -- standbys that share its name (Debian gives every cluster one
        -- such as '15/main')
        ELSIF run_on = current_setting('cluster_name') THEN
            RAISE EXCEPTION 'sync option "run_on" names this server (cluster_name %)', run_on
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'A sync runs on every server whose cluster_name is its run_on: standbys that share this server''s name would run it too.',
                      HINT = 'Leave "run_on" out to run the sync here; to run it on a standby, give that standby a cluster_name of its own and name it.';
        END IF;
    END IF;
    r_cursor := o->'cursor';
    IF o ? 'lookback' THEN
        v := o->'lookback';
        IF jsonb_typeof(v) = 'number' THEN
            IF v::numeric < 0 THEN
                RAISE EXCEPTION 'sync option "lookback" must not be negative'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Give how far below the previous run''s largest cursor value each run reads again, e.g. ''{"lookback": 100}'' (0: not at all).';
            END IF;
            lookback := v;
        ELSIF jsonb_typeof(v) = 'string' THEN
            BEGIN
                lookback_interval := (v #>> '{}')::interval;
            EXCEPTION WHEN data_exception THEN
                RAISE EXCEPTION 'sync option "lookback" is not a valid interval'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Give an interval such as ''10 minutes'' for a date or time cursor column, or a number such as 100 for a numeric one.';
            END;
            IF lookback_interval < interval '0' THEN
                RAISE EXCEPTION 'sync option "lookback" must not be negative'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Give how far below the previous run''s largest cursor value each run reads again, e.g. ''{"lookback": "10 minutes"}''.';
            END IF;
            lookback := to_jsonb(_interval_text(lookback_interval));
        ELSE
            RAISE EXCEPTION 'sync option "lookback" must be an interval or a number'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give an interval such as ''10 minutes'' for a date or time cursor column, or a number such as 100 for a numeric one.';
        END IF;
    END IF;

    r_options := jsonb_strip_nulls(jsonb_build_object(
        'schedule', _ms_text(schedule_ms),
        'batch_rows', batch_rows,
        'batch_bytes', batch_bytes,
        'batch_linger_ms', batch_linger_ms,
        'chunk_rows', chunk_rows,
        'max_backoff', _ms_text(max_backoff_ms),
        'publication', publication,
        'failover', failover,
        'run_on', run_on,
        'lookback', lookback));
END
$$;

-- An integer option within [min, max]; example is a valid value, for the hint.
CREATE FUNCTION _integer_option(what text, key text, value jsonb, min bigint, max bigint,
                                example bigint)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    n numeric;
BEGIN
    IF jsonb_typeof(value) = 'number' THEN
        n := value::numeric;
    END IF;
    IF n IS NULL OR n <> trunc(n) OR n < min OR n > max THEN
        RAISE EXCEPTION '% option "%" must be an integer between % and %', what, key, min, max
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give a JSON number, e.g. ''{"%s": %s}''.', key, example);
    END IF;
    RETURN n::bigint;
END
$$;

-- Whether a sync is running: started and neither stopped by a refusal nor,
-- for a sync without a schedule, done with its one run.
CREATE FUNCTION _sync_is_running(s sync)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
  SELECT s.enabled AND NOT s.error_stopped
     AND NOT (s.run_completed_at IS NOT NULL AND NOT s.options ? 'schedule')
$$;

-- The sync name, locked, after checking that the caller may manage it (a
-- superuser, or a member of its run_as role).
CREATE FUNCTION _sync_for_update(name text)
RETURNS sync
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    s sync;
BEGIN
    IF _sync_for_update.name IS NULL THEN
        RAISE EXCEPTION 'sync name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Name a sync.';
    END IF;
    SELECT * INTO s FROM sync y WHERE y.name = _sync_for_update.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sync "%" does not exist', _sync_for_update.name
            USING ERRCODE = 'undefined_object',
                  HINT = 'calabi_push.sync_status lists the syncs.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = s.run_as)
       AND NOT _caller_may_act_as(s.run_as) THEN
        RAISE EXCEPTION 'permission denied for sync "%"', s.name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The role it reads as no longer exists: only superusers may manage it.',
                  HINT = 'Ask a superuser to drop it.';
    END IF;
    IF NOT _caller_may_act_as(s.run_as) THEN
        RAISE EXCEPTION 'permission denied for sync "%"', s.name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('It reads as role %s; role %s is not a member of it.',
                                  s.run_as, quote_ident(_caller())),
                  HINT = format('Ask a member of %s or a superuser to manage it.', s.run_as);
    END IF;
    RETURN s;
END
$$;

-- Refuses a sync that is a copy of one made elsewhere (22_home.sql): it
-- would run under the original's identity.
CREATE FUNCTION _refuse_copied(s sync)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    why text := _copied(s.name, s.home_system, s.home_database, s.home_timeline,
                        s.options ? 'run_on' AND _runs_here(s.options));
BEGIN
    IF why IS NOT NULL THEN
        RAISE EXCEPTION '%', why
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A copy would send under the original''s sync id: the same batch numbers, Idempotency-Keys and replication slot name.',
                  HINT = format('Run SELECT calabi_push.adopt_sync(%L); (a new identity, every table read again), then SELECT calabi_push.start_sync(%L); or drop it with calabi_push.drop_sync(%L).',
                                s.name, s.name, s.name);
    END IF;
END
$$;

-- Checks that the role s reads as still exists and can still read each of
-- its relations: start_sync checks again what create_sync checked, as
-- relations may have been dropped and privileges revoked since.
CREATE FUNCTION _check_sync_streams(s sync)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    rel regclass;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = s.run_as) THEN
        RAISE EXCEPTION 'sync "%" cannot start: the role it reads as no longer exists', s.name
            USING ERRCODE = 'undefined_object',
                  HINT = 'Drop the sync and create it again with another run_as role.';
    END IF;
    FOR rel IN SELECT t.relid FROM sync_stream t WHERE t.sync_id = s.id ORDER BY t.ordinal LOOP
        -- a relation dropped since create_sync: say so in the sync's terms
        IF NOT EXISTS (SELECT 1 FROM pg_class k WHERE k.oid = rel) THEN
            RAISE EXCEPTION 'sync "%" cannot start: one of its relations was dropped', s.name
                USING ERRCODE = 'undefined_table',
                      DETAIL = format('stream_status lists it by its former OID, %s.', rel::oid),
                      HINT = 'Drop the sync and create it again without that relation.';
        END IF;
        PERFORM _check_stream_relation(rel, s.run_as);
    END LOOP;
END
$$;

-- Whether rel has the key its stream is sent with (src/stream.c,
-- cp_stream_key_index): a primary key, else a replica identity index; as
-- the server's relation cache, only a valid and not deferrable one.  A
-- partitioned table's is its own.
CREATE FUNCTION _has_key(rel regclass)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
  SELECT EXISTS (SELECT 1 FROM pg_index i
                  WHERE i.indrelid = rel AND i.indisvalid AND i.indimmediate
                    AND (i.indisprimary OR i.indisreplident))
$$;

-- Refuses mode append_dedup for rel when it has no key (_has_key): such a
-- destination keeps one row per key.  detail: what the method would send
-- that could not be told apart.
CREATE FUNCTION _check_dedup_key(rel regclass, mode text, detail text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    kind "char" := (SELECT k.relkind FROM pg_class k WHERE k.oid = rel);
BEGIN
    IF mode = 'append_dedup' AND NOT _has_key(rel) THEN
        RAISE EXCEPTION '% "%" has no primary key: an append_dedup destination cannot tell its rows apart',
                        CASE kind WHEN 'm' THEN 'materialized view'
                                  WHEN 'p' THEN 'partitioned table'
                                  WHEN 'v' THEN 'view'
                                  WHEN 'f' THEN 'foreign table'
                                  ELSE 'table' END, rel
            USING ERRCODE = 'invalid_table_definition',
                  DETAIL = detail,
                  HINT = CASE kind
                      WHEN 'm' THEN 'A materialized view cannot have one: use destination_sync_mode => ''append''.'
                      WHEN 'v' THEN 'A view cannot have one: use destination_sync_mode => ''append''.'
                      WHEN 'f' THEN 'A foreign table cannot have one: use destination_sync_mode => ''append''.'
                      ELSE format('Add a primary key (ALTER TABLE %s ADD PRIMARY KEY (...)), or use destination_sync_mode => ''append''.', rel)
                  END;
    END IF;
END
$$;

-- Checks that rel can be read by an xmin sync in mode (NULL: the default,
-- which create_sync decides afterwards): the rows it reads are a heap's, as
-- xmin is a column of heap tuples.  A table or a materialized view is read
-- itself, a partitioned table through its leaf partitions; views and
-- foreign tables have no xmin.  Unlogged tables are read too (every page
-- of them at each run: their pages carry no WAL position).  Row-level
-- security applies to the reads as to a full refresh's.
CREATE FUNCTION _check_xmin_relation(rel regclass, mode text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    p record;
    what text;
BEGIN
    FOR p IN SELECT k.oid::regclass AS part, k.relkind, a.amname
               FROM pg_class k LEFT JOIN pg_am a ON a.oid = k.relam
              WHERE k.relkind <> 'p'
                AND (k.oid = rel
                     OR k.oid IN (SELECT t.relid FROM pg_partition_tree(rel) t WHERE t.isleaf))
              ORDER BY k.oid = rel DESC, k.oid::regclass::text LOOP
        what := CASE WHEN p.part = rel THEN 'it is' ELSE format('its partition %s is', p.part) END;
        IF p.relkind IN ('v', 'f') THEN
            RAISE EXCEPTION '"%" cannot be synced by xmin: % %', rel, what,
                            CASE p.relkind WHEN 'v' THEN 'a view' ELSE 'a foreign table' END
                USING ERRCODE = 'wrong_object_type',
                      DETAIL = CASE p.relkind
                          WHEN 'v' THEN 'A view has no xmin: its rows are computed as it is read, not stored by a transaction.'
                          ELSE 'A foreign table has no xmin: its rows are stored by another server.'
                      END,
                      HINT = CASE WHEN p.part = rel
                          THEN 'Read it incrementally with method => ''cursor'' and options => ''{"cursor": "<column>"}'' (a column that grows with each write, such as updated_at), or whole at each run with method => ''full_refresh'' in a sync of its own.'
                          ELSE format('Detach that partition (ALTER TABLE %s DETACH PARTITION %s;), or sync the table with method => ''full_refresh''.', rel, p.part)
                      END;
        END IF;
        IF p.amname IS DISTINCT FROM 'heap' THEN
            RAISE EXCEPTION '"%" cannot be synced by xmin: % stored by the table access method %', rel, what,
                            coalesce(quote_ident(p.amname), 'none')
                USING ERRCODE = 'wrong_object_type',
                      DETAIL = 'xmin is a column of the rows of the heap access method, PostgreSQL''s own.',
                      HINT = format('Run ALTER %s %s SET ACCESS METHOD heap; or sync it with method => ''full_refresh''.',
                                    CASE p.relkind WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, p.part);
        END IF;
    END LOOP;
    PERFORM _check_dedup_key(rel, mode,
        'An xmin sync sends a row again each time it changes; without a key the destination cannot replace its older version.');
END
$$;

-- The type a domain is over, through domains over domains; any other type
-- itself.
CREATE FUNCTION _base_type(typ oid)
RETURNS oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
  WITH RECURSIVE d(oid, typtype, typbasetype, depth) AS (
      SELECT y.oid, y.typtype, y.typbasetype, 0 FROM pg_type y WHERE y.oid = typ
      UNION ALL
      SELECT y.oid, y.typtype, y.typbasetype, d.depth + 1
        FROM d JOIN pg_type y ON y.oid = d.typbasetype
       WHERE d.typtype = 'd')
  SELECT d.oid FROM d ORDER BY d.depth DESC LIMIT 1
$$;

-- Whether the values of type typ have a default ordering, as a cursor
-- needs (its reads compare and sort by it): a default btree operator class
-- for its type, or for the base type of a domain, found as PostgreSQL
-- finds one (GetDefaultOpClass): for the type itself, a type it is binary
-- coercible to (varchar: text's), or the polymorphic class of enums,
-- ranges and multiranges.  An array is ordered if its elements are, a
-- composite if all its fields are.
CREATE FUNCTION _type_is_ordered(typ oid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    base constant oid := _base_type(typ);
    t record;
BEGIN
    SELECT y.typtype, y.typelem, y.typsubscript, y.typrelid INTO t FROM pg_type y WHERE y.oid = base;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF t.typsubscript = 'array_subscript_handler'::regproc AND t.typelem <> 0 THEN
        RETURN _type_is_ordered(t.typelem);
    END IF;
    IF t.typtype = 'c' THEN
        RETURN NOT EXISTS (SELECT 1 FROM pg_attribute a
                            WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
                              AND NOT _type_is_ordered(a.atttypid));
    END IF;
    RETURN EXISTS (
        SELECT 1 FROM pg_opclass c JOIN pg_am m ON m.oid = c.opcmethod
         WHERE m.amname = 'btree' AND c.opcdefault
           AND (c.opcintype = base
                OR EXISTS (SELECT 1 FROM pg_cast k
                            WHERE k.castsource = base AND k.casttarget = c.opcintype
                              AND k.castmethod = 'b' AND k.castcontext = 'i')
                OR (c.opcintype = 'anyenum'::regtype AND t.typtype = 'e')
                OR (c.opcintype = 'anyrange'::regtype AND t.typtype = 'r')
                OR (c.opcintype = 'anymultirange'::regtype AND t.typtype = 'm')));
END
$$;

-- The cursor column of each relation of tables (in its order), from the
-- "cursor" option of a cursor sync: one column name (a JSON string) for
-- every relation, or an object from relation to column name.  A key of the
-- object is a relation as tables list it: schema-qualified ("shop.orders",
-- matched by schema and name) or by its name alone when no other relation
-- of tables has that name; quoted as in SQL ("\"Orders\"").  Keys are
-- matched against tables rather than resolved by a search_path: this
-- function runs with its own.  A relation the object does not name gets
-- NULL (_check_cursor_relation refuses it, once the relation is known to
-- exist).  tables: checked already (one dimension, no NULL, no duplicate).
CREATE FUNCTION _cursor_columns(tables regclass[], cursor jsonb)
RETURNS name[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    cols name[] := array_fill(NULL::name, ARRAY[cardinality(tables)]);
    k text;
    v jsonb;
    parts text[];
    matches bigint[];
    listed text;
BEGIN
    IF jsonb_typeof(cursor) = 'string' THEN
        IF cursor #>> '{}' = '' THEN
            RAISE EXCEPTION 'sync option "cursor" must not be empty'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Name the column that grows with each write, e.g. ''{"cursor": "updated_at"}''.';
        END IF;
        RETURN array_fill((cursor #>> '{}')::name, ARRAY[cardinality(tables)]);
    END IF;
    IF jsonb_typeof(cursor) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'sync option "cursor" must be a column name or an object from relations to column names'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give one column for every relation, e.g. ''{"cursor": "updated_at"}'', or one per relation, e.g. ''{"cursor": {"shop.orders": "updated_at", "shop.events": "id"}}''.';
    END IF;
    SELECT string_agg(t::text, ', ' ORDER BY o) INTO listed
      FROM unnest(tables) WITH ORDINALITY u(t, o);
    FOR k, v IN SELECT e.key, e.value FROM jsonb_each(cursor) e ORDER BY e.key COLLATE "C" LOOP
        IF jsonb_typeof(v) <> 'string' OR v #>> '{}' = '' THEN
            RAISE EXCEPTION 'sync option "cursor" must give relation "%" a column name', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Give the column as a JSON string, e.g. ''{"cursor": {"%s": "updated_at"}}''.', k);
        END IF;
        BEGIN
            parts := parse_ident(k);
        EXCEPTION WHEN OTHERS THEN
            parts := NULL;
        END;
        SELECT array_agg(u.o ORDER BY u.o) INTO matches
          FROM unnest(tables) WITH ORDINALITY u(t, o)
          JOIN pg_class c ON c.oid = u.t
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE CASE cardinality(parts)
                   WHEN 1 THEN c.relname = parts[1]
                   WHEN 2 THEN n.nspname = parts[1] AND c.relname = parts[2]
                   WHEN 3 THEN parts[1] = current_database() AND n.nspname = parts[2]
                               AND c.relname = parts[3]
                   ELSE false
               END;
        IF matches IS NULL THEN
            RAISE EXCEPTION 'sync option "cursor" names "%", which is not one of the sync''s relations', k
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('The sync''s relations: %s.', listed),
                      HINT = 'Give each relation of tables its cursor column, naming it as in tables, e.g. ''{"cursor": {"shop.orders": "updated_at"}}''.';
        END IF;
        IF cardinality(matches) > 1 THEN
            RAISE EXCEPTION 'sync option "cursor" names "%", which could be any of relations %', k,
                            (SELECT string_agg(tables[m]::text, ', ' ORDER BY m) FROM unnest(matches) m)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Qualify it with its schema, e.g. "shop.orders".';
        END IF;
        IF cols[matches[1]] IS NOT NULL THEN
            RAISE EXCEPTION 'sync option "cursor" gives relation "%" a column more than once', tables[matches[1]]
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give each relation one cursor column.';
        END IF;
        cols[matches[1]] := (v #>> '{}')::name;
    END LOOP;
    RETURN cols;
END
$$;

-- Checks that rel can be read by a cursor sync in mode (NULL: the
-- default, which create_sync decides afterwards) with col as its cursor
-- column and lookback (the stored option, or NULL): col is a column of rel
-- (not a system column), role may SELECT it, its type has a default
-- ordering, and lookback's form fits its type (an interval for a date or
-- time, a number for a number).  Every kind of relation a sync streams
-- can be read by a cursor: a table, a partitioned table or a materialized
-- view by what was written since the previous run (the server sees it), a
-- view or a foreign table by the cursor's values.  sync_name: given by
-- start_sync, whose errors name the sync and the way out of them.
CREATE FUNCTION _check_cursor_relation(rel regclass, role oid, mode text, col name,
                                       lookback jsonb, sync_name text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    kind constant "char" := (SELECT k.relkind FROM pg_class k WHERE k.oid = rel);
    alter_rel constant text := format('ALTER %s %s',
        CASE kind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                  WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, rel);
    starting constant text := CASE WHEN sync_name IS NOT NULL
                                   THEN format('sync "%s" cannot start: ', sync_name) ELSE '' END;
    recreate constant text := 'drop the sync and create it again with another cursor column';
    lookback_option constant text := CASE WHEN sync_name IS NOT NULL
                                          THEN format('sync "%s" cannot start: its option', sync_name)
                                          ELSE 'sync option' END;
    a record;
    close_name name;
    base oid;
    type_text text;
    -- not time or timetz: their values wrap around at midnight, and a
    -- lookback from just after it would start after the position
    interval_types constant regtype[] := ARRAY['date', 'timestamp', 'timestamptz'];
    integer_types constant regtype[] := ARRAY['int2', 'int4', 'int8'];
    number_types constant regtype[] := ARRAY['int2', 'int4', 'int8', 'numeric', 'float4', 'float8'];
BEGIN
    IF col IS NULL AND sync_name IS NULL THEN
        RAISE EXCEPTION 'sync option "cursor" gives no column for relation "%"', rel
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give every relation of tables its cursor column, e.g. ''{"cursor": {"%s": "updated_at", ...}}'', or one column for all of them, e.g. ''{"cursor": "updated_at"}''.', rel);
    ELSIF col IS NULL THEN
        RAISE EXCEPTION 'sync "%" cannot start: relation "%" has no cursor column', sync_name, rel
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Drop the sync and create it again with a cursor column for every relation.';
    END IF;

    SELECT x.attnum, x.atttypid, x.attnotnull INTO a
      FROM pg_attribute x
     WHERE x.attrelid = rel AND x.attname = col AND NOT x.attisdropped;
    IF NOT FOUND THEN
        SELECT x.attname INTO close_name
          FROM pg_attribute x
         WHERE x.attrelid = rel AND x.attnum > 0 AND NOT x.attisdropped
           AND lower(x.attname) = lower(col)
         ORDER BY x.attnum LIMIT 1;
        IF sync_name IS NULL THEN
            RAISE EXCEPTION 'cursor column "%" of "%" does not exist', col, rel
                USING ERRCODE = 'undefined_column',
                      HINT = CASE WHEN close_name IS NOT NULL
                          THEN format('Column names are exact (case matters): did you mean "%s"?', close_name)
                          ELSE format('Name a column of %s that grows with each write (a timestamp set at every update, an increasing id).', rel)
                      END;
        END IF;
        RAISE EXCEPTION 'sync "%" cannot start: its cursor column "%" of "%" no longer exists', sync_name, col, rel
            USING ERRCODE = 'undefined_column',
                  HINT = format('If it was renamed, rename it back (%s RENAME COLUMN ... TO %I;); otherwise %s.',
                                alter_rel, col, recreate);
    END IF;
    IF a.attnum <= 0 THEN
        RAISE EXCEPTION '%cursor column "%" of "%" is a system column', starting, col, rel
            USING ERRCODE = 'undefined_column',
                  HINT = CASE WHEN col = 'xmin' AND kind IN ('r', 'p', 'm')
                      THEN 'Name a column of the relation; to read what transactions wrote since the previous run, use method => ''xmin''.'
                      ELSE format('Name a column of %s that grows with each write (a timestamp set at every update, an increasing id).', rel)
                  END;
    END IF;
    IF NOT has_column_privilege(role, rel, a.attnum, 'SELECT') THEN
        RAISE EXCEPTION '%permission denied for cursor column "%" of "%"', starting, col, rel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Role %s does not have SELECT on it.', role::regrole),
                  HINT = format('GRANT SELECT (%I) ON %s TO %s;', col, rel, role::regrole);
    END IF;
    type_text := format_type(a.atttypid, NULL);
    IF NOT _type_is_ordered(a.atttypid) THEN
        RAISE EXCEPTION '%cursor column "%" of "%" has type %, which has no default ordering', starting, col, rel, type_text
            USING ERRCODE = 'undefined_function',
                  DETAIL = 'A cursor sync compares and sorts a column''s values by the default btree operator class of its type, and the type has none.',
                  HINT = CASE WHEN sync_name IS NULL
                      THEN format('Choose a column of an ordered type (a timestamp, a date, a number, text, uuid), or sync %s with method => ''full_refresh''.', rel)
                      ELSE format('Change the column back to an ordered type (%s ALTER COLUMN %I TYPE ...;), or %s.', alter_rel, col, recreate)
                  END;
    END IF;

    -- lookback: an amount of the cursor's own kind
    base := _base_type(a.atttypid);
    IF (jsonb_typeof(lookback) = 'string' AND NOT (base = ANY (interval_types::oid[])))
       OR (jsonb_typeof(lookback) = 'number' AND NOT (base = ANY (number_types::oid[]))) THEN
        RAISE EXCEPTION '% "lookback" is %, but cursor column "%" of "%" has type %', lookback_option,
                        CASE jsonb_typeof(lookback) WHEN 'string' THEN 'an interval' ELSE 'a number' END,
                        col, rel, type_text
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'One "lookback" applies to every relation of the sync: an interval to cursor columns of types date, timestamp and timestamptz (not time or timetz, which wrap around at midnight), a number to int2, int4, int8, numeric, float4 and float8 (or domains over them).',
                  HINT = CASE
                      WHEN sync_name IS NOT NULL
                          THEN format('Change the column back (%s ALTER COLUMN %I TYPE ...;), or drop the sync and create it again with a "lookback" that fits, or none.', alter_rel, col)
                      WHEN base = ANY (number_types::oid[])
                          THEN 'Give a number for a numeric cursor column, e.g. ''{"lookback": 100}'', or leave "lookback" out.'
                      WHEN base = ANY (interval_types::oid[])
                          THEN 'Give an interval for a date or timestamp cursor column, e.g. ''{"lookback": "10 minutes"}'', or leave "lookback" out.'
                      ELSE format('Leave "lookback" out: a cursor of type %s has no distance to look back by.', type_text)
                  END;
    END IF;
    IF jsonb_typeof(lookback) = 'number' AND base = ANY (integer_types::oid[])
       AND lookback::numeric <> trunc(lookback::numeric) THEN
        RAISE EXCEPTION '% "lookback" must be a whole number for cursor column "%" of "%", of type %',
                        lookback_option, col, rel, type_text
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = CASE WHEN sync_name IS NULL
                      THEN format('Give a whole number, e.g. ''{"lookback": %s}''.', ceil(lookback::numeric))
                      ELSE format('Change the column back (%s ALTER COLUMN %I TYPE ...;), or drop the sync and create it again with a "lookback" that fits, or none.', alter_rel, col)
                  END;
    END IF;

    PERFORM _check_dedup_key(rel, mode,
        'A cursor sync sends a row again each time it is written; without a key the destination cannot replace its older version.');
END
$$;

-- create_sync's notice when rel's cursor column col can be NULL: what
-- becomes of such rows, which depends on how the relation is read.
CREATE FUNCTION _notice_nullable_cursor(rel regclass, col name)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    kind "char";
BEGIN
    SELECT k.relkind INTO kind
      FROM pg_class k JOIN pg_attribute a ON a.attrelid = k.oid
     WHERE k.oid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped
       AND NOT a.attnotnull;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RAISE NOTICE 'cursor column "%" of "%" can be NULL', col, rel
        USING DETAIL = CASE WHEN kind IN ('v', 'f')
                  THEN 'A row whose cursor is NULL is sent by the first (full) read only: later runs read the rows whose cursor is greater than the previous run''s largest value, which NULL never is.'
                  ELSE 'A row whose cursor is NULL is sent by the first read, and again whenever it is written: the server sees which rows were written since the previous run, whatever their cursor.'
              END,
              HINT = CASE kind
                  WHEN 'v' THEN 'A view''s columns are never declared NOT NULL: if the column it reads can be NULL, coalesce() it in the view, e.g. coalesce(updated_at, created_at).'
                  WHEN 'm' THEN 'A materialized view''s columns cannot be declared NOT NULL: coalesce() it in its query if it can be NULL.'
                  WHEN 'f' THEN format('If the remote column is never NULL, declare it: ALTER FOREIGN TABLE %s ALTER COLUMN %I SET NOT NULL;', rel, col)
                  ELSE format('If it is never NULL, declare it: ALTER TABLE %s ALTER COLUMN %I SET NOT NULL;', rel, col)
              END;
END
$$;

-- The checks of rel that are particular to method (those of every method
-- are _check_stream_relation's), for create_sync and start_sync.  cursor:
-- the relation's cursor column and the sync's "lookback" option;
-- sync_name, given by start_sync, for errors that name the sync.
CREATE FUNCTION _check_method_relation(method text, rel regclass, role oid, mode text,
                                       cursor_column name DEFAULT NULL,
                                       lookback jsonb DEFAULT NULL,
                                       sync_name text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
BEGIN
    IF method = 'cdc' THEN
        PERFORM _check_cdc_table(rel, role, mode);
    ELSIF method = 'xmin' THEN
        PERFORM _check_xmin_relation(rel, mode);
    ELSIF method = 'cursor' THEN
        PERFORM _check_cursor_relation(rel, role, mode, cursor_column, lookback, sync_name);
    END IF;
END
$$;

-- Checks that rel can be captured by a cdc sync in mode: an ordinary,
-- WAL-logged table whose changes the WAL can key (an append_dedup
-- destination keeps one row per key: updates and deletes must carry it),
-- and no row-level security the sync's role is subject to (decoded changes
-- cannot be filtered by policies).
CREATE FUNCTION _check_cdc_table(rel regclass, role oid, mode text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    c record;
    col name;
BEGIN
    SELECT k.relkind, k.relpersistence, k.relreplident, k.relrowsecurity,
           k.relforcerowsecurity, k.relowner
      INTO c FROM pg_class k WHERE k.oid = rel;
    IF c.relkind = 'p' THEN
        RAISE EXCEPTION '"%" cannot be captured: it is a partitioned table', rel
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'Change data capture decodes the changes of each partition, which hold the rows.',
                  HINT = format('List its partitions instead: SELECT relid FROM pg_partition_tree(%L) WHERE isleaf;', rel::text);
    ELSIF c.relkind <> 'r' THEN
        RAISE EXCEPTION '"%" cannot be captured: it is not a table', rel
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'Change data capture reads the changes of tables from the WAL; views, materialized views and foreign tables have none there.',
                  HINT = 'Sync it in a sync of its own, with method => ''cursor'' (incrementally, by a column that grows with each write) or ''full_refresh''.';
    END IF;
    IF c.relpersistence = 'u' THEN
        RAISE EXCEPTION '"%" cannot be captured: it is an unlogged table', rel
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'The changes of an unlogged table are not written to the WAL.',
                  HINT = format('Run ALTER TABLE %s SET LOGGED; or sync it with method => ''full_refresh''.', rel);
    END IF;
    SELECT a.attname INTO col FROM pg_attribute a
     WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attname IN ('_calabi_cdc_lsn', '_calabi_cdc_updated_at', '_calabi_cdc_deleted_at')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'table "%" has a column named %, which change data capture adds to every record', rel, col
            USING ERRCODE = 'duplicate_column',
                  HINT = format('Rename it (ALTER TABLE %s RENAME COLUMN %I TO ...), or sync the table with method => ''full_refresh''.', rel, col);
    END IF;
    PERFORM _check_dedup_key(rel, mode,
        CASE WHEN c.relreplident = 'f'
             THEN 'REPLICA IDENTITY FULL puts whole rows in the WAL, but the destination still needs a key to deduplicate on.'
             ELSE 'Its updates and deletes cannot be matched to the rows they change.' END);
    IF mode = 'append_dedup' AND c.relreplident = 'n' THEN
        RAISE EXCEPTION 'table "%" has REPLICA IDENTITY NOTHING: its deletes carry no key', rel
            USING ERRCODE = 'invalid_table_definition',
                  HINT = format('Run ALTER TABLE %s REPLICA IDENTITY DEFAULT; (or FULL), or use destination_sync_mode => ''append''.', rel);
    END IF;
    IF c.relrowsecurity
       AND NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = role AND (r.rolsuper OR r.rolbypassrls))
       AND (c.relforcerowsecurity OR NOT pg_has_role(role, c.relowner, 'USAGE')) THEN
        -- (USAGE: the owner's privileges, as core's check_enable_rls)
        RAISE EXCEPTION 'table "%" has row-level security, which change data capture cannot apply', rel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Role %s is subject to its policies, but decoded changes are not filtered by policies.', role::regrole),
                  HINT = format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY; or read as a role with BYPASSRLS (run_as, or ALTER ROLE %s BYPASSRLS;), or sync the table with method => ''full_refresh''.', rel, role::regrole);
    END IF;
END
$$;

-- Checks the server can decode for a cdc sync: wal_level, slots, and the
-- output_plugin_libraries allow-list; and, given the sync's name, that a
-- replication slot is free for it unless its slot slot_name exists
-- (src/cdc_slot.c).
CREATE FUNCTION _check_cdc_server(sync_name text DEFAULT NULL, slot_name text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'calabi_push_check_cdc_server'
LANGUAGE C VOLATILE;

------------------------------------------------------------------------------

CREATE FUNCTION _create_sync(name text, destination text, tables regclass[] DEFAULT NULL,
                            method text DEFAULT 'full_refresh',
                            destination_sync_mode text DEFAULT NULL,
                            options jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    opts record;
    run_as oid;
    caller pg_catalog.name := _caller();
    rel regclass;
    dup regclass;
    new_id uuid;
    mode text;
    pub text;
    cursor_columns name[];
BEGIN
    PERFORM _check_name('sync', _create_sync.name);
    IF EXISTS (SELECT 1 FROM sync y WHERE y.name = _create_sync.name) THEN
        RAISE EXCEPTION 'sync "%" already exists', _create_sync.name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another name, or drop the existing sync first with calabi_push.drop_sync().';
    END IF;

    IF _create_sync.destination IS NULL THEN
        RAISE EXCEPTION 'destination must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Name a destination; calabi_push.destinations lists them.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM calabi_push.destination d WHERE d.name = _create_sync.destination) THEN
        RAISE EXCEPTION 'destination "%" does not exist', _create_sync.destination
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with calabi_push.create_destination(), or name one that calabi_push.destinations lists.';
    END IF;

    IF _create_sync.method IS NULL THEN
        RAISE EXCEPTION 'method must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Leave method out for a full refresh.';
    ELSIF _create_sync.method NOT IN ('full_refresh', 'xmin', 'cursor', 'cdc') THEN
        RAISE EXCEPTION 'unknown sync method "%"', _create_sync.method
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The methods are full_refresh (the default), xmin, cursor and cdc, in lower case.';
    END IF;

    -- NULL: the method's own default (xmin's and cursor's depend on the
    -- relations' keys: decided once they are checked)
    mode := coalesce(_create_sync.destination_sync_mode,
                     CASE _create_sync.method WHEN 'cdc' THEN 'append_dedup'
                                              WHEN 'xmin' THEN NULL
                                              WHEN 'cursor' THEN NULL
                                              ELSE 'overwrite' END);
    IF _create_sync.method = 'full_refresh' AND mode = 'append_dedup' THEN
        RAISE EXCEPTION 'destination_sync_mode "append_dedup" needs an incremental method'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A full refresh sends every row at each run; deduplicating by primary key is for the incremental methods (xmin, cursor, cdc).',
                  HINT = 'Use destination_sync_mode => ''overwrite'' (the default) or ''append'' with full_refresh, or method => ''xmin'', ''cursor'' or ''cdc''.';
    ELSIF _create_sync.method = 'full_refresh' AND mode NOT IN ('overwrite', 'append') THEN
        RAISE EXCEPTION 'unknown destination_sync_mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'With full_refresh, use overwrite (the default) or append.';
    ELSIF _create_sync.method = 'cdc' AND mode = 'overwrite' THEN
        RAISE EXCEPTION 'destination_sync_mode "overwrite" cannot be used with change data capture'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A cdc sync sends each change once; there is no complete copy to replace the destination with at each run.',
                  HINT = 'Use append_dedup (the default for cdc: one row per key) or append (every change as a row).';
    ELSIF _create_sync.method = 'cdc' AND mode NOT IN ('append_dedup', 'append') THEN
        RAISE EXCEPTION 'unknown destination_sync_mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'With cdc, use append_dedup (the default) or append.';
    ELSIF _create_sync.method = 'xmin' AND mode = 'overwrite' THEN
        RAISE EXCEPTION 'destination_sync_mode "overwrite" cannot be used with xmin'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'After its first run an xmin sync sends only the rows that changed; there is no complete copy to replace the destination with at each run.',
                  HINT = 'Use append_dedup (one row per key) or append (every version sent as a row), or method => ''full_refresh'' to overwrite the destination at each run.';
    ELSIF _create_sync.method = 'xmin' AND mode NOT IN ('append_dedup', 'append') THEN
        RAISE EXCEPTION 'unknown destination_sync_mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'With xmin, use append_dedup (the default where every relation has a key) or append.';
    ELSIF _create_sync.method = 'cursor' AND mode = 'overwrite' THEN
        RAISE EXCEPTION 'destination_sync_mode "overwrite" cannot be used with cursor'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'After its first run a cursor sync sends only what was written since the previous run (from a view or a foreign table: the rows whose cursor passed the previous run''s largest value); there is no complete copy to replace the destination with at each run.',
                  HINT = 'Use append_dedup (one row per key) or append (every version sent as a row), or method => ''full_refresh'' to overwrite the destination at each run.';
    ELSIF _create_sync.method = 'cursor' AND mode NOT IN ('append_dedup', 'append') THEN
        RAISE EXCEPTION 'unknown destination_sync_mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'With cursor, use append_dedup (the default where every relation has a key) or append.';
    END IF;
    -- the slot of a sync that runs on another server (run_on) is that
    -- server's: only the settings count here (the primary's wal_level
    -- holds for its standbys too)
    IF _create_sync.method = 'cdc' THEN
        PERFORM _check_cdc_server(CASE WHEN _runs_here(_create_sync.options)
                                       THEN _create_sync.name END);
    END IF;

    SELECT * INTO opts FROM _sync_options(_create_sync.options);

    -- the role the sync reads as: the caller, or one the caller is a member of
    IF opts.r_run_as IS NULL THEN
        SELECT r.oid INTO run_as FROM pg_roles r WHERE r.rolname = caller;
    ELSE
        SELECT r.oid INTO run_as FROM pg_roles r WHERE r.rolname = opts.r_run_as;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'role "%" does not exist', opts.r_run_as
                USING ERRCODE = 'undefined_object',
                      HINT = 'Give the name of an existing role as "run_as" (case matters), or leave it out to read as yourself.';
        END IF;
        IF NOT _caller_may_act_as(run_as) THEN
            RAISE EXCEPTION 'permission denied to create a sync that reads as role %', run_as::regrole
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = format('Role %s is not a member of role %s.', quote_ident(caller), run_as::regrole),
                      HINT = format('Leave "run_as" out to read as yourself, or have a superuser or a member of %s create the sync.',
                                    run_as::regrole);
        END IF;
    END IF;

    IF _create_sync.method = 'cdc' AND opts.r_options ? 'schedule' THEN
        RAISE EXCEPTION 'sync option "schedule" does not apply to change data capture'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A cdc sync runs continuously, sending each change as it commits.',
                  HINT = 'Leave "schedule" out.';
    END IF;

    -- a cursor sync reads by a column of each relation ("cursor", kept in
    -- sync_stream.cursor_column) and may read again below the previous
    -- run's position ("lookback", kept in the options)
    IF _create_sync.method = 'cursor' AND opts.r_cursor IS NULL THEN
        RAISE EXCEPTION 'method cursor needs the sync option "cursor"'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A cursor sync reads each relation by a column that grows with each write: its cursor.',
                  HINT = 'Name that column, e.g. options => ''{"cursor": "updated_at"}'', or one per relation: ''{"cursor": {"shop.orders": "updated_at", "shop.events": "id"}}''.';
    END IF;
    IF _create_sync.method <> 'cursor' AND opts.r_cursor IS NOT NULL THEN
        RAISE EXCEPTION 'sync option "cursor" is for method cursor'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave it out, or use method => ''cursor''.';
    END IF;
    IF _create_sync.method <> 'cursor' AND opts.r_options ? 'lookback' THEN
        RAISE EXCEPTION 'sync option "lookback" is for method cursor'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave it out, or use method => ''cursor''.';
    END IF;

    -- a failover slot is synchronized to standbys (sync_replication_slots),
    -- so that a promoted standby continues the sync: PostgreSQL 17's slot
    -- property.  Stored for every cdc sync (default false), for the worker.
    IF _create_sync.method <> 'cdc' AND opts.r_options ? 'failover' THEN
        RAISE EXCEPTION 'sync option "failover" is for method cdc'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave it out, or use method => ''cdc''.';
    END IF;
    -- logical decoding on a standby came with PostgreSQL 16 (docs/cdc.md,
    -- "Decoding on a standby")
    IF _create_sync.method = 'cdc' AND NOT _runs_here(opts.r_options)
       AND current_setting('server_version_num')::int < 160000 THEN
        RAISE EXCEPTION 'a CDC sync cannot run on a standby of PostgreSQL %',
                        current_setting('server_version')
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = format('"run_on" names %L, not this server; a standby decodes only from PostgreSQL 16 on.',
                                  opts.r_options->>'run_on'),
                  HINT = 'Logical decoding on a standby needs PostgreSQL 16 or later: leave "run_on" out to run the sync on the primary.';
    END IF;
    IF _create_sync.method = 'cdc' THEN
        IF (opts.r_options->>'failover')::boolean
           AND current_setting('server_version_num')::int < 170000 THEN
            RAISE EXCEPTION 'sync option "failover" is not supported on PostgreSQL %',
                            current_setting('server_version')
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = 'Failover slots, which standbys synchronize (sync_replication_slots), came with PostgreSQL 17.',
                      HINT = 'Failover slots need PostgreSQL 17 or later; leave the option out (after a failover, resync() then reads every table again).';
        END IF;
        opts.r_options := opts.r_options
            || jsonb_build_object('failover', coalesce((opts.r_options->>'failover')::boolean, false));
    END IF;

    -- a publication names (or limits) the tables, as logical replication's do
    pub := opts.r_options->>'publication';
    IF pub IS NOT NULL THEN
        IF _create_sync.method <> 'cdc' THEN
            RAISE EXCEPTION 'sync option "publication" is for method cdc'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave it out, or use method => ''cdc''.';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = pub) THEN
            RAISE EXCEPTION 'publication "%" does not exist', pub
                USING ERRCODE = 'undefined_object',
                      HINT = 'Name a publication of this database (SELECT pubname FROM pg_publication), or create one with CREATE PUBLICATION.';
        END IF;
        IF _create_sync.tables IS NULL OR cardinality(_create_sync.tables) = 0 THEN
            SELECT array_agg(format('%I.%I', t.schemaname, t.tablename)::regclass
                             ORDER BY t.schemaname, t.tablename)
              INTO _create_sync.tables
              FROM pg_publication_tables t WHERE t.pubname = pub;
            IF _create_sync.tables IS NULL THEN
                RAISE EXCEPTION 'publication "%" has no tables', pub
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = format('Add tables with ALTER PUBLICATION %I ADD TABLE ...; or pass tables.', pub);
            END IF;
        ELSE
            SELECT t INTO dup FROM unnest(_create_sync.tables) t
             WHERE t IS NOT NULL AND NOT EXISTS (
                   SELECT 1 FROM pg_publication_tables p
                    WHERE p.pubname = pub
                      AND format('%I.%I', p.schemaname, p.tablename)::regclass = t)
             LIMIT 1;
            IF dup IS NOT NULL THEN
                RAISE EXCEPTION 'table "%" is not in publication "%"', dup, pub
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = format('Add it with ALTER PUBLICATION %I ADD TABLE %s; or leave it out.', pub, dup);
            END IF;
            dup := NULL;
        END IF;
    END IF;

    -- the relations
    IF _create_sync.tables IS NULL OR cardinality(_create_sync.tables) = 0 THEN

        RAISE EXCEPTION 'a sync needs at least one table'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the relations to sync, e.g. tables => ARRAY[''public.orders'', ''public.customers'']::regclass[].';
    END IF;
    IF array_ndims(_create_sync.tables) > 1 THEN
        RAISE EXCEPTION 'tables must be a one-dimensional array'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the relations as a list, e.g. ARRAY[''public.orders'', ''public.customers'']::regclass[].';
    END IF;
    IF array_position(_create_sync.tables, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'tables must not contain NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Remove the NULL elements from the array.';
    END IF;
    SELECT t INTO dup FROM unnest(_create_sync.tables) t GROUP BY t HAVING count(*) > 1
     ORDER BY min(array_position(_create_sync.tables, t)) LIMIT 1;
    IF dup IS NOT NULL THEN
        RAISE EXCEPTION 'relation "%" is listed more than once', dup
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List each relation once.';
    END IF;
    -- (subscripts from 1, whatever the array's bounds)
    _create_sync.tables := ARRAY(SELECT u.t FROM unnest(_create_sync.tables) WITH ORDINALITY u(t, o)
                                  ORDER BY u.o);
    IF _create_sync.method = 'cursor' THEN
        cursor_columns := _cursor_columns(_create_sync.tables, opts.r_cursor);
    END IF;
    FOR i IN 1 .. cardinality(_create_sync.tables) LOOP
        rel := _create_sync.tables[i];
        PERFORM _check_stream_relation(rel, run_as);
        -- a view's functions run as the role that reads it: as a superuser,
        -- those of a view another role owns would run with all privileges
        IF EXISTS (SELECT 1 FROM pg_class k
                     JOIN pg_roles o ON o.oid = k.relowner
                     JOIN pg_roles r ON r.oid = run_as
                    WHERE k.oid = rel AND k.relkind = 'v'
                      AND r.rolsuper AND NOT o.rolsuper) THEN
            RAISE WARNING 'sync "%" reads view % as superuser %: the functions the view calls will run with a superuser''s privileges', _create_sync.name, rel, run_as::regrole
                USING HINT = format('Its owner %s decides what those functions do. Drop the sync and create it again with "run_as" naming a role that is not a superuser (e.g. %s), unless you trust that role.',
                                    (SELECT k.relowner::regrole FROM pg_class k WHERE k.oid = rel),
                                    (SELECT k.relowner::regrole FROM pg_class k WHERE k.oid = rel));
        END IF;
        PERFORM _check_method_relation(_create_sync.method, rel, run_as, mode,
                                       cursor_columns[i], opts.r_options->'lookback');
    END LOOP;
    -- xmin, cursor: one row per key where every relation has one
    IF mode IS NULL THEN
        SELECT CASE WHEN bool_and(_has_key(t)) THEN 'append_dedup' ELSE 'append' END
          INTO mode FROM unnest(_create_sync.tables) t;
    END IF;
    -- what becomes of rows whose cursor is NULL, once the sync is sure to
    -- be made
    FOR i IN 1 .. coalesce(cardinality(cursor_columns), 0) LOOP
        PERFORM _notice_nullable_cursor(_create_sync.tables[i], cursor_columns[i]);
    END LOOP;

    -- bound to this cluster, database and timeline (22_home.sql)
    INSERT INTO sync (name, destination, method, destination_sync_mode, options,
                      run_as, created_by, home_system, home_database, home_timeline)
    SELECT _create_sync.name, _create_sync.destination, _create_sync.method,
           mode, opts.r_options, run_as, caller,
           h.system_identifier, h.database, h.timeline
      FROM _here() h
    RETURNING id INTO new_id;
    INSERT INTO sync_stream (sync_id, relid, ordinal, cursor_column)
    SELECT new_id, t.rel, t.ordinal, cursor_columns[t.ordinal]
      FROM unnest(_create_sync.tables) WITH ORDINALITY AS t(rel, ordinal);
    -- created stopped: nothing for the launcher to do
    RETURN new_id;
END
$$;

CREATE FUNCTION create_sync(name text, destination text, tables regclass[] DEFAULT NULL,
                            method text DEFAULT 'full_refresh',
                            destination_sync_mode text DEFAULT NULL,
                            options jsonb DEFAULT '{}')
RETURNS uuid
AS 'MODULE_PATHNAME', 'calabi_push_manage'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION create_sync(text, text, regclass[], text, text, jsonb) IS
'creates a sync of tables to a destination, stopped; start it with start_sync()';

CREATE FUNCTION _start_sync(name text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    s sync;
    rel regclass;
    col name;
BEGIN
    s := _sync_for_update(_start_sync.name);
    PERFORM _refuse_copied(s);
    -- a sync that runs on another server (run_on) may have stopped there
    -- (a refusal, a run-once done) without this catalog knowing: starting
    -- it is a command that server applies (24_run_on.sql)
    IF _sync_is_running(s) AND _runs_here(s.options) THEN
        RAISE EXCEPTION 'sync "%" is already running', s.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Stop it first with calabi_push.stop_sync(%L), or read its tables again with calabi_push.resync(%L).',
                                s.name, s.name);
    END IF;
    PERFORM _check_sync_streams(s);
    IF s.method = 'cdc' THEN
        PERFORM _check_cdc_server(CASE WHEN _runs_here(s.options) THEN s.name END,
                                  'calabi_push_' || replace(s.id::text, '-', ''));
    END IF;
    -- what create_sync checked for the method may have changed since
    -- (row-level security, replica identity, persistence, key, access
    -- method, partitions attached, a cursor column renamed, dropped or of
    -- another type): for cdc the worker checks again too, at start and
    -- whenever a table's definition changes
    FOR rel, col IN SELECT t.relid, t.cursor_column FROM sync_stream t
                     WHERE t.sync_id = s.id ORDER BY t.ordinal LOOP
        PERFORM _check_method_relation(s.method, rel, s.run_as, s.destination_sync_mode,
                                       col, s.options->'lookback', s.name);
    END LOOP;

    -- A new run after a complete one reads every stream again (xmin,
    -- cursor: what changed since the position its checkpoint keeps); a
    -- run that was stopped part way resumes: streams done stay done,
    -- streams being read keep their checkpoint.  A cdc sync resumes its
    -- stream of changes, and reads again only what resync() asked for.
    IF s.method <> 'cdc'
       AND NOT EXISTS (SELECT 1 FROM sync_stream t WHERE t.sync_id = s.id AND t.phase <> 'done') THEN
        UPDATE sync_stream t SET phase = 'pending', rows_sent = 0 WHERE t.sync_id = s.id;
    END IF;
    UPDATE sync y
       SET enabled = true, error_stopped = false,
           run_started_at = now(), run_completed_at = NULL,
           command_seq = y.command_seq + 1, start_command = y.command_seq + 1
     WHERE y.id = s.id;
    -- a sync that was enabled (done with its run, or stopped by a refusal)
    -- may still have a worker: restart it
    PERFORM calabi_push._sync_changed(s.id, _runs_here(s.options), s.enabled);
END
$$;

CREATE FUNCTION start_sync(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'calabi_push_manage'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION start_sync(text) IS
'starts a sync: a new run, or the resumption of a run that was stopped part way';

CREATE FUNCTION _stop_sync(name text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    s sync;
BEGIN
    s := _sync_for_update(_stop_sync.name);
    IF NOT s.enabled THEN
        RAISE EXCEPTION 'sync "%" is not running', s.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('It is stopped already; calabi_push.start_sync(%L) starts it.', s.name);
    END IF;
    UPDATE sync y SET enabled = false WHERE y.id = s.id;
    PERFORM calabi_push._sync_changed(s.id, false, false);
END
$$;

CREATE FUNCTION stop_sync(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'calabi_push_manage'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION stop_sync(text) IS
'stops a sync; start_sync() resumes it where it stopped';

CREATE FUNCTION _drop_sync(name text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    s sync;
BEGIN
    s := _sync_for_update(_drop_sync.name);
    -- after commit: its worker stops, then a probe drops its slot (cdc)
    PERFORM calabi_push._sync_changed(s.id, false, false, true);
    DELETE FROM sync y WHERE y.id = s.id;   -- and its streams
END
$$;

CREATE FUNCTION drop_sync(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'calabi_push_manage'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION drop_sync(text) IS
'drops a sync, stopping it if it runs';

CREATE FUNCTION _resync(name text, rel regclass DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    s sync;
    listed text;
BEGIN
    s := _sync_for_update(_resync.name);
    PERFORM _refuse_copied(s);
    IF _resync.rel IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM sync_stream t WHERE t.sync_id = s.id AND t.relid = _resync.rel) THEN
        SELECT string_agg(t.relid::text, ', ' ORDER BY t.ordinal) INTO listed
          FROM sync_stream t WHERE t.sync_id = s.id;
        RAISE EXCEPTION 'relation "%" is not part of sync "%"', _resync.rel, s.name
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The sync''s relations: %s.', listed),
                  HINT = 'Name one of its relations, or leave rel out to read all of them again.';
    END IF;
    -- numbered for a server that runs it from a state file (run_on)
    UPDATE sync y SET command_seq = y.command_seq + 1 WHERE y.id = s.id
    RETURNING y.command_seq INTO s.command_seq;
    UPDATE sync_stream t
       SET phase = 'pending', checkpoint = NULL, rows_sent = 0, reset_command = s.command_seq
     WHERE t.sync_id = s.id AND (_resync.rel IS NULL OR t.relid = _resync.rel);
    -- cdc, every table: start over from a new slot (the way out of a slot
    -- that was lost, invalidated or consumed elsewhere); one table: it is
    -- read again while the others keep streaming
    IF s.method = 'cdc' AND _resync.rel IS NULL THEN
        UPDATE sync y SET cdc_lsn = NULL, slot_reset_command = s.command_seq WHERE y.id = s.id;
    END IF;
    -- a sync stopped by an error (a refused batch, a lost cdc slot) is
    -- started again: reading everything again is the way out of it.  On
    -- another server (run_on) this catalog cannot tell: it is started again
    -- there all the same.
    IF s.error_stopped OR (s.enabled AND NOT _runs_here(s.options)) THEN
        UPDATE sync y SET enabled = true, error_stopped = false, run_started_at = now(),
                          restart_command = s.command_seq
         WHERE y.id = s.id;
        s.enabled := true;
        s.error_stopped := false;
    END IF;
    -- an enabled sync (running, waiting for its schedule, or idle after a
    -- run-once) reads them at once: its worker starts again.  A stopped one
    -- reads them at its next start_sync.
    IF s.enabled AND NOT s.error_stopped THEN
        UPDATE sync y SET run_completed_at = NULL WHERE y.id = s.id;
        PERFORM calabi_push._sync_changed(s.id, _runs_here(s.options), true);
    END IF;
END
$$;

CREATE FUNCTION resync(name text, rel regclass DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'calabi_push_manage'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION resync(text, regclass) IS
'reads a sync''s relations (or one of them) again from the start';

CREATE FUNCTION _adopt_sync(name text, keep_identity boolean DEFAULT false)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    s sync;
    h record;
    new_id uuid;
BEGIN
    s := _sync_for_update(_adopt_sync.name);
    IF _adopt_sync.keep_identity IS NULL THEN
        RAISE EXCEPTION 'keep_identity must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Leave it out (false: a new identity), or pass true.';
    END IF;
    IF _copied(s.name, s.home_system, s.home_database, s.home_timeline,
               s.options ? 'run_on' AND _runs_here(s.options)) IS NULL THEN
        RAISE EXCEPTION 'sync "%" is not a copy: it belongs to this database', s.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('There is nothing to adopt; calabi_push.resync(%L) reads its tables again.', s.name);
    END IF;
    SELECT * INTO h FROM _here();

    IF _adopt_sync.keep_identity THEN
        -- "this is the original now": the server it ran on is gone (a
        -- failover, a move by dump and restore, pg_upgrade).  If it is not,
        -- both send under one identity: a superuser's call, not a sync
        -- owner's.
        IF NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = _caller()), false) THEN
            RAISE EXCEPTION 'permission denied to adopt sync "%" with its identity', s.name
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'Only a superuser may declare that the server the sync ran on is gone.',
                      HINT = format('Leave keep_identity out to give it an identity of its own: SELECT calabi_push.adopt_sync(%L);', s.name);
        END IF;
        UPDATE sync y
           SET home_system = h.system_identifier, home_database = h.database,
               home_timeline = h.timeline,
               enabled = false, error_stopped = false,
               last_error = NULL, last_error_redacted = NULL, last_error_at = NULL
         WHERE y.id = s.id;
        PERFORM _identity_moved(s.id, s.home_system <> h.system_identifier);
        RETURN s.id;
    END IF;

    -- A new identity: a new id (so new Idempotency-Keys, batch numbers from
    -- 1 and a slot name of its own) and a fresh start, since what the
    -- endpoint acknowledged, and the checkpoints that record it, belong to
    -- the original.  Stopped: start_sync starts it.
    new_id := gen_random_uuid();
    UPDATE sync y
       SET id = new_id,
           home_system = h.system_identifier, home_database = h.database,
           home_timeline = h.timeline,
           enabled = false, error_stopped = false,
           run_started_at = NULL, run_completed_at = NULL, next_batch_seq = 1,
           batches_sent = 0, records_sent = 0, bytes_sent = 0, retries = 0,
           last_ack_at = NULL, last_error = NULL, last_error_redacted = NULL,
           last_error_at = NULL, cdc_lsn = NULL
     WHERE y.id = s.id;
    UPDATE sync_stream t      -- (its sync_id followed: ON UPDATE CASCADE)
       SET phase = 'pending', checkpoint = NULL, rows_sent = 0,
           read_started_at = NULL, read_finished_at = NULL
     WHERE t.sync_id = new_id;
    RETURN new_id;
END
$$;

CREATE FUNCTION adopt_sync(name text, keep_identity boolean DEFAULT false)
RETURNS uuid
AS 'MODULE_PATHNAME', 'calabi_push_manage'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION adopt_sync(text, boolean) IS
'makes a sync copied from another database, cluster or timeline this database''s own: a new identity and a fresh start (or, keep_identity, for a superuser whose original server is gone: the same one); it stays stopped';

REVOKE ALL ON FUNCTION
    adopt_sync(text, boolean),
    _adopt_sync(text, boolean),
    _refuse_copied(sync),
    create_sync(text, text, regclass[], text, text, jsonb),
    start_sync(text),
    stop_sync(text),
    drop_sync(text),
    resync(text, regclass),
    _create_sync(text, text, regclass[], text, text, jsonb),
    _start_sync(text),
    _stop_sync(text),
    _drop_sync(text),
    _resync(text, regclass),
    _check_stream_relation(regclass, oid),
    _check_cdc_table(regclass, oid, text),
    _has_key(regclass),
    _check_dedup_key(regclass, text, text),
    _check_xmin_relation(regclass, text),
    _check_method_relation(text, regclass, oid, text, name, jsonb, text),
    _base_type(oid),
    _type_is_ordered(oid),
    _cursor_columns(regclass[], jsonb),
    _check_cursor_relation(regclass, oid, text, name, jsonb, text),
    _notice_nullable_cursor(regclass, name),
    _interval_text(interval),
    _check_cdc_server(text, text),
    _sync_defaults(),
    _sync_options(jsonb),
    _integer_option(text, text, jsonb, bigint, bigint, bigint),
    _sync_is_running(sync),
    _sync_for_update(text),
    _check_sync_streams(sync)
FROM PUBLIC;
