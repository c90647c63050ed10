-- The output plugin through the SQL slot functions: what an insert, an
-- update, a delete and a TRUNCATE become (docs/cdc.md, "The output plugin"),
-- for each kind of key.  Each row of pg_logical_slot_get_changes is one
-- protocol line: a STREAM before a stream's first message of the decoding
-- session, then a RECORD per row version, a CONTROL per truncated table.
\set ECHO none
\set schema op_changes
\i test/lib/decoding.sql
\set ECHO all
CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (b, a));
CREATE TABLE by_index (a int NOT NULL, v text);
CREATE UNIQUE INDEX by_index_a ON by_index (a);
ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_a;
CREATE TABLE keyless (x int, y text);
CREATE TABLE full_row (id int PRIMARY KEY, v text, w int);
ALTER TABLE full_row REPLICA IDENTITY FULL;
CREATE TABLE events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');

SELECT 'init' FROM pg_create_logical_replication_slot('op_changes', 'calabi_push');

-- insert: the whole row; _calabi_cdc_deleted_at null
INSERT INTO items VALUES (1, 'one', 1), (2, 'two', 2), (3, NULL, 3);
SELECT * FROM cp_get_changes('op_changes');

-- update: the whole new row; delete (default identity): the key, every
-- other column null, _calabi_cdc_deleted_at the commit time; a changed key:
-- a delete of the old key, then the row under its new key
UPDATE items SET qty = 10 WHERE id = 1;
DELETE FROM items WHERE id = 2;
UPDATE items SET id = 30, name = 'three' WHERE id = 3;
SELECT * FROM cp_get_changes('op_changes');

-- a composite primary key, in key order; a replica identity index as the key
INSERT INTO pairs VALUES (1, 'x', 'first'), (2, 'x', 'second');
UPDATE pairs SET v = 'changed' WHERE a = 1;
DELETE FROM pairs WHERE a = 2;
INSERT INTO by_index VALUES (1, 'a');
DELETE FROM by_index;
SELECT * FROM cp_get_changes('op_changes');

-- no key: primary_key empty; the WAL holds nothing of a deleted row
INSERT INTO keyless VALUES (1, 'k');
DELETE FROM keyless;
SELECT * FROM cp_get_changes('op_changes');

-- REPLICA IDENTITY FULL: a delete carries the whole old row; an update that
-- keeps the key is one record
INSERT INTO full_row VALUES (1, 'a', 1), (2, 'b', 2);
UPDATE full_row SET w = 20 WHERE id = 2;
DELETE FROM full_row WHERE id = 1;
SELECT * FROM cp_get_changes('op_changes');

-- a partitioned table: each partition is a stream of its own, never the parent
INSERT INTO events VALUES (1, '2024-06-01'), (2, '2025-06-01');
SELECT * FROM cp_get_changes('op_changes');

-- TRUNCATE: a CONTROL per table, in order with the records, at its
-- transaction's LSN; the tables of one TRUNCATE in the order it names them
INSERT INTO items VALUES (4, 'four', 4);
TRUNCATE items;
BEGIN;
INSERT INTO items VALUES (5, 'five', 5);
TRUNCATE pairs, items;
INSERT INTO pairs VALUES (3, 'y', 'after');
COMMIT;
SELECT * FROM cp_get_changes('op_changes');

-- peek leaves the changes in the slot; get consumes them; every session
-- (each call) announces its streams again
INSERT INTO items VALUES (6, 'six', 6);
SELECT * FROM cp_peek_changes('op_changes');
SELECT * FROM cp_peek_changes('op_changes');
SELECT * FROM cp_get_changes('op_changes');
SELECT count(*) FROM cp_get_changes('op_changes');

-- the extension's own tables and the system catalogs are never emitted
SELECT calabi_push.create_destination('op_changes_d', 'https://ingest.example.com/v1/ingest');
SELECT calabi_push.drop_destination('op_changes_d');
CREATE TABLE later (id int);
SELECT count(*) FROM cp_get_changes('op_changes');

SELECT pg_drop_replication_slot('op_changes');
DROP SCHEMA op_changes CASCADE;
