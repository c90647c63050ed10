-- The options of the output plugin (docs/cdc.md, "Options"), given as
-- pg_logical_slot_get_changes' variadic name/value pairs:
-- destination_sync_mode, relations and run_as; any other option, or an
-- invalid value, is an error before anything is read.
\set ECHO none
\set schema op_options
\i test/lib/decoding.sql
\set ECHO all
CREATE TABLE a (id int PRIMARY KEY);
CREATE TABLE b (id int PRIMARY KEY);
CREATE TABLE c (id int PRIMARY KEY);
CREATE ROLE op_options_reader;
GRANT USAGE ON SCHEMA op_options TO op_options_reader;
GRANT SELECT ON b TO op_options_reader;

SELECT 'init' FROM pg_create_logical_replication_slot('op_options', 'calabi_push');
INSERT INTO a VALUES (1);
INSERT INTO b VALUES (1);
INSERT INTO c VALUES (1);

-- errors: nothing is read, the changes stay in the slot
\set VERBOSITY default
SELECT * FROM cp_peek_changes('op_options', 'destination_sync_mode', 'overwrite');
SELECT * FROM cp_peek_changes('op_options', 'relations', 'a, nope');
SELECT * FROM cp_peek_changes('op_options', 'relations', '-1');
SELECT * FROM cp_peek_changes('op_options', 'relations', '1,,2');
SELECT * FROM cp_peek_changes('op_options', 'run_as', 'no_such_role');
SELECT * FROM cp_peek_changes('op_options', 'include-xids', '0');
SELECT count(*) FROM cp_peek_changes('op_options');

-- destination_sync_mode append: what the STREAM lines declare
SELECT c FROM cp_peek_changes('op_options', 'destination_sync_mode', 'append') c
 WHERE c LIKE '{"type":"STREAM"%';

-- relations: only the listed tables, never calabi_push.* even when listed
SELECT c FROM cp_peek_changes('op_options', 'relations',
    'a'::regclass::oid || ' , ' || 'c'::regclass::oid || ',' || 'calabi_push.destination'::regclass::oid) c
 WHERE c LIKE '{"type":"RECORD"%';

-- run_as: only the tables the role may SELECT
SELECT c FROM cp_peek_changes('op_options', 'run_as', 'op_options_reader') c
 WHERE c LIKE '{"type":"RECORD"%';

SELECT pg_drop_replication_slot('op_options');
DROP SCHEMA op_options CASCADE;
DROP ROLE op_options_reader;
