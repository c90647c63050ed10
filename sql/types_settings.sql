-- One value of every type family in one row, encoded under deliberately
-- odd session settings: the JSON is byte for byte the same as under the
-- session's defaults (type-mapping.md: "The result must not depend on the
-- session or server settings of the moment").  The row is printed once,
-- one line per column, so that each value can be checked against
-- type-mapping.md; stream_schema() gives each family's JSON schema.
CREATE SCHEMA types_settings;
SET search_path = types_settings;

CREATE TYPE snapshot AS (at timestamptz, day date, f float8, r real, span interval,
  raw bytea, price money);
CREATE TYPE colour AS ENUM ('red', 'green');
CREATE DOMAIN amount AS numeric(12,4);
CREATE DOMAIN int_list AS int[];
CREATE TABLE everything (
  i2 smallint, i4 integer, i8 bigint, o oid, s8 bigserial,
  f4 real, f8 double precision, n numeric, m money, bool boolean,
  bits bit(4), vbits bit varying, raw bytea,
  c char(5), vc varchar(10), t text, nm name, ch "char",
  d date, d_bc date, ts timestamp, tz timestamptz, tz_bc timestamptz, tm time, ttz timetz,
  iv interval, js json, jb jsonb,
  comp snapshot, en colour, rng tstzrange, mr datemultirange, pt point, ip inet,
  mac macaddr, u uuid, lsn pg_lsn, x xml, tv tsvector, tq tsquery, rc regclass, rt regtype,
  dom amount, dom_arr int_list,
  a_tz timestamptz[], a_f8 float8[], a_iv interval[], a_comp snapshot[], a_2d numeric[]);
INSERT INTO everything VALUES (
  -32768, 2147483647, -9223372036854775808, 4294967295, DEFAULT,
  3.4145, 0.1::float8 + 0.2::float8, 3.540, '-1,000', true,
  B'0100', B'101', '\x6b707a',
  'ab', 'varchar', E'tab\t"quote" é 中文', 'name', 'c',
  '1999-01-08', '1991-02-10 BC', '2004-10-19 10:23:54.123456', '2004-10-19 10:23:00-08',
  '3004-10-19 10:23:54.123456+00 BC', '13:00:01.01', '13:00:06+05:30:15',
  '1 year 2 mons 3 days 04:05:06', '{"k": [1, 2.50, "é\u00e9"]}', '{"k": [1, 2.50, "é\u00e9"]}',
  ROW('2004-10-19 10:23:00-08', '1991-02-10 BC', 0.1, 3.4145, '1 day -00:00:01', '\x6b', '-1,000'),
  'green', '[2004-10-19 10:23:00-08,infinity)', '{[2000-01-01,2000-02-01), [2001-01-01,)}',
  point(3.4145, 1e+300), '192.168.1.5', '08-00-2B-01-02-03', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11',
  '16/B374D848', '<a>t&amp;é</a>', 'a fat cat', 'fat & cat', 'everything', 'colour',
  1234.5, '{1,NULL,3}',
  '{"2004-10-19 10:23:00-08",infinity,NULL}', '{0.1,NaN,-0}', '{"1 year","-00:00:01.5"}',
  ARRAY[ROW('2000-01-01 00:00+00', '2000-01-01', 1e-7, 1e+24, '2 hours', '\x', '0.01')::snapshot],
  '[0:1][1:2]={{1.0,NaN},{-Infinity,3.540}}');

-- the settings pg_regress starts the session with, and the row under them,
-- one line per column
SELECT current_setting('DateStyle') AS datestyle, current_setting('IntervalStyle') AS intervalstyle,
       current_setting('TimeZone') AS timezone, current_setting('extra_float_digits') AS extra_float_digits,
       current_setting('bytea_output') AS bytea_output, current_setting('lc_monetary') AS lc_monetary,
       current_setting('search_path') AS search_path;
SELECT e.key AS column, e.value AS json
  FROM calabi_push.preview('everything', NULL) p(j), json_each(p.j) WITH ORDINALITY e(key, value, k)
 ORDER BY e.k;
-- its JSON schema, column by column
SELECT key AS column, value AS schema
  FROM json_each(calabi_push.stream_schema('everything')->'json_schema'->'properties');

-- the baseline, and a comparison with it that works whatever search_path is
CREATE TABLE baseline AS
  SELECT j::text AS line FROM calabi_push.preview('types_settings.everything', NULL) j;
CREATE TABLE schema_baseline AS
  SELECT calabi_push.stream_schema('types_settings.everything')::text AS line;
CREATE FUNCTION identical() RETURNS boolean LANGUAGE sql AS $$
  SELECT (SELECT j::text FROM calabi_push.preview('types_settings.everything', NULL) j)
           = (SELECT line FROM types_settings.baseline)
     AND calabi_push.stream_schema('types_settings.everything')::text
           = (SELECT line FROM types_settings.schema_baseline)
$$;

-- DateStyle: dates, timestamps and the composite's and range's text change
SET DateStyle = 'SQL, DMY';
SELECT d_bc::text AS date_text, tz::text AS timestamptz_text, identical() FROM everything;
SET DateStyle = 'German';
SELECT d_bc::text AS date_text, tz::text AS timestamptz_text, identical() FROM everything;
SET DateStyle = 'ISO, DMY';
SELECT d_bc::text AS date_text, tz::text AS timestamptz_text, identical() FROM everything;
SET DateStyle = 'Postgres, YMD';
SELECT d_bc::text AS date_text, tz::text AS timestamptz_text, identical() FROM everything;
RESET DateStyle;

-- IntervalStyle
SET IntervalStyle = 'iso_8601';
SELECT iv::text AS interval_text, identical() FROM everything;
SET IntervalStyle = 'sql_standard';
SELECT iv::text AS interval_text, identical() FROM everything;
SET IntervalStyle = 'postgres';
SELECT iv::text AS interval_text, identical() FROM everything;
RESET IntervalStyle;

-- TimeZone (Chatham is +13:45 in its summer; a POSIX zone; UTC)
SET TimeZone = 'Pacific/Chatham';
SELECT tz::text AS timestamptz_text, rng::text AS range_text, identical() FROM everything;
SET TimeZone = 'EST5EDT';
SELECT tz::text AS timestamptz_text, rng::text AS range_text, identical() FROM everything;
SET TimeZone = 'UTC';
SELECT tz::text AS timestamptz_text, rng::text AS range_text, identical() FROM everything;
RESET TimeZone;

-- extra_float_digits (0 and below round; above 0 is the shortest text)
SET extra_float_digits = -15;
SELECT f4::text AS real_text, f8::text AS double_text, pt::text AS point_text, identical() FROM everything;
SET extra_float_digits = 0;
SELECT f4::text AS real_text, f8::text AS double_text, pt::text AS point_text, identical() FROM everything;
SET extra_float_digits = 3;
SELECT f4::text AS real_text, f8::text AS double_text, pt::text AS point_text, identical() FROM everything;
RESET extra_float_digits;

-- bytea_output
SET bytea_output = 'escape';
SELECT raw::text AS bytea_text, comp::text AS composite_text, identical() FROM everything;
RESET bytea_output;

-- lc_monetary (the configured one is C)
SET lc_monetary = 'de_DE.UTF-8';
SELECT m::text AS money_text, identical() FROM everything;
SET lc_monetary = 'ja_JP.UTF-8';
SELECT m::text AS money_text, identical() FROM everything;
RESET lc_monetary;

-- search_path: reg* values stay schema-qualified
SET search_path = types_settings, public;
SELECT rc::text AS regclass_text, rt::text AS regtype_text, types_settings.identical()
  FROM types_settings.everything;
SET search_path = pg_catalog;
SELECT rc::text AS regclass_text, rt::text AS regtype_text, types_settings.identical()
  FROM types_settings.everything;
SET search_path = '';
SELECT rc::text AS regclass_text, rt::text AS regtype_text, types_settings.identical()
  FROM types_settings.everything;
SET search_path = types_settings;

-- all of them at once, in a transaction with SET LOCAL; the row printed
-- again, the same line for line as the first time
BEGIN;
SET LOCAL DateStyle = 'German';
SET LOCAL IntervalStyle = 'sql_standard';
SET LOCAL TimeZone = 'Pacific/Chatham';
SET LOCAL extra_float_digits = -15;
SET LOCAL bytea_output = 'escape';
SET LOCAL lc_monetary = 'de_DE.UTF-8';
SET LOCAL search_path = pg_catalog;
SELECT types_settings.identical();
SELECT e.key AS column, e.value AS json
  FROM calabi_push.preview('types_settings.everything', NULL) p(j),
       json_each(p.j) WITH ORDINALITY e(key, value, k)
 ORDER BY e.k;
COMMIT;

-- and preview() gave the session its settings back each time
SELECT current_setting('DateStyle') AS datestyle, current_setting('IntervalStyle') AS intervalstyle,
       current_setting('TimeZone') AS timezone, current_setting('extra_float_digits') AS extra_float_digits,
       current_setting('bytea_output') AS bytea_output, current_setting('lc_monetary') AS lc_monetary,
       current_setting('search_path') AS search_path;

-- the row is valid JSON
SELECT line::jsonb IS NOT NULL AS valid_json FROM types_settings.baseline;
