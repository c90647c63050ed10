-- The output plugin and values stored out of line (TOAST): an inserted one
-- is reassembled; an update that leaves it alone does not carry it in the
-- WAL, so the record lists the column in "unchanged" and leaves it out of
-- data, unless REPLICA IDENTITY FULL puts the old row, value included, in
-- the WAL (docs/cdc.md).  The values are long: the lines show their length.
\set ECHO none
\set schema op_toast
\i test/lib/decoding.sql
\set ECHO all
CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE docs_full (LIKE docs INCLUDING ALL);
ALTER TABLE docs_full REPLICA IDENTITY FULL;
-- a compressed out-of-line value (default storage)
CREATE TABLE notes (id int PRIMARY KEY, body text);

-- a line with each long string shown as <N chars, md5 prefix>
CREATE FUNCTION shorten(line text) RETURNS text LANGUAGE sql AS $$
  SELECT string_agg(CASE WHEN length(part) > 100
                         THEN '<' || length(part) || ' chars ' || left(md5(part), 8) || '>'
                         ELSE part END, '"' ORDER BY n)
    FROM unnest(string_to_array(line, '"')) WITH ORDINALITY u(part, n)
$$;

SELECT 'init' FROM pg_create_logical_replication_slot('op_toast', 'calabi_push');

INSERT INTO docs VALUES (1, 'a', repeat(md5('x'), 400)), (2, 'b', repeat(md5('y'), 400));
INSERT INTO docs_full VALUES (1, 'a', repeat(md5('x'), 400)), (2, 'b', repeat(md5('y'), 400));
INSERT INTO notes SELECT 1, string_agg(md5(g::text), ' ') FROM generate_series(1, 2000) g;
SELECT left(md5(repeat(md5('x'), 400)), 8) AS x, left(md5(repeat(md5('y'), 400)), 8) AS y,
       left(md5(repeat(md5('z'), 400)), 8) AS z,
       left(md5((SELECT body FROM notes)), 8) AS notes;
SELECT shorten(c) FROM cp_get_changes('op_toast') c WHERE c LIKE '{"type":"RECORD"%';

-- default identity: an update of another column lists body in "unchanged";
-- an update of body itself carries the new value
UPDATE docs SET title = 'a2' WHERE id = 1;
UPDATE docs SET body = repeat(md5('z'), 400) WHERE id = 2;
UPDATE notes SET id = 2;
-- REPLICA IDENTITY FULL: the unchanged value is taken from the old row;
-- a delete carries the whole old row, out-of-line value included
UPDATE docs_full SET title = 'a2' WHERE id = 1;
DELETE FROM docs_full WHERE id = 2;
SELECT shorten(c) FROM cp_get_changes('op_toast') c WHERE c LIKE '{"type":"RECORD"%';

SELECT pg_drop_replication_slot('op_toast');
DROP SCHEMA op_toast CASCADE;
