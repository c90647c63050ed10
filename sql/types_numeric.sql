-- Integers, floats and numeric as JSON numbers, and boolean as true/false
-- (type-mapping.md: the rows "smallint ... oid", "real, double precision",
-- "numeric, decimal", "boolean" and "array of any of the above").  Every value is printed next to a label so
-- it can be checked by eye; the checks at the end of each section compare
-- the JSON with an independent reading of the stored value.
CREATE SCHEMA types_numeric;
SET search_path = types_numeric;

-- Integers are written exactly, every type's minimum and maximum included:
-- bigint's minimum -9223372036854775808 and values beyond 2^53 keep every
-- digit (a double would round 9007199254740993 to ...992).
CREATE TABLE ints (label text, i2 smallint, i4 integer, i8 bigint, o oid);
INSERT INTO ints VALUES
  ('zero', 0, 0, 0, 0),
  ('one, minus one', 1, -1, -1, 1),
  ('min', -32768, -2147483648, -9223372036854775808, 0),
  ('max', 32767, 2147483647, 9223372036854775807, 4294967295),
  ('2^53 + 1', NULL, NULL, 9007199254740993, NULL),
  ('-(2^53 + 1)', NULL, NULL, -9007199254740993, NULL),
  ('all null', NULL, NULL, NULL, NULL);
SELECT * FROM calabi_push.preview('ints', NULL);
SELECT key AS column, value AS schema
  FROM json_each(calabi_push.stream_schema('ints')->'json_schema'->'properties');

-- serial types are their integer types: values from the sequences (1) and
-- explicit maxima
CREATE TABLE serials (s2 smallserial, s4 serial, s8 bigserial);
INSERT INTO serials VALUES (DEFAULT, DEFAULT, DEFAULT),
  (32767, 2147483647, 9223372036854775807);
SELECT * FROM calabi_push.preview('serials', NULL);
SELECT key AS column, value AS schema
  FROM json_each(calabi_push.stream_schema('serials')->'json_schema'->'properties');

-- real and double precision: the shortest text that reads back to the same
-- value of that type (real 3.4145 is not 3.4145000171661377), exponents as
-- PostgreSQL writes them (1e+24, 1e-05), -0 kept, NaN and +-Infinity null.
-- Each literal is stored both as real and as double precision; "too small"
-- and "too big" for real are 0 / out of range, so those rows are double-only.
CREATE TABLE floats (label text, r real, d double precision);
INSERT INTO floats VALUES
  ('3.4145', '3.4145', '3.4145'),
  ('0.1', '0.1', '0.1'),
  ('0.1 + 0.2', 0.1::real + 0.2::real, 0.1::float8 + 0.2::float8),
  ('1e+24', '1e+24', '1e+24'),
  ('1', '1', '1'),
  ('-2.5', '-2.5', '-2.5'),
  ('100', '100', '100'),
  ('123456789', '123456789', '123456789'),
  ('1e15', '1e15', '1e15'),
  ('1e16', '1e16', '1e16'),
  ('0.0001', '0.0001', '0.0001'),
  ('0.00001', '0.00001', '0.00001'),
  ('1/3', 1::real / 3, 1::float8 / 3),
  ('-0', '-0', '-0'),
  ('0', '0', '0'),
  ('smallest subnormal', '1.4e-45', '4.9e-324'),
  ('smallest normal', '1.17549435e-38', '2.2250738585072014e-308'),
  ('largest', '3.4028235e+38', '1.7976931348623157e+308'),
  ('-largest', '-3.4028235e+38', '-1.7976931348623157e+308'),
  ('1e-300', NULL, '1e-300'),
  ('1e+300', NULL, '1e+300'),
  ('NaN', 'NaN', 'NaN'),
  ('Infinity', 'Infinity', 'Infinity'),
  ('-Infinity', '-Infinity', '-Infinity'),
  ('null', NULL, NULL);
SELECT * FROM calabi_push.preview('floats', NULL);
SELECT key AS column, value AS schema
  FROM json_each(calabi_push.stream_schema('floats')->'json_schema'->'properties');
-- every finite value reads back to the very same real / double, and its text
-- is what PostgreSQL itself prints with extra_float_digits 1 (shortest)
SET extra_float_digits = 1;
SELECT f.label,
       (p.j->>'r')::real = f.r AS r_reads_back,
       p.j->>'r' = f.r::text AS r_is_pg_text,
       (p.j->>'d')::float8 = f.d AS d_reads_back,
       p.j->>'d' = f.d::text AS d_is_pg_text
  FROM calabi_push.preview('floats', NULL) WITH ORDINALITY p(j, n)
  JOIN floats f ON f.label = p.j->>'label'
 WHERE f.label NOT IN ('NaN', 'Infinity', '-Infinity', 'null')
 ORDER BY p.n;
RESET extra_float_digits;

-- numeric: the exact decimal digits and scale, never through a double;
-- NaN and +-Infinity null
CREATE TABLE numerics (label text, n numeric, n10_2 numeric(10,2));
INSERT INTO numerics VALUES
  ('3.540', '3.540', '3.54'),
  ('long', '1234567890987654321.1234567890987654321', NULL),
  ('negative', '-1234.5678', '-1234.57'),
  ('zero', '0', '0'),
  ('-0', '-0', '-0'),
  ('0.000', '0.000', '0'),
  ('tiny', '0.000000000000000000000000000001', NULL),
  ('1e20', '1e20', NULL),
  ('-1e-20', '-1e-20', NULL),
  ('100 fraction digits', ('0.' || repeat('3', 100))::numeric, NULL),
  ('2^64', '18446744073709551616', NULL),
  ('scale -1', round(12345.678, -1), '12345.678'),
  ('1.5', '1.5', '1.5'),
  ('NaN', 'NaN', NULL),
  ('Infinity', 'Infinity', NULL),
  ('-Infinity', '-Infinity', NULL),
  ('null', NULL, NULL);
SELECT * FROM calabi_push.preview('numerics', NULL);
SELECT key AS column, value AS schema
  FROM json_each(calabi_push.stream_schema('numerics')->'json_schema'->'properties');
-- every finite value's JSON text is numeric's own text, digit for digit
SELECT f.label, p.j->>'n' = f.n::text AS n_exact, p.j->>'n10_2' = f.n10_2::text AS n10_2_exact
  FROM calabi_push.preview('numerics', NULL) WITH ORDINALITY p(j, n)
  JOIN numerics f ON f.label = p.j->>'label'
 WHERE f.label NOT IN ('NaN', 'Infinity', '-Infinity', 'null')
 ORDER BY p.n;

-- a numeric stored out of line (STORAGE EXTERNAL: a TOAST pointer, not an
-- inline value) and one compressed inline: read and written like any other
CREATE TABLE numerics_toasted (label text, n numeric);
ALTER TABLE numerics_toasted ALTER COLUMN n SET STORAGE EXTERNAL;
INSERT INTO numerics_toasted VALUES
  ('5000 digits, external', repeat('9', 5000)::numeric),
  ('short, inline', 1.5);
CREATE TABLE numerics_compressed (label text, n numeric);
INSERT INTO numerics_compressed VALUES ('7000 digits, compressed', repeat('1', 7000)::numeric);
SELECT f.label, pg_column_size(f.n) AS stored_bytes, length(p.j->>'n') AS json_digits,
       p.j->>'n' = f.n::text AS exact
  FROM calabi_push.preview('numerics_toasted', NULL) WITH ORDINALITY p(j, n)
  JOIN numerics_toasted f ON f.label = p.j->>'label'
 ORDER BY p.n;
SELECT f.label, length(p.j->>'n') AS json_digits, p.j->>'n' = f.n::text AS exact
  FROM calabi_push.preview('numerics_compressed', NULL) p(j)
  JOIN numerics_compressed f ON f.label = p.j->>'label';

-- arrays of these: element by element with the element type's rule
-- (numeric[] with a NaN -> [1.0,null]); NULL elements null
CREATE TABLE number_arrays (label text, a2 smallint[], a4 integer[], a8 bigint[],
  ao oid[], ar real[], ad double precision[], an numeric[]);
INSERT INTO number_arrays VALUES
  ('spec example', NULL, NULL, NULL, NULL, NULL, NULL, '{1.0,NaN}'),
  ('extremes', '{-32768,32767}', '{-2147483648,2147483647}',
   '{-9223372036854775808,9223372036854775807}', '{0,4294967295}',
   '{3.4145,1e+24,-0}', '{3.4145,0.1,1e-300}',
   '{3.540,1234567890987654321.1234567890987654321,-1e-20}'),
  ('not finite', NULL, NULL, NULL, NULL, '{NaN,Infinity,-Infinity}',
   '{NaN,Infinity,-Infinity}', '{NaN,Infinity,-Infinity}'),
  ('null elements', '{NULL}', '{1,NULL,3}', '{NULL,NULL}', '{NULL,7}',
   '{NULL,0.1}', '{0.1,NULL}', '{NULL,1.0}'),
  ('empty', '{}', '{}', '{}', '{}', '{}', '{}', '{}');
-- (one line per row and column: the rows are wide)
SELECT p.j->>'label' AS label, e.key AS column, e.value
  FROM calabi_push.preview('number_arrays', NULL) WITH ORDINALITY p(j, n),
       json_each(p.j) WITH ORDINALITY e(key, value, k)
 WHERE e.key <> 'label'
 ORDER BY p.n, e.k;
SELECT key AS column, value AS schema
  FROM json_each(calabi_push.stream_schema('number_arrays')->'json_schema'->'properties');

-- boolean (a JSON literal, not a number): true, false, null, and arrays
CREATE TABLE booleans (b boolean, a boolean[]);
INSERT INTO booleans VALUES (true, '{true,false,NULL}'), (false, '{{t},{f}}'), (NULL, '{}');
SELECT * FROM calabi_push.preview('booleans', NULL);
SELECT key AS column, value AS schema
  FROM json_each(calabi_push.stream_schema('booleans')->'json_schema'->'properties');

-- every row above is valid JSON
SELECT count(*) AS valid_json_rows FROM (
  SELECT j::text::jsonb FROM calabi_push.preview('ints', NULL) j
  UNION ALL SELECT j::text::jsonb FROM calabi_push.preview('serials', NULL) j
  UNION ALL SELECT j::text::jsonb FROM calabi_push.preview('floats', NULL) j
  UNION ALL SELECT j::text::jsonb FROM calabi_push.preview('numerics', NULL) j
  UNION ALL SELECT j::text::jsonb FROM calabi_push.preview('number_arrays', NULL) j
  UNION ALL SELECT j::text::jsonb FROM calabi_push.preview('booleans', NULL) j
) v;
