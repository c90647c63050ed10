# A 2,000,000-row transaction with logical_decoding_work_mem = 64kB: the
# reorder buffer spills it to disk, the worker ships it in order from inside
# its replay, batch after batch, with bounded memory, and confirms the slot
# only after its commit is acknowledged.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my $rows = 2_000_000;
# the receiver checks every message but stores nothing: landing two million
# rows in its database would take minutes and measure the receiver
my ($node, $recv) = cdc_sync_setup(
	setup => { name => 'cdcbig', conf => 'logical_decoding_work_mem = 64kB',
		receiver => { no_store => 1, validate => 'light' } },
	sql => q{
		CREATE TABLE big (id int PRIMARY KEY, v text, at timestamptz);
		CREATE TABLE small (id int PRIMARY KEY, v text);
	},
	sync => 'big', relations => [ 'big', 'small' ], options => '{"batch_rows": 20000}');
$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('big')});
ok(cdc_backfilled($node, 'big'), 'backfilled (empty)');

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

$recv->stop;
$node->stop;
done_testing();
