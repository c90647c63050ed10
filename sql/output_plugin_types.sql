-- The output plugin writes values with the one encoder, byte for byte as
-- preview() writes them (docs/type-mapping.md), whatever the settings of the
-- session that decodes.  The table of every type family is the TAP tests'
-- (test/lib/everything_*.sql); its long values are shown by their length.
\set ECHO none
\set schema op_types
\i test/lib/decoding.sql
\set ECHO all
\i test/lib/everything_schema.sql
SELECT 'init' FROM pg_create_logical_replication_slot('op_types', 'calabi_push');
\i test/lib/everything_rows.sql

-- decoded in a session whose settings would change every type's text
SET DateStyle = 'German, DMY';
SET TimeZone = 'Pacific/Chatham';
SET IntervalStyle = 'sql_standard';
SET extra_float_digits = -10;
SET bytea_output = 'escape';
SET lc_monetary = 'de_DE.UTF-8';
CREATE TEMP TABLE decoded AS
  SELECT c::json AS m, c AS line FROM cp_get_changes('op_types') c;
RESET ALL;
SET search_path = op_types, public;

-- one STREAM, then one RECORD per row
SELECT m->>'type' AS type, count(*) FROM decoded GROUP BY 1 ORDER BY 1;
SELECT line FROM decoded WHERE m->>'type' = 'STREAM';

-- the first row and the row of NaN and infinities, member by member
SELECT m->'record'->'data'->>'id' AS id, d.key,
       CASE WHEN length(d.value::text) > 80 THEN '<' || length(d.value::text) || ' chars>'
            ELSE d.value::text END AS value
  FROM decoded, json_each(m->'record'->'data') WITH ORDINALITY d(key, value, n)
 WHERE m->>'type' = 'RECORD' AND m->'record'->'data'->>'id' IN ('1', '1000')
 ORDER BY (m->'record'->'data'->>'id')::int, d.n;

-- every row's data, without the _calabi_cdc_* members, is preview()'s text
SELECT count(*) AS records,
       count(*) FILTER (WHERE left(d.line, strpos(d.line, ',"_calabi_cdc_lsn":') - 1) || '}'
                              = '{"type":"RECORD","record":{"namespace":"op_types","stream":"everything","emitted_at":"<now>","data":' || p.j::text)
         AS same_as_preview
  FROM decoded d
  JOIN calabi_push.preview('everything', NULL) p(j)
    ON (p.j->>'id') = d.m->'record'->'data'->>'id';

SELECT pg_drop_replication_slot('op_types');
DROP SCHEMA op_types CASCADE;
