# A long backfill does not pin the vacuum horizon: each chunk is read in a
# short transaction of its own, so while a CDC sync backfills a large table
# (slowly: the endpoint holds every batch), rows made dead after the
# backfill began — in the table being read and in another one — are removed
# by VACUUM as soon as the backfill has moved to a later chunk, and the
# worker never shows a snapshot older than the chunk it reads.  A control
# (a session holding a snapshot) shows that the same VACUUM would report
# them as not removable.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

# no autovacuum: an ANALYZE's snapshot would hold the horizon by itself
my ($node, $recv) = sync_setup(name => 'horizon', conf => 'autovacuum = off',
	receiver => { no_store => 1 });
allow_output_plugin($node);

$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 30000) g;
	CREATE TABLE other (id int PRIMARY KEY, v text);
	INSERT INTO other SELECT g, 'x' FROM generate_series(1, 1000) g;
	VACUUM t, other;
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[], method => 'cdc',
	  options => '{"batch_rows": 1000, "chunk_rows": 1000}');
});

# VACUUM VERBOSE of a table: (removed, dead but not yet removable)
sub vacuum
{
	my ($table) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "VACUUM (VERBOSE) $table");
	die "VACUUM $table failed: $err" if $ret;
	my ($removed, $kept) = $err =~ /tuples: (\d+) removed, \d+ remain, (\d+) are dead but not yet removable/
	  or die "unexpected VACUUM VERBOSE output: $err";
	return ($removed, $kept);
}

sub rows_sent
{
	return $node->safe_psql('postgres', q{SELECT rows_sent FROM calabi_push.stream_status WHERE sync = 's'});
}

# each batch (one chunk) held 0.4 s by the endpoint: 30 chunks, 12 s
$recv->fault({ kind => 'stall', seconds => 0.4, count => -1 });
$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
ok($node->poll_query_until('postgres', q{
	SELECT phase = 'reading' AND rows_sent >= 3000 FROM calabi_push.stream_status WHERE sync = 's'}),
	'the backfill is under way');
my $pid = sync_status($node, 's', 'pid');

for my $round (1 .. 2)
{
	# dead rows, made now: in chunks already read, and elsewhere
	my $xid = $node->safe_psql('postgres', qq{
		BEGIN;
		UPDATE t SET v = 'round $round' WHERE id <= 500;
		UPDATE other SET v = 'round $round';
		SELECT txid_current();
		COMMIT;
	});
	my $sent = rows_sent();
	ok($node->poll_query_until('postgres', qq{
		SELECT phase = 'reading' AND rows_sent >= $sent + 2000 FROM calabi_push.stream_status WHERE sync = 's'}),
		"round $round: the backfill moved on by two chunks, still reading");
	# the worker's snapshot, when it has one, is the chunk's: newer than
	# the transaction committed before it
	is($node->safe_psql('postgres', qq{
		SELECT backend_xmin IS NULL OR backend_xmin::text::bigint > $xid
		  FROM pg_stat_activity WHERE pid = $pid}), 't',
		"round $round: the worker holds no snapshot older than the current chunk");
	my ($removed, $kept) = vacuum('t');
	is($kept, 0, "round $round: VACUUM of the table being backfilled: nothing dead is kept");
	ok($removed >= 500, "round $round: ... it removed the $removed rows made dead during the backfill");
	($removed, $kept) = vacuum('other');
	is($kept, 0, "round $round: VACUUM of another table: nothing dead is kept");
	is($removed, 1000, "round $round: ... it removed the 1000 rows made dead");
}
is($node->safe_psql('postgres', q{SELECT phase FROM calabi_push.stream_status WHERE sync = 's'}),
	'reading', 'all of it while the backfill was reading');

# the control: a snapshot held by a session does pin the horizon
my ($in, $out, $err) = ('', '', '');
my $h = IPC::Run::start([ 'psql', '-X', '-q', '-A', '-t', '-d', $node->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err);
$in .= "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 'holding', count(*) FROM other;\n";
$h->pump until $out =~ /holding/;
$node->safe_psql('postgres', q{UPDATE other SET v = 'control'});
my ($removed, $kept) = vacuum('other');
is($kept, 1000, 'control: a session holding a snapshot keeps the rows VACUUM would remove');
$in .= "COMMIT;\n\\q\n";
$h->finish;

$recv->clear_faults;
ok($node->poll_query_until('postgres', q{
	SELECT phase = 'done' FROM calabi_push.stream_status WHERE sync = 's'}), 'the backfill completes');

$recv->stop;
$node->stop;
done_testing();
