# A 2,000,000-row transaction with logical_decoding_work_mem = 64kB: the
# reorder buffer spills it to disk, the worker ships it in order from inside
# its replay, batch after batch, with bounded memory, and confirms the slot
# only after its commit is acknowledged.  Smaller transactions are never
# split across batches.  Stopping the sync while its sending thread has an
# uncompressed batch of megabytes, again and again, crashes nothing.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my $rows = 2_000_000;
# the receiver checks every message but stores nothing: landing two million
# rows in its database would take minutes and measure the receiver
my ($node, $recv) = sync_setup(name => 'cdcbig', conf => 'logical_decoding_work_mem = 64kB',
	receiver => { no_store => 1, validate => 'light' });
allow_output_plugin($node);

$node->safe_psql('postgres', q{
	CREATE TABLE big (id int PRIMARY KEY, v text, at timestamptz);
	CREATE TABLE small (id int PRIMARY KEY, v text);
	SELECT calabi_push.create_sync('big', 'recv', ARRAY['big', 'small']::regclass[], method => 'cdc',
	  options => '{"batch_rows": 20000}');
	SELECT calabi_push.start_sync('big');
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM calabi_push.stream_status WHERE sync = 'big' AND phase = 'done'}),
	'backfilled (empty)');

my $pid = sync_status($node, 'big', 'pid');
$node->safe_psql('postgres', qq{
	INSERT INTO small VALUES (1, 'before');
	INSERT INTO big SELECT g, md5(g::text), now() FROM generate_series(1, $rows) g;
	INSERT INTO small VALUES (2, 'after');
});
my $lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');

# the worker's peak memory while it ships the transaction
my $peak = 0;
ok(wait_until(sub {
	if (open my $fh, '<', "/proc/$pid/status")
	{
		while (<$fh>) { $peak = $1 if /^VmHWM:\s+(\d+) kB/ && $1 > $peak }
		close $fh;
	}
	$node->safe_psql('postgres', qq{
		SELECT lsn_acknowledged >= '$lsn' FROM calabi_push.sync_status WHERE name = 'big'}) eq 't';
}, 600), 'the transaction is delivered and acknowledged');
is(sync_status($node, 'big', 'pid'), $pid, 'by the same worker, without a restart');
note("worker peak resident memory: $peak kB");
ok($peak > 0 && $peak < 256 * 1024, "bounded worker memory: peak $peak kB for $rows rows");

# the big one went out in batches of at most batch_rows, in order, every
# row once
my @reqs = grep { ($_->{status} // 0) == 200 } @{ ingest_requests($recv, 'big') };
my @seqs = map { $_->{batch_seq} } @reqs;
my @records = map { $_->{types}{RECORD} // 0 } @reqs;
my $total = 0;
$total += $_ for @records;
is($total, $rows + 2, 'every row arrived, once');
is_deeply([ sort { $a <=> $b } @seqs ], \@seqs, 'batches in order');
ok(!(grep { $_ > 20000 } @records), 'no batch above batch_rows');
ok(scalar(@reqs) >= $rows / 20000, scalar(@reqs) . ' batches');
# batches of megabytes are compressed in pieces by two threads: still one
# gzip member each, as a strict decoder expects
my ($largest) = sort { $b <=> $a } map { $_->{body_bytes_uncompressed} // 0 } @reqs;
ok(!(grep { ($_->{gzip_members} // 0) != 1 } @reqs) && $largest > 1024 * 1024,
	"each body is a single gzip member, even of several megabytes (largest: $largest bytes)");

# transactions are not split across batches unless one alone exceeds the
# limits: 60 transactions of 300 rows, batches of at most 1,000 rows
my $seen = scalar(@{ ingest_requests($recv, 'big') });
$node->safe_psql('postgres', q{
	SELECT calabi_push.stop_sync('big');
	CREATE PROCEDURE txns() LANGUAGE plpgsql AS $$
	BEGIN
	  FOR i IN 1 .. 60 LOOP
	    INSERT INTO small SELECT i * 1000 + g, 'txn ' || i FROM generate_series(1, 300) g;
	    COMMIT;
	  END LOOP;
	END $$;
	CALL txns();
});
$node->safe_psql('postgres', q{
	UPDATE calabi_push.sync SET options = options || '{"batch_rows": 1000}' WHERE name = 'big';
	SELECT calabi_push.start_sync('big');
});
$lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok($node->poll_query_until('postgres', qq{
	SELECT lsn_acknowledged >= '$lsn' FROM calabi_push.sync_status WHERE name = 'big'}),
	'60 transactions of 300 rows delivered');
my @after = grep { ($_->{status} // 0) == 200 && ($_->{types}{RECORD} // 0) > 0 }
  @{ ingest_requests($recv, 'big', $seen) };
my @counts = map { $_->{types}{RECORD} } @after;
my $sum = 0;
$sum += $_ for @counts;
is($sum, 18000, 'every row once');
is(scalar(grep { $_ % 300 != 0 || $_ > 1000 } @counts), 0,
	'each batch holds whole transactions, at most 1,000 rows: ' . join(',', @counts));

# Stopped again and again while uncompressed batches of megabytes are being
# sent by the worker's sending thread: the worker takes each transfer back
# and exits cleanly (a crash would restart the whole cluster), and a last
# run delivers the transaction whole.
my $more = 300_000;
$node->safe_psql('postgres', q{
	SELECT calabi_push.stop_sync('big');
	SELECT calabi_push.alter_destination('recv', options => '{"compression": "none"}');
	UPDATE calabi_push.sync SET options = options || '{"batch_rows": 20000}' WHERE name = 'big';
});
ok(wait_for_state($node, 'big', 'stopped'), 'stopped before the next big transaction');
$node->safe_psql('postgres', qq{
	INSERT INTO big SELECT g, md5(g::text), now() FROM generate_series($rows + 1, $rows + $more) g});
$lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$seen = scalar(@{ ingest_requests($recv, 'big') });
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
