# Crashes of an xmin sync: kill -9 of the worker in the middle of a full
# read, and of an incremental one, resume after the last acknowledged chunk
# in the same run; kill -9 of the postmaster between runs loses nothing.
# Each time the destination equals the source after the run, and the rows
# sent twice never exceed what was in flight.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;
use CalabiXminTest;

my $rows = 3000;
my ($node, $recv) = sync_setup(name => 'xmincrash', receiver => { log_bodies => 1 },
	conf => 'restart_after_crash = on');
$node->safe_psql('postgres', qq{
	CREATE TABLE big (id int PRIMARY KEY, v text);
	INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, $rows) g;
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['big']::regclass[], method => 'xmin',
	  options => '{"batch_rows": 50, "chunk_rows": 50}');
});

sub kill_worker_mid_read
{
	my ($what, $want) = @_;
	my $log = -s $node->logfile;
	my $before = scalar @{ $recv->requests };
	start_slowed_read($node, $recv, 's', 150, "$what: part acknowledged");
	my $pid = $node->safe_psql('postgres', q{SELECT pid FROM calabi_push.sync_status WHERE name = 's'});
	ok($pid =~ /^\d+$/, "$what: the worker runs");
	kill 'KILL', $pid;
	$node->poll_query_until('postgres', 'SELECT true');
	$recv->clear_faults;
	ok($node->poll_query_until('postgres', q{
		SELECT state = 'idle' AND completed_at IS NOT NULL AND pid IS NULL
		  FROM calabi_push.sync_status WHERE name = 's'}), "$what: the run completes after recovery");
	like(slurp_file($node->logfile, $log), qr/resuming the \w+ read of "public"."big" at block \d+/,
		"$what: resumed from its checkpoint");
	assert_dest_equals_source($node, 'public', 'big', $what);
	my $sent = run_records($recv, 's', $before);
	my %seen;
	my $twice = grep { $seen{$_}++ } @$sent;
	# a chunk's rows move the checkpoint only once all are acknowledged, and
	# two batches may be in flight: at most about four batches again
	cmp_ok($twice, '<=', 200, "$what: $twice rows sent twice (at most four batches of 50)");
	my @missing = grep { !$seen{$_} } @$want;
	is(scalar @missing, 0, "$what: every row it had to send was sent");
}

kill_worker_mid_read('full read', [ 1 .. $rows ]);

# an incremental run with many rows to send
$node->safe_psql('postgres', q{UPDATE big SET v = 'second' WHERE id % 2 = 0});
kill_worker_mid_read('incremental read', [ grep { $_ % 2 == 0 } 1 .. $rows ]);
is(xmin_checkpoint($node, 's', 'read'), 'incremental', 'the resumed run stayed incremental');

# kill -9 of the postmaster between runs, with changes waiting
$node->safe_psql('postgres', q{UPDATE big SET v = 'third' WHERE id IN (1, 2999)});
$node->stop('immediate');
$node->start;
my $since = xmin_run($node, $recv, 's');
is_deeply(run_records($recv, 's', $since), [ 1, 2999 ], 'after a postmaster crash between runs: the changed rows');
assert_dest_equals_source($node, 'public', 'big', 'after a postmaster crash');

$recv->stop;
$node->stop;
done_testing();
