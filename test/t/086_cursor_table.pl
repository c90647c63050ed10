# The cursor method on a table: the server knows which transactions wrote
# each row, so a run after the first sends every row written since the
# previous run's snapshot, whatever its cursor value.  The classic gap of
# cursor syncs is closed: a transaction that set updated_at = now() (its
# start) before a run, and committed after that run read past the value,
# is sent by the next run, with its released savepoint and without its
# rolled-back one; a row updated without moving its cursor is sent too.
# The STREAM message names the cursor field; the state keeps the largest
# cursor value sent.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;
use CalabiXminTest;

my ($node, $recv) = sync_setup(name => 'cursortable', receiver => { log_bodies => 1 });

$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text,
	                updated_at timestamptz NOT NULL DEFAULT now());
	INSERT INTO t SELECT g, 'v' || g, '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 second'
	  FROM generate_series(1, 100) g;
	SELECT calabi_push.create_sync('c', 'recv', ARRAY['t']::regclass[], method => 'cursor',
	  options => '{"cursor": "updated_at", "chunk_rows": 10, "batch_rows": 25}');
});
is($node->safe_psql('postgres', q{
	SELECT destination_sync_mode FROM calabi_push.sync WHERE name = 'c'}),
	'append_dedup', 'a table with a key: append_dedup by default');

# run 1: the full read
my $since = method_run($node, $recv, 'c');
is(xmin_checkpoint($node, 'c', 'read'), 'full', 'run 1 is a full read');
is_deeply(run_records($recv, 'c', $since), [ 1 .. 100 ], 'run 1 sent every row once');
my ($stream) = grep { ($_->{type} // '') eq 'STREAM' } @{ sent_messages($recv, 'c') };
is($stream->{stream}{method}, 'cursor', 'STREAM says method cursor');
is_deeply($stream->{stream}{cursor_field}, ['updated_at'], 'STREAM names the cursor field');
is(xmin_checkpoint($node, 'c', 'cursor'), '2026-01-01 00:01:40+00',
	'the state keeps the largest cursor value sent');
assert_dest_equals_source($node, 'public', 't', 'run 1');

# a transaction that stamps its rows with its start time, open across run 2
my $late = $node->background_psql('postgres');
$late->query_safe(q{
	BEGIN;
	INSERT INTO t (id, v) VALUES (1001, 'late');
	SAVEPOINT a;
	INSERT INTO t (id, v) VALUES (1002, 'late, released savepoint');
	UPDATE t SET v = 'late update', updated_at = now() WHERE id = 5;
	RELEASE a;
	SAVEPOINT b;
	INSERT INTO t (id, v) VALUES (1003, 'rolled back');
	ROLLBACK TO b;
	SELECT 1;
});
$node->safe_psql('postgres', q{
	UPDATE t SET v = 'updated', updated_at = now() WHERE id IN (10, 20);
	UPDATE t SET v = 'cursor not moved' WHERE id = 30;
	INSERT INTO t (id, v) VALUES (2001, 'new');
});

# run 2 reads past the late transaction's updated_at; it is still open
$since = method_run($node, $recv, 'c');
is(xmin_checkpoint($node, 'c', 'read'), 'incremental', 'run 2 is incremental');
is_deeply(run_records($recv, 'c', $since), [ 10, 20, 30, 2001 ],
	'run 2 sent the rows committed since run 1, the one whose cursor did not move too');
ok($node->safe_psql('postgres', q{
	SELECT max(updated_at) FROM t}) gt '2026-01-01 00:01:40+00', 'run 2 read past the late transaction\'s start');

$late->query_safe('COMMIT');
$late->quit;

# run 3: the late committer's rows, below the largest value already sent
$since = method_run($node, $recv, 'c');
is_deeply(run_records($recv, 'c', $since), [ 5, 1001, 1002 ],
	'run 3 sent exactly the late transaction\'s surviving rows');

$since = method_run($node, $recv, 'c');
is_deeply(run_records($recv, 'c', $since), [], 'run 4 sent nothing');
assert_dest_equals_source($node, 'public', 't', 'after the runs');

$recv->stop;
$node->stop;
done_testing();
