# A clean restart (pg_ctl restart -m fast) of a CDC sync under load, while a
# batch is on its way to a slow endpoint: nothing committed is lost, and
# nothing is sent twice.  SIGTERM makes the worker stop cleanly (worker.h,
# CpStopMode): it reads and sends nothing more, awaits the answer to the
# batch in flight (5 s at most), checkpoints it, saves the slot at the
# checkpoint's position and exits, saying so in one LOG line.
#
# When the answer does not come within those 5 s (an endpoint stalled for
# 12 s), the worker exits without it: exactly that batch is sent again
# after the restart (the endpoint had applied it), and nothing is lost.
# Last, a stopped sync's slot, read back from disk after a restart, is at
# the sync's checkpoint.
use strict;
use warnings;

use IPC::Run;
use JSON::PP ();
use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'cleanrestart', receiver => { log_bodies => 1 });
allow_output_plugin($node);

$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
	INSERT INTO t SELECT g, md5(g::text), 0 FROM generate_series(1, 1000) g;
	CREATE PROCEDURE churn(first int, last int) LANGUAGE plpgsql AS $$
	BEGIN
	  FOR i IN first .. last LOOP
	    INSERT INTO t VALUES (100000 + i, 'new ' || i);
	    UPDATE t SET n = n + 1, v = 'upd ' || i WHERE id = 1 + (i * 7) % 1000;
	    DELETE FROM t WHERE id = 1 + (i * 13) % 1000;
	    COMMIT;
	    PERFORM pg_sleep(0.002);
	  END LOOP;
	END $$;
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[], method => 'cdc',
	  options => '{"batch_rows": 100, "chunk_rows": 100}');
	SELECT calabi_push.start_sync('s');
});

sub caught_up { return cdc_caught_up($node, 's') }

# Row versions accepted (2xx) more than once, each repeat once.
sub repeats { return cdc_repeats($recv, 's') }

# Starts the load: rows inserted, updated and deleted, one per transaction.
sub start_load
{
	my ($first) = @_;
	my ($out, $err) = ('', '');
	return IPC::Run::start(
		[ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c', "CALL churn($first, $first + 5000)" ],
		'>', \$out, '2>', \$err);
}

sub clean_stops { my @l = slurp_file($node->logfile) =~ /the sync stopped cleanly[^\n]*\n(?:(?:[^\n]*(?:DETAIL|HINT):  |\t)[^\n]*\n)*[^\n]*CONTEXT:  (?:[^\n]*\n\t)*calabi_push sync "s"\n/g; return scalar @l }

ok(caught_up(), 'backfilled and caught up');
my $repeats = scalar @{ repeats() };

for my $round (1 .. 3)
{
	# every request held 0.3 s after the endpoint committed it: a fast
	# shutdown finds a batch in flight
	$recv->fault({ kind => 'stall', seconds => 0.3, count => -1 });
	my $acked = sync_status($node, 's', 'records_sent');
	my $stops = clean_stops();
	my $load = start_load($round * 10000);
	ok($node->poll_query_until('postgres', qq{
		SELECT records_sent >= $acked + 200 FROM calabi_push.sync_status WHERE name = 's'}),
		"round $round: changes acknowledged under load");
	$node->restart;    # pg_ctl restart: -m fast is its default
	$load->finish;    # the load's session ended with the server
	$recv->clear_faults;
	is(clean_stops(), $stops + 1, "round $round: the worker logged its clean stop");
	ok(caught_up(), "round $round: caught up after the restart");
	assert_dest_equals_source($node, 'public', 't', "round $round: nothing lost");
	my $r = scalar @{ repeats() };
	is($r - $repeats, 0, "round $round: nothing sent twice");
	$repeats = $r;
}

# The endpoint holds one answer for 12 s, longer than the 5 s a stop waits.
{
	my @before = @{ repeats() };
	my $load = start_load(50000);
	ok($node->poll_query_until('postgres', q{
		SELECT records_sent > 0 AND state = 'running' FROM calabi_push.sync_status WHERE name = 's'}),
		'stalled answer: load running');
	$recv->fault({ kind => 'stall', seconds => 12, count => 1 });
	ok(wait_until(sub { !@{ $recv->faults->{queue} } }), 'stalled answer: a batch is held by the endpoint');
	my $offset = -s $node->logfile;
	$node->restart;
	$load->finish;
	my $log = slurp_file($node->logfile, $offset);
	like($log, qr/the sync stopped without the acknowledgement of batch \d+ \(no answer within 5 s\)[^\n]*\n(?:(?:[^\n]*(?:DETAIL|HINT):  |\t)[^\n]*\n)*[^\n]*CONTEXT:  (?:[^\n]*\n\t)*calabi_push sync "s"\n/,
		'stalled answer: the worker said it stopped without the answer');
	my ($seq) = $log =~ /stopped without the acknowledgement of batch (\d+)/;
	ok(caught_up(), 'stalled answer: caught up after the restart');
	# the stalled request is logged when its answer goes out
	ok(wait_until(sub { grep { ($_->{batch_seq} // 0) == $seq } @{ ingest_requests($recv, 's') } }),
		'stalled answer: the endpoint answered at last');
	assert_dest_equals_source($node, 'public', 't', 'stalled answer: nothing lost');

	my ($held) = grep { ($_->{batch_seq} // 0) == $seq } @{ ingest_requests($recv, 's') };
	my @in_batch = sort map { cdc_version_of($_->{record}{data}) }
	  grep { ($_->{type} // '') eq 'RECORD' } map { JSON::PP::decode_json($_) } split /\n/, $held->{body};
	my @again = @{ repeats() };
	splice(@again, 0, scalar @before);
	ok(@in_batch > 0, 'stalled answer: the held batch had records (' . scalar(@in_batch) . ')');
	is_deeply([ sort @again ], \@in_batch, 'stalled answer: exactly that batch was sent again');
	$repeats = scalar @{ repeats() };
}

# stop_sync stops cleanly too; the slot on disk agrees with the checkpoint
{
	my $load = start_load(70000);
	$node->poll_query_until('postgres', q{
		SELECT records_sent > 0 FROM calabi_push.sync_status WHERE name = 's'});
	my $stops = clean_stops();
	$node->safe_psql('postgres', q{SELECT calabi_push.stop_sync('s')});
	ok($node->poll_query_until('postgres', q{
		SELECT pid IS NULL FROM calabi_push.sync_status WHERE name = 's'}), 'stop_sync: the worker exits');
	is(clean_stops(), $stops + 1, 'stop_sync: a clean stop');
	$load->finish;
	$node->restart;
	is($node->safe_psql('postgres', q{
		SELECT s.confirmed_flush_lsn = y.cdc_lsn
		  FROM calabi_push.sync y JOIN pg_replication_slots s
		    ON s.slot_name = 'calabi_push_' || replace(y.id::text, '-', '')
		 WHERE y.name = 's'}), 't', 'after a clean stop, the slot read back from disk is at the checkpoint');
	$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
	ok(caught_up(), 'started again: caught up');
	assert_dest_equals_source($node, 'public', 't', 'started again: nothing lost');
	is(scalar @{ repeats() }, $repeats, 'stop_sync and start_sync: nothing sent twice');
}
unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no process crashed');

$recv->stop;
$node->stop;
done_testing();
