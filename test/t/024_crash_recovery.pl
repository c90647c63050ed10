# Crashes in the middle of a backfill: kill -9 of the sync worker (the
# postmaster then restarts every process) and of the postmaster itself
# (an immediate stop).  After recovery the read resumes from its last
# acknowledged key in the same generation, the destination equals the
# source, and the records sent twice never exceed one batch (the batch in
# flight when the crash came).
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiSyncTest;

my $batch_rows = 50;
my $rows = 3000;

# restart_after_crash as in production (the test framework turns it off)
my ($node, $recv) = sync_setup(name => 'crash', conf => 'restart_after_crash = on');
$node->safe_psql('postgres', qq{
	CREATE TABLE big (id int PRIMARY KEY, v text, at timestamptz);
	INSERT INTO big SELECT g, md5(g::text), '2024-01-01'::timestamptz + g * interval '1 minute'
	  FROM generate_series(1, $rows) g;
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['big']::regclass[],
	  options => '{"batch_rows": $batch_rows, "chunk_rows": $batch_rows}');
});

# records received by the receiver so far
sub records_received
{
	my $n = 0;
	$n += ($_->{status} // 0) == 200 ? ($_->{records} // 0) : 0 for @{ $recv->requests };
	return $n;
}

# Start a run slowed down by the receiver (each request held one second),
# wait until part of the table is acknowledged, crash with $crash->(), let
# it finish at full speed, and check the outcome.
sub crash_mid_backfill
{
	my ($what, $crash) = @_;
	my $before = records_received();

	start_slowed_read($node, $recv, 's', 150, "$what: part of the table acknowledged");
	my $generation = $node->safe_psql('postgres',
		q{SELECT generation FROM calabi_push.stream_status WHERE sync = 's'});

	$crash->();
	$recv->clear_faults;

	ok( $node->poll_query_until('postgres', q{
			SELECT state = 'idle' AND completed_at IS NOT NULL
			  FROM calabi_push.sync_status WHERE name = 's'}),
		"$what: the run completes after recovery");
	is($node->safe_psql('postgres',
		q{SELECT generation FROM calabi_push.stream_status WHERE sync = 's'}),
		$generation, "$what: the read resumed in the same generation");
	like(slurp_file($node->logfile), qr/the read of "public"."big" resumes after \d+ rows/,
		"$what: the worker resumed from its checkpoint");
	assert_dest_equals_source($node, 'public', 'big', $what);

	my $duplicates = records_received() - $before - $rows;
	ok($duplicates >= 0 && $duplicates <= $batch_rows,
		"$what: $duplicates records sent twice, at most one batch ($batch_rows)");
}

crash_mid_backfill('kill -9 of the worker', sub {
	my $pid = $node->safe_psql('postgres',
		q{SELECT pid FROM calabi_push.sync_status WHERE name = 's'});
	ok($pid =~ /^\d+$/, 'the worker runs');
	kill 'KILL', $pid;
	# the postmaster restarts every process after a crashed one
	$node->poll_query_until('postgres', 'SELECT true');
});

crash_mid_backfill('kill -9 of the postmaster', sub {
	$node->stop('immediate');
	$node->start;
});

$recv->stop;
$node->stop;
done_testing();
