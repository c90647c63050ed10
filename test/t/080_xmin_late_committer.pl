# The xmin method sends, at each run after the first, exactly the rows whose
# current version was written by a transaction the previous run's snapshot
# did not see: a transaction open during a run and committed after it (a
# late committer), with its released savepoint and without its rolled-back
# one, is sent by the next run; nothing committed before is sent again.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;
use CalabiXminTest;

my ($node, $recv) = sync_setup(name => 'xminlate', receiver => { log_bodies => 1 });

$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;
	SELECT calabi_push.create_sync('x', 'recv', ARRAY['t']::regclass[], method => 'xmin',
	  options => '{"chunk_rows": 10, "batch_rows": 25}');
});
is($node->safe_psql('postgres', q{
	SELECT destination_sync_mode FROM calabi_push.sync WHERE name = 'x'}),
	'append_dedup', 'a table with a key: append_dedup by default');

# run 1: the full read
my $since = xmin_run($node, $recv, 'x');
is(xmin_checkpoint($node, 'x', 'read'), 'full', 'run 1 is a full read');
is_deeply(run_records($recv, 'x', $since), [ 1 .. 100 ], 'run 1 sent every row once');
assert_dest_equals_source($node, 'public', 't', 'run 1');

# a transaction opened before run 2, committed after it
my $late = $node->background_psql('postgres');
$late->query_safe(q{
	BEGIN;
	INSERT INTO t VALUES (1001, 'late');
	SAVEPOINT a;
	INSERT INTO t VALUES (1002, 'late, released savepoint');
	UPDATE t SET v = 'late update' WHERE id = 5;
	RELEASE a;
	SAVEPOINT b;
	INSERT INTO t VALUES (1003, 'rolled back');
	ROLLBACK TO b;
	SELECT 1;
});
$node->safe_psql('postgres', q{
	UPDATE t SET v = 'updated' WHERE id IN (10, 20);
	INSERT INTO t VALUES (2001, 'new');
	DELETE FROM t WHERE id = 30;
});

# run 2: what committed since run 1, not the open transaction
$since = xmin_run($node, $recv, 'x');
is(xmin_checkpoint($node, 'x', 'read'), 'incremental', 'run 2 is incremental');
is_deeply(run_records($recv, 'x', $since), [ 10, 20, 2001 ],
	'run 2 sent exactly the rows committed since run 1');

$late->query_safe('COMMIT');
$late->quit;

# run 3: the late committer, with its released savepoint, and nothing else
$since = xmin_run($node, $recv, 'x');
is_deeply(run_records($recv, 'x', $since), [ 5, 1001, 1002 ],
	'run 3 sent exactly the late transaction\'s surviving rows');

# run 4: nothing changed, nothing sent
$since = xmin_run($node, $recv, 'x');
is_deeply(run_records($recv, 'x', $since), [], 'run 4 sent nothing');

# deletes are not seen by xmin: the destination keeps row 30
$node->safe_psql('postgres', q{INSERT INTO t VALUES (30, 'v30')});
assert_dest_equals_source($node, 'public', 't', 'after the runs (row 30 put back)');

$recv->stop;
$node->stop;
done_testing();
