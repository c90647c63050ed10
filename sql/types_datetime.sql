-- Dates, times and intervals as JSON strings (type-mapping.md: rows "date",
-- "timestamp", "timestamptz", "time", "timetz", "interval" and arrays of
-- them).  Each family is printed once; then, under other DateStyle,
-- TimeZone and IntervalStyle settings, the PostgreSQL text of the values
-- changes while the JSON stays byte for byte what it was (compared with a
-- baseline taken under the session's defaults).
CREATE SCHEMA types_datetime;
SET search_path = types_datetime;

-- the output of preview() under the session's defaults, per relation
CREATE TABLE baseline (rel regclass, n bigint, line text);
CREATE FUNCTION save_baseline(rel regclass) RETURNS bigint LANGUAGE sql AS $$
  WITH saved AS (
    INSERT INTO baseline
    SELECT rel, n, j::text FROM calabi_push.preview(rel, NULL) WITH ORDINALITY p(j, n)
    RETURNING 1)
  SELECT count(*) FROM saved
$$;
-- how many of the relation's rows preview() now writes exactly as then
CREATE FUNCTION unchanged(rel regclass) RETURNS text LANGUAGE sql AS $$
  SELECT count(*) FILTER (WHERE p.line IS NOT DISTINCT FROM b.line) || ' of ' || count(*)
    FROM (SELECT n, j::text AS line FROM calabi_push.preview(rel, NULL) WITH ORDINALITY p(j, n)) p
    FULL JOIN (SELECT n, line FROM baseline WHERE baseline.rel = unchanged.rel) b USING (n)
$$;
-- the same over every relation with a baseline
CREATE FUNCTION unchanged() RETURNS text LANGUAGE sql AS $$
  SELECT sum(split_part(unchanged(rel), ' ', 1)::int) || ' of ' || sum(split_part(unchanged(rel), ' ', 3)::int)
    FROM (SELECT DISTINCT rel FROM baseline) r
$$;
-- the session's defaults (pg_regress sets them): none is the JSON's form
SELECT current_setting('DateStyle') AS datestyle, current_setting('TimeZone') AS timezone,
       current_setting('IntervalStyle') AS intervalstyle;

-- date: ISO "YYYY-MM-DD"; before year 1 with " BC"; years past 9999 with
-- more digits; +-infinity null
CREATE TABLE dates (label text, d date);
INSERT INTO dates VALUES
  ('spec example', '1999-01-08'),
  ('leap day', '2000-02-29'),
  ('epoch', '1970-01-01'),
  ('first AD day', '0001-01-01'),
  ('last BC day', '0001-12-31 BC'),
  ('spec BC example', '1991-02-10 BC'),
  ('minimum', '4714-11-24 BC'),
  ('9999', '9999-12-31'),
  ('10000', '10000-01-01'),
  ('maximum', '5874897-12-31'),
  ('infinity', 'infinity'),
  ('-infinity', '-infinity'),
  ('null', NULL);
SELECT * FROM calabi_push.preview('dates', NULL);
SELECT save_baseline('dates');

-- timestamp: "YYYY-MM-DDTHH:MM:SS.ffffff", always six fraction digits;
-- " BC" after everything; +-infinity null
CREATE TABLE timestamps (label text, ts timestamp);
INSERT INTO timestamps VALUES
  ('spec example', '2004-10-19 10:23:00'),
  ('microseconds', '2004-10-19 10:23:54.123456'),
  ('half second', '2004-10-19 10:23:54.5'),
  ('one microsecond', '2000-01-01 00:00:00.000001'),
  ('last microsecond', '1999-12-31 23:59:59.999999'),
  ('epoch', '1970-01-01 00:00:00'),
  ('first AD second', '0001-01-01 00:00:00'),
  ('last BC microsecond', '0001-12-31 23:59:59.999999 BC'),
  ('spec BC example', '3004-10-19 10:23:54.123456 BC'),
  ('minimum', '4714-11-24 00:00:00 BC'),
  ('9999', '9999-12-31 23:59:59'),
  ('10000', '10000-01-01 00:00:00'),
  ('maximum', '294276-12-31 23:59:59.999999'),
  ('infinity', 'infinity'),
  ('-infinity', '-infinity'),
  ('null', NULL);
SELECT * FROM calabi_push.preview('timestamps', NULL);
SELECT save_baseline('timestamps');
-- a typmod rounds the stored value; the JSON still has six digits
CREATE TABLE timestamps_typmod (ts0 timestamp(0), ts3 timestamp(3));
INSERT INTO timestamps_typmod VALUES ('2004-10-19 10:23:54.123456', '2004-10-19 10:23:54.123456');
SELECT * FROM calabi_push.preview('timestamps_typmod', NULL);
SELECT save_baseline('timestamps_typmod');

-- timestamptz: converted to UTC, six fraction digits and "Z", " BC" after
-- everything; +-infinity null.  Every literal carries its own offset or
-- zone, so the stored instants do not depend on the session's TimeZone.
CREATE TABLE timestamptzs (label text, tz timestamptz);
INSERT INTO timestamptzs VALUES
  ('spec example', '2004-10-19 10:23:00-08'),
  ('+05:30', '2004-10-19 10:23:54.123456+05:30'),
  ('crosses a year', '2004-12-31 23:30:00-01'),
  ('UTC', '2000-01-01 00:00:00+00'),
  ('New York, summer', '2024-07-01 12:00:00 America/New_York'),
  ('New York, winter', '2024-01-01 12:00:00 America/New_York'),
  ('offset with seconds', '1850-01-01 00:00:00+05:53:28'),
  ('becomes BC in UTC', '0001-01-01 00:30:00+01'),
  ('spec BC example', '3004-10-19 10:23:54.123456+00 BC'),
  ('10000', '10000-01-01 00:00:00+00'),
  ('maximum', '294276-12-31 23:59:59.999999+00'),
  ('infinity', 'infinity'),
  ('-infinity', '-infinity'),
  ('null', NULL);
SELECT * FROM calabi_push.preview('timestamptzs', NULL);
SELECT save_baseline('timestamptzs');

-- time: "HH:MM:SS", the fraction only when not zero, as PostgreSQL prints
-- it; 24:00:00 stays
CREATE TABLE times (label text, t time);
INSERT INTO times VALUES
  ('spec example', '13:00:01.01'),
  ('midnight', '00:00:00'),
  ('half second', '12:34:56.5'),
  ('one microsecond', '12:34:56.000001'),
  ('last microsecond', '23:59:59.999999'),
  ('24:00:00', '24:00:00'),
  ('4:05 PM', '04:05 PM'),
  ('null', NULL);
SELECT * FROM calabi_push.preview('times', NULL);
SELECT save_baseline('times');

-- timetz: the time as for time, then the stored offset (not converted):
-- "+HH:MM", ":SS" when it has seconds, "Z" when zero
CREATE TABLE timetzs (label text, t timetz);
INSERT INTO timetzs VALUES
  ('spec example -07', '13:00:01.123456-07'),
  ('spec example +08', '13:00:06+08'),
  ('+05:30', '13:00:06+05:30'),
  ('offset with seconds', '13:00:06+05:30:15'),
  ('negative with seconds', '13:00:00-12:34:56'),
  ('negative', '12:00:00.5-03:30'),
  ('zero offset', '13:00:00+00'),
  ('zero offset, UTC', '13:00:00 UTC'),
  ('abbreviation EST', '13:00:00 EST'),
  ('maximum west', '00:00:00-15:59:59'),
  ('maximum east', '23:59:59.999999+15:59:59'),
  ('24:00:00', '24:00:00+14'),
  ('null', NULL);
SELECT * FROM calabi_push.preview('timetzs', NULL);
SELECT save_baseline('timetzs');

-- interval: PostgreSQL's postgres IntervalStyle, whatever the session's
CREATE TABLE intervals (label text, i interval);
INSERT INTO intervals VALUES
  ('spec example', '1 year 2 mons 3 days 04:05:06'),
  ('zero', '0'),
  ('mixed signs', '-1 year -2 mons +3 days -04:05:06'),
  ('day minus a second', '1 day -1 second'),
  ('one microsecond', '00:00:00.000001'),
  ('negative fraction', '-00:00:01.5'),
  ('100 hours', '100:00:00'),
  ('ISO 8601 input', 'P1Y2M3DT4H5M6.789S'),
  ('ago', '@ 1 hour ago'),
  ('one week', '1 week'),
  ('one month', '1 mon'),
  ('huge', '178000000 years'),
  ('huge negative', '-178000000 years'),
  ('null', NULL);
SELECT * FROM calabi_push.preview('intervals', NULL);
SELECT save_baseline('intervals');

-- arrays of each: element by element, NULL elements and infinities null
CREATE TABLE datetime_arrays (label text, a date[], b timestamp[], c timestamptz[],
  d time[], e timetz[], f interval[]);
INSERT INTO datetime_arrays VALUES
  ('values', '{1999-01-08,"1991-02-10 BC",10000-01-01}',
   '{"2004-10-19 10:23:00","3004-10-19 10:23:54.123456 BC"}',
   '{"2004-10-19 10:23:00-08","0001-01-01 00:30:00+01"}',
   '{13:00:01.01,24:00:00}', '{13:00:06+05:30:15,13:00:00+00}',
   '{"1 year 2 mons 3 days 04:05:06","-00:00:01.5"}'),
  ('infinities and nulls', '{infinity,-infinity,NULL}', '{infinity,-infinity,NULL}',
   '{infinity,-infinity,NULL}', '{NULL}', '{NULL}', '{NULL}'),
  ('two dimensions', '{{2000-01-01,2000-01-02},{2000-01-03,NULL}}',
   '{{"2000-01-01 00:00"},{"2000-01-02 00:00"}}',
   '{{"2000-01-01 00:00+00"},{"2000-01-02 00:00+00"}}',
   '{{00:00},{12:00}}', '{{00:00+01},{12:00-01}}', '{{1 day},{2 days}}'),
  ('empty', '{}', '{}', '{}', '{}', '{}', '{}');
SELECT p.j->>'label' AS label, e.key AS column, e.value
  FROM calabi_push.preview('datetime_arrays', NULL) WITH ORDINALITY p(j, n),
       json_each(p.j) WITH ORDINALITY e(key, value, k)
 WHERE e.key <> 'label'
 ORDER BY p.n, e.k;
SELECT save_baseline('datetime_arrays');

-- the JSON schema of each
SELECT r.rel AS relation, e.key AS column, e.value AS schema
  FROM unnest('{dates,timestamps,timestamps_typmod,timestamptzs,times,timetzs,intervals,datetime_arrays}'::regclass[])
         WITH ORDINALITY r(rel, n),
       json_each(calabi_push.stream_schema(r.rel)->'json_schema'->'properties') WITH ORDINALITY e(key, value, k)
 WHERE e.key <> 'label'
 ORDER BY r.n, e.k;

-- DateStyle: the text of dates and timestamps changes, the JSON does not
SET DateStyle = 'SQL, DMY';
SELECT '1991-02-10 BC'::date::text AS date_text,
       '3004-10-19 10:23:54.123456 BC'::timestamp::text AS timestamp_text,
       unchanged() AS rows_unchanged;
SET DateStyle = 'German';
SELECT '1991-02-10 BC'::date::text AS date_text,
       '3004-10-19 10:23:54.123456 BC'::timestamp::text AS timestamp_text,
       unchanged() AS rows_unchanged;
SET DateStyle = 'ISO, DMY';
SELECT '1991-02-10 BC'::date::text AS date_text,
       '3004-10-19 10:23:54.123456 BC'::timestamp::text AS timestamp_text,
       unchanged() AS rows_unchanged;

-- TimeZone: timestamptz text follows the session's zone, the JSON is UTC;
-- timetz keeps its stored offset in both.  (DateStyle stays ISO here, so
-- the offsets in the text are easy to read.)
SET TimeZone = 'UTC';
SELECT label, tz::text AS timestamptz_text, p.j->'tz' AS json
  FROM calabi_push.preview('timestamptzs', NULL) WITH ORDINALITY p(j, n)
  JOIN timestamptzs t ON t.label = p.j->>'label'
 ORDER BY p.n;
SELECT unchanged('timestamptzs') AS timestamptzs, unchanged('timetzs') AS timetzs,
       unchanged() AS all_relations;
SET TimeZone = 'America/New_York';
SELECT label, tz::text AS timestamptz_text, p.j->'tz' AS json
  FROM calabi_push.preview('timestamptzs', NULL) WITH ORDINALITY p(j, n)
  JOIN timestamptzs t ON t.label = p.j->>'label'
 ORDER BY p.n;
SELECT unchanged('timestamptzs') AS timestamptzs, unchanged('timetzs') AS timetzs,
       unchanged() AS all_relations;
SET TimeZone = 'Asia/Kolkata';
SELECT label, tz::text AS timestamptz_text, p.j->'tz' AS json
  FROM calabi_push.preview('timestamptzs', NULL) WITH ORDINALITY p(j, n)
  JOIN timestamptzs t ON t.label = p.j->>'label'
 ORDER BY p.n;
SELECT unchanged('timestamptzs') AS timestamptzs, unchanged('timetzs') AS timetzs,
       unchanged() AS all_relations;
SET TimeZone = '+05:30';
SELECT '2004-10-19 10:23:00-08'::timestamptz::text AS timestamptz_text,
       unchanged('timestamptzs') AS timestamptzs, unchanged('timetzs') AS timetzs,
       unchanged() AS all_relations;
SET TimeZone = 'Pacific/Chatham';
SELECT '2004-10-19 10:23:00-08'::timestamptz::text AS timestamptz_text,
       unchanged('timestamptzs') AS timestamptzs, unchanged('timetzs') AS timetzs,
       unchanged() AS all_relations;
RESET TimeZone;
RESET DateStyle;

-- IntervalStyle: the text of intervals changes, the JSON stays postgres
SET IntervalStyle = 'postgres';
SELECT label, i::text AS interval_text, p.j->'i' AS json
  FROM calabi_push.preview('intervals', NULL) WITH ORDINALITY p(j, n)
  JOIN intervals t ON t.label = p.j->>'label'
 ORDER BY p.n;
SELECT unchanged('intervals') AS intervals, unchanged() AS all_relations;
SET IntervalStyle = 'postgres_verbose';
SELECT label, i::text AS interval_text, p.j->'i' AS json
  FROM calabi_push.preview('intervals', NULL) WITH ORDINALITY p(j, n)
  JOIN intervals t ON t.label = p.j->>'label'
 ORDER BY p.n;
SELECT unchanged('intervals') AS intervals, unchanged() AS all_relations;
SET IntervalStyle = 'sql_standard';
SELECT label, i::text AS interval_text, p.j->'i' AS json
  FROM calabi_push.preview('intervals', NULL) WITH ORDINALITY p(j, n)
  JOIN intervals t ON t.label = p.j->>'label'
 ORDER BY p.n;
SELECT unchanged('intervals') AS intervals, unchanged() AS all_relations;
SET IntervalStyle = 'iso_8601';
SELECT label, i::text AS interval_text, p.j->'i' AS json
  FROM calabi_push.preview('intervals', NULL) WITH ORDINALITY p(j, n)
  JOIN intervals t ON t.label = p.j->>'label'
 ORDER BY p.n;
SELECT unchanged('intervals') AS intervals, unchanged() AS all_relations;
RESET IntervalStyle;

-- every row above is valid JSON
SELECT count(*) AS valid_json_rows FROM baseline WHERE line::jsonb IS NOT NULL;
