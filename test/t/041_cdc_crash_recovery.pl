# CDC through crashes: kill -9 of the worker and of the postmaster
# mid-backfill and mid-stream, and a crash between the endpoint's 2xx and
# the checkpoint's commit: the destination equals the source afterwards and
# the records sent twice stay within the batches in flight.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my $batch_rows = 100;

# restart_after_crash as in production (the test framework turns it off)
my ($node, $recv) = cdc_sync_setup(
	setup => { name => 'cdcrec', conf => 'restart_after_crash = on', receiver => { log_bodies => 1 } },
	sql => q{
		CREATE TABLE t (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
		INSERT INTO t SELECT g, md5(g::text), 0 FROM generate_series(1, 3000) g;
		CREATE PROCEDURE churn(first int, last int) LANGUAGE plpgsql AS $$
		BEGIN
		  FOR i IN first .. last LOOP
		    INSERT INTO t VALUES (100000 + i, 'new ' || i) ON CONFLICT (id) DO UPDATE SET n = t.n + 1;
		    UPDATE t SET n = n + 1, v = 'upd ' || i WHERE id = 1 + (i * 7) % 3000;
		    DELETE FROM t WHERE id = 1 + (i * 13) % 3000;
		    COMMIT;
		  END LOOP;
		END $$;
	},
	sync => 's', relations => ['t'],
	options => qq{{"batch_rows": $batch_rows, "chunk_rows": $batch_rows}});

# Every committed change acknowledged?
sub caught_up { return cdc_caught_up($node, 's') }

# Row versions accepted (2xx) more than once.
sub repeats { return scalar @{ cdc_repeats($recv, 's') } }

sub kill_worker
{
	my $pid = $node->safe_psql('postgres', q{SELECT pid FROM calabi_push.sync_status WHERE name = 's'});
	ok($pid =~ /^\d+$/, 'the worker runs');
	kill 'KILL', $pid;
	$node->poll_query_until('postgres', 'SELECT true');
}

sub restart_postmaster
{
	$node->stop('immediate');
	$node->start;
}

# Records the receiver accepted from the sync.
sub records_received
{
	my $n = 0;
	$n += ($_->{status} // 0) == 200 ? ($_->{records} // 0) : 0 for @{ ingest_requests($recv, 's') };
	return $n;
}

# --- mid-backfill (nothing else changes: every record beyond the table's
# 3000 rows was sent twice) ---
my $repeats = 0;
for my $crash ([ 'kill -9 of the worker', \&kill_worker ], [ 'kill -9 of the postmaster', \&restart_postmaster ])
{
	my ($what, $do) = @$crash;
	my $received = records_received();
	$recv->fault({ kind => 'stall', seconds => 0.3, count => -1 });
	if ($what =~ /worker/)
	{
		$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
	}
	else
	{
		$node->safe_psql('postgres', q{SELECT calabi_push.resync('s', 't')});
	}
	ok($node->poll_query_until('postgres', q{
		SELECT phase = 'reading' AND rows_sent >= 500 FROM calabi_push.stream_status WHERE sync = 's'}),
		"$what mid-backfill: part of the table acknowledged");
	$do->();
	$recv->clear_faults;
	ok(caught_up(), "$what mid-backfill: the backfill completes");
	like(slurp_file($node->logfile), qr/the backfill of "public"."t" resumes after \d+ rows/,
		"$what mid-backfill: resumed from its checkpoint");
	assert_dest_equals_source($node, 'public', 't', "$what mid-backfill");
	my $twice = records_received() - $received - 3000;
	ok($twice >= 0 && $twice <= 2 * $batch_rows, "$what mid-backfill: $twice records sent twice, within the batches in flight");
	$repeats = repeats();
}

# --- mid-stream ---
for my $crash ([ 'kill -9 of the worker', \&kill_worker ], [ 'kill -9 of the postmaster', \&restart_postmaster ])
{
	my ($what, $do) = @$crash;
	my $acked = sync_status($node, 's', 'records_sent');
	$recv->fault({ kind => 'stall', seconds => 0.2, count => -1 });
	$node->safe_psql('postgres', 'CALL churn(1, 400)');
	ok($node->poll_query_until('postgres', qq{
		SELECT records_sent >= $acked + 150 FROM calabi_push.sync_status WHERE name = 's'}),
		"$what mid-stream: part of the changes acknowledged");
	$do->();
	$recv->clear_faults;
	ok(caught_up(), "$what mid-stream: caught up after recovery");
	assert_dest_equals_source($node, 'public', 't', "$what mid-stream");
	my $r = repeats();
	ok($r - $repeats <= 2 * $batch_rows, "$what mid-stream: " . ($r - $repeats) . ' records sent twice, within the batches in flight');
	$repeats = $r;
}

# --- the crash between the endpoint's 2xx and the checkpoint's commit ---
{
	# the changes of the stalled batch are all after this position; an idle
	# sync may still record its position up to here meanwhile
	my $before = $node->safe_psql('postgres', q{SELECT pg_current_wal_lsn()});
	my $nreq = scalar(@{ ingest_requests($recv, 's') });
	# the endpoint commits the batch, then takes 4 s to say so
	$recv->fault({ kind => 'stall', seconds => 4, count => 1 });
	$node->safe_psql('postgres', 'CALL churn(401, 420)');
	ok(wait_until(sub {
		$node->safe_psql('calabi_dest', q{SELECT count(*) FROM public.t WHERE v = 'upd 401'}) eq '1' }),
		'2xx lost: the endpoint applied the batch');
	is($node->safe_psql('postgres', qq{SELECT cdc_lsn <= '$before' FROM calabi_push.sync WHERE name = 's'}), 't',
		'2xx lost: the checkpoint did not move past the unacknowledged batch');
	kill_worker();
	$recv->clear_faults;
	ok(caught_up(), '2xx lost: caught up after recovery');
	assert_dest_equals_source($node, 'public', 't', '2xx lost');
	# the receiver logs the stalled request once it has slept
	ok(wait_until(sub { grep { ($_->{duration_ms} // 0) >= 4000 } @{ ingest_requests($recv, 's', $nreq) } }),
		'2xx lost: the stalled request is logged');
	my $r = repeats();
	ok($r - $repeats > 0 && $r - $repeats <= 2 * $batch_rows,
		'2xx lost: the unacknowledged batch was sent again (' . ($r - $repeats) . ' records), nothing else');
	$repeats = $r;
}

$recv->stop;
$node->stop;
done_testing();
