# Stopping a CDC sync while its sending thread has an uncompressed batch of
# megabytes, again and again, crashes nothing: the worker takes each
# transfer back and exits cleanly, and a last run delivers the transaction.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

# the receiver checks every message but stores nothing (as in 043)
my ($node, $recv) = cdc_sync_setup(
	setup => { name => 'cdcstop', conf => 'logical_decoding_work_mem = 64kB',
		receiver => { no_store => 1, validate => 'light' } },
	sql => 'CREATE TABLE big (id int PRIMARY KEY, v text, at timestamptz)',
	sync => 'big', relations => ['big'], options => '{"batch_rows": 20000}');
$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('big')});
ok(cdc_backfilled($node, 'big'), 'backfilled (empty)');

# Stopped again and again while uncompressed batches of megabytes are being
# sent by the worker's sending thread: the worker takes each transfer back
# and exits cleanly (a crash would restart the whole cluster), and a last
# run delivers the transaction whole.
my $more = 300_000;
$node->safe_psql('postgres', q{
	SELECT calabi_push.stop_sync('big');
	SELECT calabi_push.alter_destination('recv', options => '{"compression": "none"}');
});
ok(wait_for_state($node, 'big', 'stopped'), 'stopped before the next big transaction');
$node->safe_psql('postgres', qq{
	INSERT INTO big SELECT g, md5(g::text), now() FROM generate_series(1, $more) g});
my $lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $seen = scalar(@{ ingest_requests($recv, 'big') });
my $log_start = -s $node->logfile;
my $interrupted = 0;
for my $round (1 .. 5)
{
	my $before = scalar(@{ ingest_requests($recv, 'big') });
	$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('big')});
	# stop once batches are going out
	wait_until(sub { scalar(@{ ingest_requests($recv, 'big') }) >= $before + 2 }, 60);
	$node->safe_psql('postgres', q{SELECT calabi_push.stop_sync('big')});
	ok(wait_for_state($node, 'big', 'stopped'), "round $round: stopped while sending");
	$interrupted++
	  if $node->safe_psql('postgres', qq{
		SELECT lsn_acknowledged < '$lsn' FROM calabi_push.sync_status WHERE name = 'big'}) eq 't';
}
ok($interrupted >= 3, "$interrupted of 5 runs were stopped before the transaction was acknowledged");
$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('big')});
ok($node->poll_query_until('postgres', qq{
	SELECT lsn_acknowledged >= '$lsn' FROM calabi_push.sync_status WHERE name = 'big'}),
	'the last run delivers the transaction');
my $log = slurp_file($node->logfile, $log_start);
unlike($log, qr/terminated by signal|terminating any other active server processes/,
	'no process crashed: the cluster never restarted');
my @plain = grep { ($_->{status} // 0) == 200 } @{ ingest_requests($recv, 'big', $seen) };
ok(!(grep { defined $_->{headers}{'Content-Encoding'} } @plain) && @plain > 0,
	'the bodies were uncompressed');
my $last_run = 0;
$last_run += $_->{types}{RECORD} // 0 for @plain;
ok($last_run >= $more, "at least every row arrived ($last_run records over all runs)");

$recv->stop;
$node->stop;
done_testing();
