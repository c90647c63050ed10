# The cursor method on a view, which no transaction of this server writes
# the rows of: the first run reads every row in cursor order (NULL cursors
# first), chunk after chunk even where many rows share one value; every
# later run reads the rows whose cursor is at least the previous run's
# largest value: those past it, and again those at it (a row added later
# with that same value would otherwise be lost).  A row whose cursor is
# NULL or did not move is not seen again.  With a lookback, a run reads
# again that far below the previous largest value: a late committer's row
# in that window arrives.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;
use CalabiXminTest;

my ($node, $recv) = sync_setup(name => 'cursorview', receiver => { log_bodies => 1 });

$node->safe_psql('postgres', q{
	CREATE TABLE base (id int PRIMARY KEY, ts timestamptz, v text);
	-- 4 rows without a cursor, 12 sharing one value (chunks of 5 split
	-- them), then one a minute
	INSERT INTO base SELECT g, NULL, 'null ' || g FROM generate_series(1, 4) g;
	INSERT INTO base SELECT g, '2026-01-01 00:00:00+00', 'tie ' || g FROM generate_series(5, 16) g;
	INSERT INTO base SELECT g, '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 minute', 'v' || g
	  FROM generate_series(17, 40) g;
	CREATE VIEW tv AS SELECT id, ts, v FROM base;
	SELECT calabi_push.create_sync('c', 'recv', ARRAY['tv']::regclass[], method => 'cursor',
	  options => '{"cursor": "ts", "chunk_rows": 5, "batch_rows": 7}');
	SELECT calabi_push.create_sync('lb', 'recv', ARRAY['tv']::regclass[], method => 'cursor',
	  options => '{"cursor": "ts", "lookback": "30 minutes"}');
});
is($node->safe_psql('postgres', q{
	SELECT destination_sync_mode FROM calabi_push.sync WHERE name = 'c'}),
	'append', 'a view has no key: append by default');

# run 1: every row, in cursor order, NULLs first
my $since = method_run($node, $recv, 'c');
is(xmin_checkpoint($node, 'c', 'read'), 'full', 'run 1 is a full read');
is_deeply(run_records($recv, 'c', $since), [ 1 .. 40 ], 'run 1 sent every row once');
my @sent = map { $_->{record}{data}{id} }
  grep { ($_->{type} // '') eq 'RECORD' } @{ sent_messages($recv, 'c') };
is_deeply([ @sent[ 0 .. 3 ] ], [ 1 .. 4 ], 'rows without a cursor came first');
my ($stream) = grep { ($_->{type} // '') eq 'STREAM' } @{ sent_messages($recv, 'c') };
is($stream->{stream}{method}, 'cursor', 'STREAM says method cursor');
is($stream->{stream}{sync_mode}, 'incremental', 'STREAM says sync_mode incremental');
is_deeply($stream->{stream}{cursor_field}, ['ts'], 'STREAM names the cursor field');
is(xmin_checkpoint($node, 'c', 'since'), '2026-01-01 00:40:00+00',
	'the position is the largest value sent');

$node->safe_psql('postgres', q{
	INSERT INTO base VALUES (41, '2026-01-01 00:40:00+00', 'at the largest value, later');
	INSERT INTO base VALUES (42, '2026-01-01 00:50:00+00', 'past it');
	INSERT INTO base VALUES (43, NULL, 'no cursor');
	UPDATE base SET ts = '2026-01-01 01:40:00+00' WHERE id = 20;
	UPDATE base SET v = 'cursor not moved' WHERE id = 21;
});

# run 2: the rows at or past the largest value
$since = method_run($node, $recv, 'c');
is(xmin_checkpoint($node, 'c', 'read'), 'incremental', 'run 2 is incremental');
is_deeply(run_records($recv, 'c', $since), [ 20, 40, 41, 42 ],
	'run 2 sent the rows past the largest value and those at it');
is(xmin_checkpoint($node, 'c', 'since'), '2026-01-01 01:40:00+00', 'the position moved');

# run 3: nothing changed: only the row at the largest value again
$since = method_run($node, $recv, 'c');
is_deeply(run_records($recv, 'c', $since), [20], 'run 3 sent the row at the largest value only');

# resync: the stream is read whole again, under a new generation
my $generation = xmin_checkpoint($node, 'c', 'generation');
$since = scalar @{ $recv->requests };
# an enabled run-once sync: resync starts the run itself
$node->safe_psql('postgres', q{SELECT calabi_push.resync('c', 'tv')});
ok($node->poll_query_until('postgres', q{
	SELECT s.state = 'idle' AND s.pid IS NULL AND s.completed_at IS NOT NULL AND st.phase = 'done'
	  FROM calabi_push.sync_status s JOIN calabi_push.stream_status st ON st.sync = s.name
	 WHERE s.name = 'c'}), 'the run resync started completes');
is(xmin_checkpoint($node, 'c', 'read'), 'full', 'after resync the run is a full read');
is(xmin_checkpoint($node, 'c', 'generation'), $generation + 1, 'under a new generation');
is(scalar @{ run_records($recv, 'c', $since) }, 43, 'every row was sent again');

# lookback: a row committed late, 10 minutes below the largest value
$since = method_run($node, $recv, 'lb');
is(scalar @{ run_records($recv, 'lb', $since) }, 43, 'lookback sync: run 1 sent every row');
$node->safe_psql('postgres', q{
	INSERT INTO base VALUES (44, '2026-01-01 01:30:00+00', 'late, in the window');
	INSERT INTO base VALUES (45, '2026-01-01 00:30:00+00', 'late, below the window');
});
$since = method_run($node, $recv, 'lb');
is_deeply(run_records($recv, 'lb', $since), [ 20, 44 ],
	'lookback sync: run 2 sent what lies within 30 minutes of the largest value');

$recv->stop;
$node->stop;
done_testing();
