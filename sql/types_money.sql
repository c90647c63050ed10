-- money as a JSON number (type-mapping.md, row "money"): the amount as a
-- plain decimal with the fraction digits of the server's configured
-- lc_monetary, whatever a session SETs.  The regression instance configures
-- lc_monetary = 'C' (test/regress.conf), which has 2 fraction digits.
CREATE SCHEMA types_money;
SET search_path = types_money;
SHOW lc_monetary;

-- the amounts, typed in under the configured 'C' locale (money stores a
-- count of cents: '-1,000' is -100000 cents), one row each
CREATE TABLE amounts (label text, m money);
INSERT INTO amounts VALUES
  ('-1,000', '-1,000'),
  ('zero', '0'),
  ('one cent', '0.01'),
  ('minus one cent', '-0.01'),
  ('12.34', '12.34'),
  ('$1,234,567.89', '$1,234,567.89'),
  ('-$0.50', '-$0.50'),
  ('from numeric 1234.5', 1234.5::numeric),
  ('large', '12,345,678,901,234.56'),
  ('large negative', '-12,345,678,901,234.56'),
  ('max', '92233720368547758.07'),
  ('min', '-92233720368547758.08'),
  ('null', NULL);
SELECT * FROM calabi_push.preview('amounts', NULL);
SELECT key AS column, value AS schema
  FROM json_each(calabi_push.stream_schema('amounts')->'json_schema'->'properties');
-- the JSON text is money's own amount without symbol and separators
SELECT label, m::text AS money_text, p.j->'m' AS json
  FROM calabi_push.preview('amounts', NULL) WITH ORDINALITY p(j, n)
  JOIN amounts a ON a.label = p.j->>'label'
 ORDER BY p.n;
CREATE TEMP TABLE money_baseline AS
  SELECT n, j::text AS line FROM calabi_push.preview('amounts', NULL) WITH ORDINALITY p(j, n);

-- a session's SET lc_monetary changes money::text (symbol, separators and,
-- for ja_JP, 0 fraction digits: the same cents print as yen) but never the
-- JSON, which keeps the configured locale's 2 digits
SET lc_monetary = 'de_DE.UTF-8';
SELECT label, m::text AS money_text, p.j->'m' AS json
  FROM calabi_push.preview('amounts', NULL) WITH ORDINALITY p(j, n)
  JOIN amounts a ON a.label = p.j->>'label'
 ORDER BY p.n;
SELECT count(*) AS rows, count(*) FILTER (WHERE b.line = p.j::text) AS identical_to_baseline
  FROM calabi_push.preview('amounts', NULL) WITH ORDINALITY p(j, n)
  JOIN money_baseline b USING (n);

SET lc_monetary = 'ja_JP.UTF-8';
SELECT label, m::text AS money_text, p.j->'m' AS json
  FROM calabi_push.preview('amounts', NULL) WITH ORDINALITY p(j, n)
  JOIN amounts a ON a.label = p.j->>'label'
 ORDER BY p.n;
SELECT count(*) AS rows, count(*) FILTER (WHERE b.line = p.j::text) AS identical_to_baseline
  FROM calabi_push.preview('amounts', NULL) WITH ORDINALITY p(j, n)
  JOIN money_baseline b USING (n);
-- the schema does not move either
SELECT key AS column, value AS schema
  FROM json_each(calabi_push.stream_schema('amounts')->'json_schema'->'properties');

SET lc_monetary = 'C';
SELECT label, m::text AS money_text, p.j->'m' AS json
  FROM calabi_push.preview('amounts', NULL) WITH ORDINALITY p(j, n)
  JOIN amounts a ON a.label = p.j->>'label'
 ORDER BY p.n;
SELECT count(*) AS rows, count(*) FILTER (WHERE b.line = p.j::text) AS identical_to_baseline
  FROM calabi_push.preview('amounts', NULL) WITH ORDINALITY p(j, n)
  JOIN money_baseline b USING (n);
RESET lc_monetary;

-- money inside a composite is written by the composite's output function
-- (type-mapping.md: "composite types ... the type's own output function's
-- text"); that text too uses the configured lc_monetary, not the session's
CREATE TYPE priced AS (item text, price money);
CREATE TABLE priced_items (label text, p priced);
INSERT INTO priced_items VALUES ('tea', ROW('tea', '-1,000')), ('cake', ROW('cake', '0.01'));
SELECT * FROM calabi_push.preview('priced_items', NULL);
SET lc_monetary = 'ja_JP.UTF-8';
SELECT label, p::text AS composite_text, j->'p' AS json
  FROM calabi_push.preview('priced_items', NULL) WITH ORDINALITY x(j, n)
  JOIN priced_items i ON i.label = x.j->>'label'
 ORDER BY x.n;
RESET lc_monetary;

-- money arrays: element by element, NULL elements null
CREATE TABLE money_arrays (a money[]);
INSERT INTO money_arrays VALUES ('{-1000,0.01,NULL}'), ('{}');
SELECT * FROM calabi_push.preview('money_arrays', NULL);
SET lc_monetary = 'ja_JP.UTF-8';
SELECT * FROM calabi_push.preview('money_arrays', NULL);
RESET lc_monetary;
SELECT key AS column, value AS schema
  FROM json_each(calabi_push.stream_schema('money_arrays')->'json_schema'->'properties');

-- every row above is valid JSON
SELECT count(*) AS valid_json_rows FROM (
  SELECT j::text::jsonb FROM calabi_push.preview('amounts', NULL) j
  UNION ALL SELECT j::text::jsonb FROM calabi_push.preview('money_arrays', NULL) j
) v;
