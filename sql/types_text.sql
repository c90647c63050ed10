-- Strings (type-mapping.md: rows "char(n), varchar, text, name, citext",
-- "bytea", "bit(n), bit varying", "json, jsonb" and "any other type" for
-- "char"): JSON strings, escaped so that every value is valid JSON and
-- reads back as the very same text.  The escapes used are \" \\ \b \f \n
-- \r \t and \u00XX for the other control characters (docs/type-mapping.md);
-- multi-byte UTF-8 is written as it is.
CREATE SCHEMA types_text;
SET search_path = types_text;
CREATE EXTENSION citext SCHEMA types_text;

-- every control character 0x01..0x1f, and DEL (0x7f, which JSON does not
-- require to be escaped: it is written as it is, and psql shows it as \x7F),
-- one per row; the last row holds all of them
CREATE TABLE controls (code int, s text);
INSERT INTO controls
  SELECT i, chr(i) FROM generate_series(1, 31) i
  UNION ALL SELECT 127, chr(127)
  UNION ALL SELECT NULL, string_agg(chr(i), '' ORDER BY i) FROM generate_series(1, 31) i;
SELECT * FROM calabi_push.preview('controls', NULL);
-- each reads back (->> unescapes) as the stored text
SELECT count(*) AS rows, count(*) FILTER (WHERE p.j->>'s' = c.s) AS reads_back
  FROM calabi_push.preview('controls', NULL) WITH ORDINALITY p(j, n)
  JOIN controls c ON c.code IS NOT DISTINCT FROM (p.j->>'code')::int;

-- quotes, backslashes, multi-byte UTF-8 and the empty string
CREATE TABLE texts (label text, t text);
INSERT INTO texts VALUES
  ('double quotes', 'say "hi"'),
  ('single quote', 'it''s'),
  ('backslash', 'C:\temp\new'),
  ('backslash quote', '\"'),
  ('slash', 'a/b'),
  ('escape-looking text', '\u0041 \n'),
  ('e acute', 'é'),
  ('decomposed e acute', 'e' || chr(769)),
  ('chinese', '中文'),
  ('emoji', '😀 🇫🇷'),
  ('U+2028 and U+2029', chr(8232) || chr(8233)),
  ('mixed', E'line 1\n\t"中文" \\ é'),
  ('empty', ''),
  ('spaces', '  '),
  ('null', NULL);
SELECT * FROM calabi_push.preview('texts', NULL);
SELECT count(*) AS rows, count(*) FILTER (WHERE p.j->>'t' IS NOT DISTINCT FROM x.t) AS reads_back
  FROM calabi_push.preview('texts', NULL) WITH ORDINALITY p(j, n)
  JOIN texts x ON x.label = p.j->>'label';

-- the string types: char(n) keeps its blank padding, varchar and text as
-- stored, name, "char" (its output function: one character), citext as
-- typed (case is kept, only comparisons ignore it)
CREATE TABLE string_types (c5 char(5), c1 char, vc varchar(10), v varchar, n name,
  ch "char", ci citext);
INSERT INTO string_types VALUES
  ('ab', 'x', 'ab  ', 'no limit', 'pg_class', 'x', 'MiXeD CaSe'),
  ('中文', ' ', '', '', '', '', ''),
  ('abcde', NULL, 'é"\', 'é"\', 'Odd "Name"', '"', 'É'),
  (NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SELECT * FROM calabi_push.preview('string_types', NULL);

-- bytea: "\x" and two lowercase hex digits a byte, as "\\x..." in the JSON
-- text, whatever bytea_output is
CREATE TABLE byteas (label text, b bytea);
INSERT INTO byteas VALUES
  ('spec example', 'kpz'),
  ('zero and 0xff', '\x00ff'),
  ('quote and backslash', '"\\'),
  ('UTF-8 of é', convert_to('é', 'UTF8')),
  ('empty', ''),
  ('every byte', (SELECT string_agg(set_byte('\x00'::bytea, 0, i), '' ORDER BY i)
                    FROM generate_series(0, 255) i)),
  ('null', NULL);
SET bytea_output = 'hex';
SELECT label, b::text AS bytea_text, p.j->'b' AS json
  FROM calabi_push.preview('byteas', NULL) WITH ORDINALITY p(j, n)
  JOIN byteas x ON x.label = p.j->>'label'
 WHERE label <> 'every byte'
 ORDER BY p.n;
SET bytea_output = 'escape';
SELECT label, b::text AS bytea_text, p.j->'b' AS json
  FROM calabi_push.preview('byteas', NULL) WITH ORDINALITY p(j, n)
  JOIN byteas x ON x.label = p.j->>'label'
 WHERE label <> 'every byte'
 ORDER BY p.n;
-- all 256 byte values, checked against encode(..., 'hex'), under both settings
SELECT p.j->>'b' = '\x' || encode(x.b, 'hex') AS every_byte_is_hex
  FROM calabi_push.preview('byteas', NULL) p(j)
  JOIN byteas x ON x.label = p.j->>'label'
 WHERE x.label = 'every byte';
RESET bytea_output;
SELECT p.j->>'b' = '\x' || encode(x.b, 'hex') AS every_byte_is_hex
  FROM calabi_push.preview('byteas', NULL) p(j)
  JOIN byteas x ON x.label = p.j->>'label'
 WHERE x.label = 'every byte';

-- bit(n) and bit varying: the bits as a string
CREATE TABLE bits (b4 bit(4), vb bit varying, vb8 bit varying(8));
INSERT INTO bits VALUES
  (B'0100', B'0100', B'1'),
  (B'1111', B'', B'10101010'),
  (X'A', X'FF00', B''),
  (NULL, NULL, NULL);
SELECT * FROM calabi_push.preview('bits', NULL);

-- json and jsonb: a string holding the JSON text as PostgreSQL prints it
-- (json: exactly as typed, escapes and spacing kept; jsonb: normalized,
-- \u00e9 becomes é, keys sorted), escaped once more as a JSON string
CREATE TABLE jsons (label text, js json, jb jsonb);
INSERT INTO jsons VALUES
  ('object', '{"b": "é\u00e9\n", "a": [1, 2.50, null, true]}', '{"b": "é\u00e9\n", "a": [1, 2.50, null, true]}'),
  ('string with escapes', '"tab\there \"quoted\" back\\slash"', '"tab\there \"quoted\" back\\slash"'),
  ('unicode', '{"emoji": "😀", "chinese": "\u4e2d\u6587"}', '{"emoji": "😀", "chinese": "\u4e2d\u6587"}'),
  ('scalar number', '1e+24', '1e+24'),
  ('json null', 'null', 'null'),
  ('\u0000 (json only)', '"a\u0000b"', NULL),
  ('sql null', NULL, NULL);
SELECT label, js::text AS json_text, p.j->'js' AS json_json, jb::text AS jsonb_text, p.j->'jb' AS jsonb_json
  FROM calabi_push.preview('jsons', NULL) WITH ORDINALITY p(j, n)
  JOIN jsons x ON x.label = p.j->>'label'
 ORDER BY p.n;
-- each reads back as the type's text
SELECT count(*) AS rows,
       count(*) FILTER (WHERE p.j->>'js' IS NOT DISTINCT FROM x.js::text) AS json_reads_back,
       count(*) FILTER (WHERE p.j->>'jb' IS NOT DISTINCT FROM x.jb::text) AS jsonb_reads_back
  FROM calabi_push.preview('jsons', NULL) WITH ORDINALITY p(j, n)
  JOIN jsons x ON x.label = p.j->>'label';

-- arrays of strings: element by element; "NULL" the string is not null
CREATE TABLE string_arrays (label text, t text[], c char(3)[], b bytea[], bi bit(2)[], js jsonb[]);
INSERT INTO string_arrays VALUES
  ('values', '{"a \"b\"","c\\d",é,NULL,"NULL",""}', '{a,bc}', '{"\\x6b707a",NULL}',
   '{01,10}', ARRAY['{"a": 1}'::jsonb, '"s"']),
  ('two dimensions', ARRAY[['a','b'],['c',E'\n']], '{{x},{y}}', '{{"\\x00"},{"\\xff"}}', '{{11}}', '{}'),
  ('empty', '{}', '{}', '{}', '{}', '{}');
SELECT * FROM calabi_push.preview('string_arrays', NULL);

-- values large enough to be stored out of line (TOAST), compressed or not.
-- They are checked rather than printed: the JSON value is the whole
-- stored value (->> reads it back), and its JSON text has the length and
-- md5 of the string computed independently from the stored value (with
-- to_json for text, encode(..., 'hex') for bytea).
CREATE TABLE large_texts (label text, t text);
INSERT INTO large_texts VALUES
  ('repetitive', repeat('abc', 100000)),
  ('repetitive, escaped', repeat(E'a"\n', 50000)),
  ('repetitive, multi-byte', repeat('中文é', 50000)),
  -- 32000 hex digits from an md5 chain: text that does not compress
  ('md5 chain', (SELECT string_agg(md5(i::text), '' ORDER BY i) FROM generate_series(1, 1000) i));
CREATE TABLE large_byteas (label text, b bytea);
INSERT INTO large_byteas VALUES
  ('repetitive', decode(repeat('00ff', 100000), 'hex')),
  -- the md5 chain's digits decoded: 16000 incompressible bytes
  ('md5 chain', (SELECT decode(string_agg(md5(i::text), '' ORDER BY i), 'hex')
                   FROM generate_series(1, 1000) i));
-- how each is stored: compressed with pglz or not; out of line (counted in
-- the tables' TOAST relations) except "repetitive, escaped", which
-- compresses small enough to stay in its row
SELECT label, octet_length(t) AS bytes, pg_column_size(t) AS stored_bytes,
       pg_column_compression(t) AS compression
  FROM large_texts ORDER BY label;
SELECT label, octet_length(b) AS bytes, pg_column_size(b) AS stored_bytes,
       pg_column_compression(b) AS compression
  FROM large_byteas ORDER BY label;
SELECT reltoastrelid::regclass AS toast FROM pg_class WHERE oid = 'large_texts'::regclass \gset
SELECT count(DISTINCT chunk_id) AS out_of_line_texts FROM :toast;
SELECT reltoastrelid::regclass AS toast FROM pg_class WHERE oid = 'large_byteas'::regclass \gset
SELECT count(DISTINCT chunk_id) AS out_of_line_byteas FROM :toast;
SELECT x.label,
       p.j->>'t' = x.t AS reads_back,
       length((p.j->'t')::text) AS json_length,
       length(to_json(x.t)::text) AS expected_length,
       md5((p.j->'t')::text) AS json_md5,
       md5(to_json(x.t)::text) AS expected_md5
  FROM calabi_push.preview('large_texts', NULL) WITH ORDINALITY p(j, n)
  JOIN large_texts x ON x.label = p.j->>'label'
 ORDER BY p.n;
SELECT x.label,
       p.j->>'b' = '\x' || encode(x.b, 'hex') AS reads_back,
       length((p.j->'b')::text) AS json_length,
       2 * octet_length(x.b) + 5 AS expected_length,
       md5((p.j->'b')::text) AS json_md5,
       md5('"\\x' || encode(x.b, 'hex') || '"') AS expected_md5
  FROM calabi_push.preview('large_byteas', NULL) WITH ORDINALITY p(j, n)
  JOIN large_byteas x ON x.label = p.j->>'label'
 ORDER BY p.n;

-- the JSON schema: every one of these is a string
SELECT r.rel AS relation, e.key AS column, e.value AS schema
  FROM unnest('{string_types,byteas,bits,jsons,string_arrays}'::regclass[]) WITH ORDINALITY r(rel, n),
       json_each(calabi_push.stream_schema(r.rel)->'json_schema'->'properties') WITH ORDINALITY e(key, value, k)
 WHERE e.key <> 'label'
 ORDER BY r.n, e.k;

-- every row above is valid JSON
SELECT count(*) AS valid_json_rows FROM (
  SELECT j::text::jsonb FROM calabi_push.preview('controls', NULL) j
  UNION ALL SELECT j::text::jsonb FROM calabi_push.preview('texts', NULL) j
  UNION ALL SELECT j::text::jsonb FROM calabi_push.preview('string_types', NULL) j
  UNION ALL SELECT j::text::jsonb FROM calabi_push.preview('byteas', NULL) j
  UNION ALL SELECT j::text::jsonb FROM calabi_push.preview('bits', NULL) j
  UNION ALL SELECT j::text::jsonb FROM calabi_push.preview('jsons', NULL) j
  UNION ALL SELECT j::text::jsonb FROM calabi_push.preview('string_arrays', NULL) j
  UNION ALL SELECT j::text::jsonb FROM calabi_push.preview('large_texts', NULL) j
  UNION ALL SELECT j::text::jsonb FROM calabi_push.preview('large_byteas', NULL) j
) v;
