# A cursor sync of a view with a lookback, killed (kill -9 of its worker)
# in the middle of an incremental run that is still reading the lookback
# window, below the previous run's largest value: the position the run
# checkpoints is the largest value it sent itself, inside the window, so
# the run resumes there and the late committer's row in the window
# arrives.  (Seeded with the previous run's largest value, the position
# would jump past the window at the first chunk, and the resumed run would
# read from there on only.)
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;
use CalabiXminTest;

my ($node, $recv) = sync_setup(name => 'cursorlookback', receiver => { log_bodies => 1 },
	conf => 'restart_after_crash = on');

# k 1 .. 40, one row each (id = k)
$node->safe_psql('postgres', q{
	CREATE TABLE base (id int PRIMARY KEY, k int NOT NULL, v text);
	INSERT INTO base SELECT g, g, 'v' || g FROM generate_series(1, 40) g;
	CREATE VIEW lv AS SELECT id, k, v FROM base;
	SELECT calabi_push.create_sync('l', 'recv', ARRAY['lv']::regclass[], method => 'cursor',
	  options => '{"cursor": "k", "lookback": 20, "chunk_rows": 2, "batch_rows": 3}');
});
my $since = method_run($node, $recv, 'l');
is(scalar @{ run_records($recv, 'l', $since) }, 40, 'run 1 sent every row');
is(xmin_checkpoint($node, 'l', 'since'), '40', 'its position is 40');

# a late committer inside the window [20, 40]
$node->safe_psql('postgres', q{INSERT INTO base VALUES (100, 25, 'late, in the window')});

# run 2, slowed, killed once its first batch is acknowledged
$since = scalar @{ $recv->requests };
$recv->fault({ kind => 'stall', seconds => 0.5, count => -1 });
$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('l')});
ok($node->poll_query_until('postgres', q{
	SELECT rows_sent >= 3 AND phase = 'reading' FROM calabi_push.stream_status WHERE sync = 'l'}),
	'run 2: its first batch is acknowledged');
my $pid = $node->safe_psql('postgres', q{SELECT pid FROM calabi_push.sync_status WHERE name = 'l'});
my $after = $node->safe_psql('postgres', q{
	SELECT checkpoint->'after'->>0 FROM calabi_push.stream_status WHERE sync = 'l'});
ok($pid =~ /^\d+$/, 'run 2: its worker runs');
kill 'KILL', $pid;
cmp_ok($after, '<', 40, "run 2's position ($after) is inside the window, below 40");
$node->poll_query_until('postgres', 'SELECT true');
$recv->clear_faults;
ok($node->poll_query_until('postgres', q{
	SELECT st.phase = 'done' AND s.state = 'idle' AND s.completed_at IS NOT NULL AND s.pid IS NULL
	  FROM calabi_push.sync_status s JOIN calabi_push.stream_status st ON st.sync = s.name
	 WHERE s.name = 'l'}), 'run 2 completes after recovery');

my %got = map { $_ => 1 } @{ run_records($recv, 'l', $since) };
ok($got{100}, 'the late committer\'s row in the window arrived');
my @missing = grep { !$got{$_} } 20 .. 40;
is("@missing", '', 'every row of the window arrived');
is(xmin_checkpoint($node, 'l', 'since'), '40', 'the position is 40 again');

$recv->stop;
$node->stop;
done_testing();
