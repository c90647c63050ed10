-- Everything that type-mapping.md writes as "the type's own output
-- function's text" (composite, enum, range and multirange, geometric,
-- network, uuid, pg_lsn, xml, tsvector, tsquery, hstore, reg* types), as
-- that text under the pinned settings (DateStyle ISO, YMD; IntervalStyle
-- postgres; TimeZone UTC; extra_float_digits 1; bytea_output hex; and,
-- docs/type-mapping.md, search_path pg_catalog so reg* values are
-- schema-qualified); then domains (as their base type) and arrays (NULL
-- elements, several dimensions, lower bounds, empty, of composites, enums
-- and domains, int2vector and oidvector).
--
-- The session keeps pg_regress's defaults (DateStyle Postgres, MDY;
-- TimeZone America/Los_Angeles; IntervalStyle postgres_verbose), which are
-- not the pinned ones: where the text differs, it is shown next to the JSON.
CREATE SCHEMA types_composite;
SET search_path = types_composite;
CREATE EXTENSION hstore SCHEMA types_composite;

-- How many of rel's string values (columns other than label, arrays and
-- numbers left out) are exactly their type's output function's text (as
-- format('%s') writes it: inet::text would add a /32) under the pinned
-- settings, set here for the function's duration only.
CREATE FUNCTION output_text_matches(rel regclass) RETURNS text LANGUAGE plpgsql
  SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' SET TimeZone = 'UTC'
  SET extra_float_digits = 1 SET bytea_output = 'hex' SET search_path = 'pg_catalog, pg_temp'
AS $$
DECLARE
  col name;
  total bigint := 0;
  same bigint := 0;
  t bigint;
  s bigint;
BEGIN
  FOR col IN SELECT attname FROM pg_attribute
              WHERE attrelid = rel AND attnum > 0 AND NOT attisdropped AND attname <> 'label'
              ORDER BY attnum LOOP
    EXECUTE format(
      'SELECT count(*), count(*) FILTER (WHERE p.j->>%L = format(''%%s'', x.%I))
         FROM calabi_push.preview(%L, NULL) p(j) JOIN %s x ON x.label = p.j->>''label''
        WHERE json_typeof(p.j->%L) = ''string''', col, col, rel, rel, col)
      INTO t, s;
    total := total + t;
    same := same + s;
  END LOOP;
  RETURN same || ' of ' || total;
END
$$;

-- composite types: record_out's text, quoting and all, escaped as a JSON
-- string; the timestamps, floats, interval and bytea inside are in the
-- pinned forms (the session's own text of the same value is different)
CREATE TYPE pair AS (x int, y text);
CREATE TYPE inner_t AS (tz timestamptz, ts timestamp, d date, f8 float8, f4 real,
  n numeric, i interval, b bytea, tt timetz);
CREATE TYPE outer_t AS (id int, inner_v inner_t, tags text[], p pair);
CREATE TABLE pairs (label text, v pair);
INSERT INTO pairs VALUES
  ('plain', ROW(1, 'plain')),
  ('quotes and comma', ROW(2, 'a "quoted", text')),
  ('backslash', ROW(3, 'back\slash')),
  ('spaces, UTF-8', ROW(4, 'é 中文')),
  ('empty string', ROW(5, '')),
  ('null fields', ROW(NULL, NULL)),
  ('null', NULL);
SELECT * FROM calabi_push.preview('pairs', NULL);
CREATE TABLE inners (label text, v inner_t);
INSERT INTO inners VALUES
  ('values', ROW('2004-10-19 10:23:00-08', '2004-10-19 10:23:54.123456', '1991-02-10 BC',
                 0.1, 3.4145, 3.540, '1 year 2 mons 3 days 04:05:06', '\x6b707a',
                 '13:00:06+05:30:15')),
  ('not finite', ROW('infinity', '-infinity', 'infinity', 'NaN', '-Infinity', 'NaN',
                     '-00:00:01.5', '\x', '00:00+00'));
SELECT label, v::text AS session_text, p.j->'v' AS json
  FROM calabi_push.preview('inners', NULL) WITH ORDINALITY p(j, n)
  JOIN inners x ON x.label = p.j->>'label'
 ORDER BY p.n;
CREATE TABLE outers (label text, v outer_t);
INSERT INTO outers VALUES
  ('nested', ROW(1, ROW('2004-10-19 10:23:00-08', NULL, '1999-01-08', 1e+24, 0.1, NULL,
                        '1 day', NULL, NULL)::inner_t,
                 ARRAY['a', 'b c', NULL], ROW(2, 'x "y"')::pair));
SELECT * FROM calabi_push.preview('outers', NULL);

-- enum: the label
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'with "quote"', 'ünïcödé');
CREATE TABLE moods (label text, v mood);
INSERT INTO moods VALUES ('sad', 'sad'), ('happy', 'happy'), ('quote', 'with "quote"'),
  ('unicode', 'ünïcödé'), ('null', NULL);
SELECT * FROM calabi_push.preview('moods', NULL);

-- range types and multiranges: range_out's text (canonical bounds for the
-- discrete types, timestamps in the pinned forms); one line per value
CREATE TABLE ranges (label text, i4 int4range, i8 int8range, nr numrange, ts tsrange,
  tz tstzrange, dr daterange);
INSERT INTO ranges VALUES
  ('bounded', '[1,10)', '[1,10]', '[1.50,2.5]', '[2004-10-19 10:23:54.5,2004-10-20)',
   '[2004-10-19 10:23:00-08,2004-10-20 00:00+00)', '[1991-02-10 BC,2000-01-01]'),
  ('unbounded', '(,5]', '[-9223372036854775808,)', '(,)', '[2004-10-19,infinity)',
   '(-infinity,)', '[-infinity,infinity]'),
  ('empty', 'empty', 'empty', 'empty', 'empty', 'empty', 'empty'),
  ('null', NULL, NULL, NULL, NULL, NULL, NULL);
SELECT p.j->>'label' AS label, e.key AS column, e.value AS json
  FROM calabi_push.preview('ranges', NULL) WITH ORDINALITY p(j, n),
       json_each(p.j) WITH ORDINALITY e(key, value, k)
 WHERE e.key <> 'label'
 ORDER BY p.n, e.k;
-- the session's own text of the timestamp ranges is different
SELECT ts::text AS tsrange_session_text, tz::text AS tstzrange_session_text
  FROM ranges WHERE label = 'bounded';
CREATE TABLE multiranges (label text, i4 int4multirange, nr nummultirange,
  tz tstzmultirange, dr datemultirange);
INSERT INTO multiranges VALUES
  ('two ranges', '{[1,3), [5,7]}', '{[1.5,2), (3,4.50]}',
   '{[2004-10-19 10:23:00-08,2004-10-19 11:00:00-08), [2005-01-01 00:00+00,)}',
   '{[1991-02-10 BC,1991-02-11 BC], [2000-01-01,infinity)}'),
  ('empty', '{}', '{}', '{}', '{}'),
  ('null', NULL, NULL, NULL, NULL);
SELECT p.j->>'label' AS label, e.key AS column, e.value AS json
  FROM calabi_push.preview('multiranges', NULL) WITH ORDINALITY p(j, n),
       json_each(p.j) WITH ORDINALITY e(key, value, k)
 WHERE e.key <> 'label'
 ORDER BY p.n, e.k;

-- geometric types: their text with shortest round-trip floats (0.1, not
-- 0.10000000000000001; 1e+300)
CREATE TABLE shapes (label text, pt point, ln line, ls lseg, bx box, pa path, pg polygon,
  ci circle);
INSERT INTO shapes VALUES
  ('values', '(1.5,2)', '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)', '((0,0),(1,1),(2,0))',
   '((0,0),(1,1),(1,0))', '<(0,0),1.5>'),
  ('floats', point(0.1, 0.1::float8 + 0.2::float8), '{0.1,-1e+300,3.4145}',
   '[(-0,1e-300),(0.1,1)]', '(0,0),(1,1)', '[(0.1,0.2),(0.3,0.4)]', '((0.1,0.1),(0.2,0.2),(0.3,0.1))',
   '<(0.1,0.1),0.1>'),
  ('null', NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SELECT p.j->>'label' AS label, e.key AS column, e.value AS json
  FROM calabi_push.preview('shapes', NULL) WITH ORDINALITY p(j, n),
       json_each(p.j) WITH ORDINALITY e(key, value, k)
 WHERE e.key <> 'label'
 ORDER BY p.n, e.k;
-- with extra_float_digits 3 (or 0) the session's own text would differ
SET extra_float_digits = 3;
SELECT pt::text AS point_text_efd_3 FROM shapes WHERE label = 'floats';
SET extra_float_digits = -15;
SELECT pt::text AS point_text_efd_minus_15 FROM shapes WHERE label = 'floats';
SELECT p.j->'pt' AS json_unchanged FROM calabi_push.preview('shapes', NULL) p(j)
 WHERE p.j->>'label' = 'floats';
RESET extra_float_digits;

-- network types, uuid, pg_lsn, and tid and xid (strings: only the types
-- type-mapping.md lists as numbers are numbers): their canonical text
CREATE TABLE network (label text, ip inet, net cidr, mac macaddr, mac8 macaddr8);
INSERT INTO network VALUES
  ('IPv4', '192.168.1.5/24', '10.0.0.0/8', '08-00-2B-01-02-03', '08:00:2b:01:02:03:04:05'),
  ('IPv4 host', '192.168.1.5', '192.168.1.5', '0800.2b01.0203', '08:00:2b:01:02:03'),
  ('IPv6', '2001:DB8::1/64', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', '0800.2b01.0203.0405'),
  ('IPv6 loopback', '::1', '::1/128', '00:00:00:00:00:00', '00:00:00:00:00:00:00:00'),
  ('null', NULL, NULL, NULL, NULL);
SELECT * FROM calabi_push.preview('network', NULL);
CREATE TABLE ids (label text, u uuid, lsn pg_lsn, ctid_v tid, x xid);
INSERT INTO ids VALUES
  ('upper case, braces', '{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}', '16/B374D848', '(0,1)', '12345'),
  ('extremes', '00000000-0000-0000-0000-000000000000', '0/0', '(0,0)', '0'),
  ('max', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'FFFFFFFF/FFFFFFFF', '(4294967295,65535)', '4294967295'),
  ('null', NULL, NULL, NULL, NULL);
SELECT * FROM calabi_push.preview('ids', NULL);

-- xml, tsvector, tsquery, hstore: their text, escaped as a JSON string
CREATE TABLE documents (label text, x xml, tv tsvector, tq tsquery, h hstore);
INSERT INTO documents VALUES
  ('values', '<a href="x">t&amp;é</a>', 'a fat cat sat on a mat', 'fat & (rat | cat)',
   'a=>1, b=>NULL, "c d"=>"x\"y"'),
  ('more', E'<r>\n\t<c/>\n</r>', 'fat:2,4A cat:3 ''quoted\\''''word''', '!x <-> y:*', ''),
  ('null', NULL, NULL, NULL, NULL);
SELECT p.j->>'label' AS label, e.key AS column, e.value AS json
  FROM calabi_push.preview('documents', NULL) WITH ORDINALITY p(j, n),
       json_each(p.j) WITH ORDINALITY e(key, value, k)
 WHERE e.key <> 'label'
 ORDER BY p.n, e.k;

-- reg* types: strings (not numbers), schema-qualified unless in pg_catalog,
-- whatever the session's search_path (here types_composite, under which the
-- session's own text of types_composite objects is not qualified)
CREATE TABLE regs (label text, c regclass, t regtype, p regproc, ns regnamespace, cfg regconfig);
INSERT INTO regs VALUES
  ('pg_catalog', 'pg_class', 'integer', 'now', 'pg_catalog', 'english'),
  ('this schema', 'regs', 'mood', 'output_text_matches', 'types_composite', 'simple'),
  ('null', NULL, NULL, NULL, NULL, NULL);
SELECT * FROM calabi_push.preview('regs', NULL);
SELECT c::text AS regclass_session_text, t::text AS regtype_session_text,
       p::text AS regproc_session_text
  FROM regs WHERE label = 'this schema';

-- every string value above is exactly its type's output text under the
-- pinned settings
SELECT r.rel AS relation, output_text_matches(r.rel) AS matching_values
  FROM unnest('{pairs,inners,outers,moods,ranges,multiranges,shapes,network,ids,documents,regs}'::regclass[])
       WITH ORDINALITY r(rel, n)
 ORDER BY r.n;
-- (inet's cast to text is not its output function: it always adds the mask)
SELECT ip::text AS inet_cast_to_text, format('%s', ip) AS inet_output_text, p.j->'ip' AS json
  FROM calabi_push.preview('network', NULL) p(j) JOIN network x ON x.label = p.j->>'label'
 WHERE x.label = 'IPv4 host';

-- domains: mapped as their base type, value and schema (a domain over a
-- domain, over an array, over a composite; arrays of domains, including of
-- a domain over an array, which nest like a second dimension)
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE DOMAIN small_posint AS posint CHECK (VALUE < 100);
CREATE DOMAIN price AS numeric(5,2);
CREATE DOMAIN short_text AS varchar(5);
CREATE DOMAIN moment AS timestamptz;
CREATE DOMAIN int_list AS int[];
CREATE DOMAIN pair_d AS pair;
CREATE TABLE domains (label text, a posint, b small_posint, c price, d short_text, e moment,
  f int_list, g pair_d, h posint[], i int_list[], k moment[]);
INSERT INTO domains VALUES
  ('values', 1, 99, 3.5, 'ab "c', '2004-10-19 10:23:00-08', '{1,NULL,3}', ROW(1, 'x y'),
   '{1,2,NULL}', '{"{1,2}","{3}",NULL,"{}"}', '{infinity,"2000-01-01 00:00+00"}'),
  ('null', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SELECT p.j->>'label' AS label, e.key AS column, e.value AS json
  FROM calabi_push.preview('domains', NULL) WITH ORDINALITY p(j, n),
       json_each(p.j) WITH ORDINALITY e(key, value, k)
 WHERE e.key <> 'label'
 ORDER BY p.n, e.k;
SELECT key AS column, value AS schema
  FROM json_each(calabi_push.stream_schema('domains')->'json_schema'->'properties')
 WHERE key <> 'label';

-- arrays: NULL elements null, several dimensions nested, lower bounds
-- other than 1 dropped, empty arrays []
CREATE TABLE int_arrays (label text, v int[]);
INSERT INTO int_arrays VALUES
  ('one element', '{7}'),
  ('null elements', '{1,NULL,3}'),
  ('only nulls', '{NULL,NULL}'),
  ('two dimensions', '{{1,2},{3,4}}'),
  ('two dimensions, nulls', '{{1,NULL},{NULL,4}}'),
  ('three dimensions', '{{{1,2}},{{3,4}}}'),
  ('lower bound 0', '[0:1]={1,2}'),
  ('negative bounds, 2-D', '[-2:-1][3:4]={{1,2},{3,4}}'),
  ('lower bound 5', '[5:5]={5}'),
  ('empty', '{}'),
  ('null', NULL);
SELECT * FROM calabi_push.preview('int_arrays', NULL);
-- large arrays, stored out of line, compressed (repetitive) or not, are
-- read whole: checked by element count, sum and md5 rather than printed
CREATE TABLE large_arrays (label text, v int[]);
INSERT INTO large_arrays VALUES
  ('1..100000', (SELECT array_agg(i ORDER BY i) FROM generate_series(1, 100000) i)),
  ('100000 sevens', array_fill(7, ARRAY[100000]));
SELECT label, pg_column_size(v) AS stored_bytes, pg_column_compression(v) AS compression
  FROM large_arrays ORDER BY label;
SELECT reltoastrelid::regclass AS toast FROM pg_class WHERE oid = 'large_arrays'::regclass \gset
SELECT count(DISTINCT chunk_id) AS out_of_line_arrays FROM :toast;
SELECT x.label, json_array_length(p.j->'v') AS elements,
       (SELECT sum(e::bigint) FROM json_array_elements_text(p.j->'v') e) AS sum,
       (SELECT sum(e) FROM unnest(x.v) e) AS expected_sum,
       md5((p.j->'v')::text) = md5('[' || array_to_string(x.v, ',') || ']') AS md5_as_expected
  FROM calabi_push.preview('large_arrays', NULL) WITH ORDINALITY p(j, n)
  JOIN large_arrays x ON x.label = p.j->>'label'
 ORDER BY p.n;

-- arrays of the types above: element by element, each a string
CREATE TABLE other_arrays (label text, pairs pair[], moods mood[], ranges int4range[],
  points point[], uuids uuid[], inets inet[], hstores hstore[]);
INSERT INTO other_arrays VALUES
  ('values', ARRAY[ROW(1, 'a'), NULL, ROW(NULL, 'b "q"')]::pair[], '{sad,NULL,"with \"quote\""}',
   '{"[1,3)",empty,NULL}', '{"(0.1,2)",NULL}', '{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}',
   '{192.168.1.5/24,::1}', ARRAY['a=>1'::hstore, NULL]),
  ('two dimensions', ARRAY[[ROW(1, 'a')::pair], [ROW(2, 'b')::pair]], '{{sad},{ok}}',
   '{{"[1,2)"}}', '{{"(1,1)"},{"(2,2)"}}', '{}', '{}', '{}'),
  ('empty', '{}', '{}', '{}', '{}', '{}', '{}', '{}');
SELECT p.j->>'label' AS label, e.key AS column, e.value AS json
  FROM calabi_push.preview('other_arrays', NULL) WITH ORDINALITY p(j, n),
       json_each(p.j) WITH ORDINALITY e(key, value, k)
 WHERE e.key <> 'label'
 ORDER BY p.n, e.k;
-- int2vector and oidvector are arrays of numbers (their lower bound is 0)
CREATE TABLE vectors (label text, i2v int2vector, oidv oidvector);
INSERT INTO vectors VALUES
  ('values', '1 -2 32767', '23 25 4294967295'),
  ('one', '0', '0'),
  ('empty', '', ''),
  ('null', NULL, NULL);
SELECT * FROM calabi_push.preview('vectors', NULL);

-- the JSON schema: strings for every type written by its output function,
-- arrays with their element's schema
SELECT r.rel AS relation, e.key AS column, e.value AS schema
  FROM unnest('{pairs,inners,outers,moods,ranges,multiranges,shapes,network,ids,documents,regs,int_arrays,other_arrays,vectors}'::regclass[])
         WITH ORDINALITY r(rel, n),
       json_each(calabi_push.stream_schema(r.rel)->'json_schema'->'properties') WITH ORDINALITY e(key, value, k)
 WHERE e.key <> 'label'
 ORDER BY r.n, e.k;

-- every row above is valid JSON
SELECT count(*) AS valid_json_rows
  FROM unnest('{pairs,inners,outers,moods,ranges,multiranges,shapes,network,ids,documents,regs,domains,int_arrays,large_arrays,other_arrays,vectors}'::regclass[]) r(rel),
       calabi_push.preview(r.rel, NULL) p(j)
 WHERE p.j::text::jsonb IS NOT NULL;
