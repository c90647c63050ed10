-- The output plugin and transactions: only committed changes, in commit
-- order, each transaction whole; rolled-back subtransactions and aborted
-- transactions emit nothing.  A column change (DDL) announces the stream
-- again, with its new columns, before the first change after it.
\set ECHO none
\set schema op_txn
\i test/lib/decoding.sql
\set ECHO all
CREATE TABLE t (id int PRIMARY KEY, v text);
CREATE TABLE u (id int PRIMARY KEY, v text);
CREATE TABLE shapes (id int PRIMARY KEY, name text, qty int);

SELECT 'init' FROM pg_create_logical_replication_slot('op_txn', 'calabi_push');

-- savepoints: a rolled-back one never appears, a released one does; an
-- aborted transaction emits nothing; an empty one neither
BEGIN;
INSERT INTO t VALUES (1, 'a');
SAVEPOINT s1;
INSERT INTO t VALUES (2, 'rolled back');
ROLLBACK TO s1;
INSERT INTO t VALUES (3, 'c');
SAVEPOINT s2;
INSERT INTO t VALUES (4, 'released');
RELEASE s2;
COMMIT;
BEGIN;
INSERT INTO t VALUES (5, 'aborted');
ROLLBACK;
BEGIN;
SAVEPOINT s;
INSERT INTO t VALUES (6, 'rolled back');
ROLLBACK TO s;
COMMIT;
SELECT * FROM cp_get_changes('op_txn') c WHERE c LIKE '{"type":"RECORD"%';

-- commit order, not the order the changes were made: a transaction of a
-- second session (dblink) that starts later and commits first comes first
CREATE EXTENSION dblink SCHEMA op_txn;
SELECT dblink_connect('other', 'dbname=' || current_database());
BEGIN;
INSERT INTO t VALUES (10, 'started first, committed second');
SELECT dblink_exec('other', 'INSERT INTO op_txn.u VALUES (10, ''started second, committed first'')');
INSERT INTO u VALUES (11, 'started first, committed second');
COMMIT;
SELECT dblink_disconnect('other');
SELECT * FROM cp_get_changes('op_txn') c WHERE c LIKE '{"type":"RECORD"%';

-- DDL: a STREAM before the first change after each column change, with the
-- columns of its moment; none after an index, a default or a constraint;
-- a row made before ADD COLUMN in the same transaction has the old shape
BEGIN;
INSERT INTO shapes VALUES (1, 'a', 1);
ALTER TABLE shapes ADD COLUMN extra text;
INSERT INTO shapes VALUES (2, 'b', 2, 'e');
COMMIT;
ALTER TABLE shapes ADD COLUMN never_written int;
UPDATE shapes SET name = 'a2' WHERE id = 1;
CREATE INDEX ON shapes (name);
ALTER TABLE shapes ALTER COLUMN name SET DEFAULT 'n', ADD CONSTRAINT id_positive CHECK (id > 0);
INSERT INTO shapes VALUES (3, 'c', 3);
BEGIN;
ALTER TABLE shapes ALTER COLUMN qty TYPE text;
INSERT INTO shapes VALUES (4, 'd', 'four');
COMMIT;
ALTER TABLE shapes DROP COLUMN extra, ADD COLUMN filled int DEFAULT 7;
ALTER TABLE shapes REPLICA IDENTITY FULL;
DELETE FROM shapes WHERE id = 3;
SELECT * FROM cp_get_changes('op_txn');

-- a renamed table: its stream is announced under the new name
ALTER TABLE t RENAME TO t_renamed;
INSERT INTO t_renamed VALUES (20, 'renamed');
SELECT * FROM cp_get_changes('op_txn');

SELECT pg_drop_replication_slot('op_txn');
DROP SCHEMA op_txn CASCADE;
