# The xmin method across transaction id wraparound and freezing.  The
# cluster's next transaction id is moved as a DBA would (every database
# frozen, pg_resetwal -x 2147483648, frozen again, pg_resetwal -x 4294934528,
# which sits on a commit-log page boundary), then transactions are consumed
# past 2^32 (a new epoch) between runs.
#
#   - rows written between two runs that are almost 2^31 transactions apart
#     (the first jump) are sent, and only they;
#   - a position more than 2^31 transactions old is not judged: the stream
#     is read whole again under a new generation, and stream_status says why;
#   - rows written before the wrap and after it, between two runs, all
#     arrive: a tuple's 32-bit xmin is told apart from the ids of the
#     previous run's snapshot (kept as 64-bit ids), and rows frozen by
#     VACUUM FREEZE after they were written (freezing keeps the raw xmin)
#     are still sent;
#   - a transaction open across the wrap (its id below 2^32, committed at
#     an id above it) is not sent while it runs, and is sent by the run
#     after its commit;
#   - the positions in stream_status carry ids above 2^32 after the wrap.
#
# Known limit (docs/syncs.md, "Across wraparound"): a row frozen more than 2^32 transactions ago
# whose raw 32-bit xmin, read in the current epoch, falls at or after the
# previous run's snapshot xmax (or on one of its running ids) cannot be
# told from a new one: such a run sends it again, when its page is examined
# (nothing is lost).  Here the rows written in the cluster's first
# transactions (epoch 0, xmin about 740) read as 2^32 + 740, inside run 4's
# window (run 3's snapshot, just below 2^32, to the next id past the wrap);
# run 5 compares with a snapshot whose xmax is past that: exact again.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;
use CalabiXminTest;

my $two31 = 2**31;
my $two32 = 2**32;

# autovacuum off: the test decides when rows are frozen (anti-wraparound
# vacuums still run when the server needs them)
my ($node, $recv) = sync_setup(name => 'xminwrap', receiver => { log_bodies => 1 },
	conf => 'autovacuum = off');
my $bindir = $node->config_data('--bindir');

$node->safe_psql('postgres', q{
	ALTER DATABASE template0 ALLOW_CONNECTIONS true;
	CREATE EXTENSION pageinspect;
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;
	CREATE TABLE u (id int PRIMARY KEY, v text);
	INSERT INTO u SELECT g, 'u' || g FROM generate_series(1, 50) g;
	-- n transactions, each with an id
	CREATE PROCEDURE burn_xids(n int8) LANGUAGE plpgsql AS $$
	BEGIN
		FOR i IN 1 .. n LOOP
			PERFORM pg_current_xact_id();
			COMMIT;
		END LOOP;
	END $$;
	-- the ids of the rows of t whose tuple is frozen (xmin committed and
	-- invalid: HEAP_XMIN_FROZEN), among those given
	CREATE FUNCTION frozen_ids(ids int[]) RETURNS int[] LANGUAGE sql AS $$
		SELECT coalesce(array_agg(t.id ORDER BY t.id), '{}')
		  FROM t, heap_page_items(get_raw_page('t', (t.ctid::text::point)[0]::int)) h
		 WHERE t.id = ANY (ids) AND h.lp = (t.ctid::text::point)[1]::int
		   AND h.t_infomask & 768 = 768
	$$;
	-- "w" runs between every step; "old" only before the jumps and after them
	SELECT calabi_push.create_sync('w', 'recv', ARRAY['t']::regclass[], method => 'xmin',
	  options => '{"chunk_rows": 10, "batch_rows": 25}');
	SELECT calabi_push.create_sync('old', 'recv', ARRAY['u']::regclass[], method => 'xmin',
	  options => '{"chunk_rows": 10, "batch_rows": 25}');
});

sub next_xid
{
	return $node->safe_psql('postgres', 'SELECT txid_current()');
}

# Consume transactions until the next id is $target (a 64-bit id).
sub burn_to
{
	my ($target) = @_;
	my $n = $target - next_xid();
	$node->safe_psql('postgres', "CALL burn_xids($n)") if $n > 0;
}

# VACUUM FREEZE every database, and check that the server assigns ids again.
sub freeze_all
{
	my ($what) = @_;
	$node->command_ok([ "$bindir/vacuumdb", '--all', '--freeze', '--quiet' ],
		"$what: every database frozen");
	my ($ret, $out, $err) = $node->psql('postgres', 'SELECT txid_current()');
	is($ret, 0, "$what: the server assigns transaction ids") or diag($err);
}

# Stop the node, set its next transaction id to $xid (32 bits, the epoch
# kept) with pg_resetwal, and start it again.  The server wants the
# commit-log segment of the new id to exist at start (pg_xact/NNNN, xid /
# 2^20 in 4 hex digits: 32 pages of 8 kB, 4 ids a byte), zero-filled.  On
# PostgreSQL 15 -x alone does: multixacts are untouched (no -m), the WAL
# goes on past its end (no -l), and no -O is needed; -x sets oldestXid to
# $xid - 2e9, which forces anti-wraparound vacuums.  After the first jump
# the databases' datfrozenxid (~740) is 2^31 - ~750 ids behind, past the
# stop limit: the server assigns no id until every database is frozen
# again (freeze_all), hence the check below assigns none.
sub jump_xid
{
	my ($xid) = @_;
	my $dir = $node->data_dir;
	$node->stop;
	my $segment = sprintf('%s/pg_xact/%04X', $dir, int($xid / (32 * 8192 * 4)));
	unless (-e $segment)
	{
		open(my $fh, '>', $segment) or die "$segment: $!";
		binmode $fh;
		print $fh "\0" x (32 * 8192);
		close $fh;
	}
	system_or_bail("$bindir/pg_resetwal", '-x', $xid, '-D', $dir);
	$node->start;
	# no id assigned: the server may refuse until every database is frozen
	my $next = $node->safe_psql('postgres', 'SELECT pg_snapshot_xmax(pg_current_snapshot())');
	ok($next >= $xid && $next < $xid + 1000, "next transaction id set to $xid (now $next)");
}

# The since snapshot of a stream's checkpoint, as [xmin, xmax, xip...].
sub since_ids
{
	my ($sync) = @_;
	return [ split /[:,]/, xmin_checkpoint($node, $sync // 'w', 'since') ];
}

# Checks that run $n of sync w sent every row of @$want, each once, and
# (unless $old_window: the limit above) nothing else; any other row sent
# must be one written in the cluster's first transactions (32-bit xmin
# below 1000: more than 2^32 ids ago).
sub check_run
{
	my ($n, $since, $want, $name, $old_window) = @_;
	my $sent = run_records($recv, 'w', $since);
	my %sent = map { $_ => 1 } @$sent;
	my @missing = grep { !$sent{$_} } @$want;
	is("@missing", '', "run $n: nothing missing ($name)");
	my %want = map { $_ => 1 } @$want;
	my @extra = grep { !$want{$_} } @$sent;
	my $old = @extra ? $node->safe_psql('postgres',
		'SELECT count(*) FROM t WHERE xmin::text::int8 < 1000 AND id IN (' . join(',', @extra) . ')') : 0;
	is($old, scalar @extra, "run $n: every other row sent is one written more than 2^32 ids ago ("
		  . scalar(@extra) . ')');
	my %seen;
	is(scalar(grep { $seen{$_}++ } @$sent), 0, "run $n: no row sent twice");
	is_deeply($sent, $want, "run $n sent exactly $name") unless $old_window;
}

# run 1: the full reads, in the cluster's first transactions
my $since = xmin_run($node, $recv, 'w');
is(xmin_checkpoint($node, 'w', 'read'), 'full', 'run 1 is a full read');
is_deeply(run_records($recv, 'w', $since), [ 1 .. 100 ], 'run 1 sent every row once');
$since = xmin_run($node, $recv, 'old');
is_deeply(run_records($recv, 'old', $since), [ 1 .. 50 ], 'sync old: its full read');
my $old_generation = xmin_checkpoint($node, 'old', 'generation');

# rows written after run 1; the jump to 2^31 (almost 2^31 ids after run 1)
$node->safe_psql('postgres', q{
	INSERT INTO t SELECT g, 'before the jump to 2^31' FROM generate_series(101, 105) g;
	UPDATE t SET v = 'updated before the jump to 2^31' WHERE id = 3;
});
freeze_all('before the first jump');
jump_xid($two31);
freeze_all('after the jump to 2^31');
is($node->safe_psql('postgres', q{SELECT frozen_ids(ARRAY[3, 101, 105])}), '{3,101,105}',
	'the rows written since run 1 are frozen');

# run 2: incremental, 2^31 - ~750 ids after run 1: the rows written since
$since = xmin_run($node, $recv, 'w');
is(xmin_checkpoint($node, 'w', 'read'), 'incremental', 'run 2 is incremental');
is_deeply(run_records($recv, 'w', $since), [ 3, 101 .. 105 ],
	'run 2 sent exactly the rows written (and frozen) since run 1');
cmp_ok(since_ids()->[0], '>=', $two31, 'run 2: its position is past 2^31');
assert_dest_equals_source($node, 'public', 't', 'run 2');

# rows written after run 2; the jump to 2^32 - 32768
$node->safe_psql('postgres', q{
	INSERT INTO t SELECT g, 'before the jump to 2^32 - 32768' FROM generate_series(111, 115) g;
	UPDATE t SET v = 'updated before the second jump' WHERE id = 4;
});
freeze_all('before the second jump');
jump_xid(4294934528);
freeze_all('after the jump to 2^32 - 32768');
is($node->safe_psql('postgres', q{SELECT frozen_ids(ARRAY[4, 111, 115])}), '{4,111,115}',
	'the rows written since run 2 are frozen');

# run 3: incremental, 2^31 - 32768 - ~20 ids after run 2
$since = xmin_run($node, $recv, 'w');
is(xmin_checkpoint($node, 'w', 'read'), 'incremental', 'run 3 is incremental');
is_deeply(run_records($recv, 'w', $since), [ 4, 111 .. 115 ],
	'run 3 sent exactly the rows written (and frozen) since run 2');
cmp_ok(since_ids()->[1], '<', $two32, 'run 3: its position is below 2^32');
assert_dest_equals_source($node, 'public', 't', 'run 3');

# sync old: its position is more than 2^31 ids old: read whole
$since = xmin_run($node, $recv, 'old');
is(xmin_checkpoint($node, 'old', 'read'), 'full', 'sync old, ~2^32 ids later: a full read');
like($node->safe_psql('postgres', q{
	SELECT read || ': ' || full_read_reason FROM calabi_push.stream_status WHERE sync = 'old'}),
	qr/^full: the position of the previous run \(transaction \d+\) is more than 2\^31 transactions old/,
	'sync old: stream_status says why');
cmp_ok(xmin_checkpoint($node, 'old', 'generation'), '>', $old_generation, 'sync old: a new generation');
is_deeply(run_records($recv, 'old', $since), [ 1 .. 50 ], 'sync old: every row sent once');
assert_dest_equals_source($node, 'public', 'u', 'sync old');

# between run 3 and run 4: rows before the wrap, a transaction opened before
# it and left open, the wrap, rows after it, a VACUUM FREEZE
$node->safe_psql('postgres', q{
	INSERT INTO t SELECT g, 'before the wrap' FROM generate_series(201, 210) g;
	UPDATE t SET v = 'updated before the wrap' WHERE id IN (5, 102);
});
burn_to($two32 - 2000);
$node->safe_psql('postgres', q{
	INSERT INTO t SELECT g, 'just before the wrap' FROM generate_series(211, 220) g;
});
my $late = $node->background_psql('postgres');
$late->query_safe(q{
	BEGIN;
	INSERT INTO t VALUES (501, 'opened before the wrap, committed after it');
	UPDATE t SET v = 'late' WHERE id = 9;
});
my $late_xid = $late->query_safe('SELECT pg_current_xact_id()');
cmp_ok($late_xid, '<', $two32, "the open transaction's id ($late_xid) is below 2^32");

burn_to($two32 + 5000);
my $after = next_xid();
cmp_ok($after, '>=', $two32, "the counter wrapped: next id $after (epoch "
	  . int($after / $two32) . ')');
$node->safe_psql('postgres', q{
	INSERT INTO t SELECT g, 'after the wrap' FROM generate_series(301, 310) g;
	UPDATE t SET v = 'updated after the wrap' WHERE id IN (7, 203);
	VACUUM (FREEZE) t;
});
# rows committed before the open transaction began are frozen by now
is($node->safe_psql('postgres', q{SELECT frozen_ids(ARRAY[5, 102, 201, 210, 211, 220])}),
	'{5,102,201,210,211,220}', 'the rows written before the wrap are frozen');
my $xmin301 = $node->safe_psql('postgres', 'SELECT xmin FROM t WHERE id = 301');
cmp_ok($xmin301, '<', 10000, "a row written after the wrap has a small 32-bit xmin ($xmin301)");

# run 4: everything written since run 3, before and after the wrap, not the
# open transaction
$since = xmin_run($node, $recv, 'w');
is(xmin_checkpoint($node, 'w', 'read'), 'incremental', 'run 4 is incremental');
check_run(4, $since, [ 5, 7, 102, 201 .. 220, 301 .. 310 ],
	'the rows committed since run 3, before and after the wrap', 1);
my $run4 = since_ids();
is($run4->[0], $late_xid, "run 4's position: its xmin is the open transaction (below 2^32)");
cmp_ok($run4->[1], '>', $two32, "run 4's position: its xmax is above 2^32");
ok((grep { $_ == $late_xid } @{$run4}[ 2 .. $#$run4 ]), "run 4's position: the open transaction runs");
is($node->safe_psql('postgres', q{
	SELECT read || ' ' || coalesce(full_read_reason, 'no reason') || ' '
	       || (split_part(position, ':', 2)::numeric >= 2^32)
	  FROM calabi_push.stream_status WHERE sync = 'w'}),
	'incremental no reason true', 'stream_status: run 4 incremental, its position\'s xmax above 2^32');
# the open transaction's rows are not there yet, nor needed
assert_dest_equals_source($node, 'public', 't', 'run 4');

$late->query_safe('COMMIT');
$late->quit;

# after the commit: more rows, all frozen
$node->safe_psql('postgres', q{
	INSERT INTO t SELECT g, 'after the wrap, after the late commit' FROM generate_series(401, 410) g;
	UPDATE t SET v = 'updated again' WHERE id IN (104, 301);
	VACUUM (FREEZE) t;
});
is($node->safe_psql('postgres', q{SELECT frozen_ids(ARRAY[9, 104, 301, 401, 410, 501])}),
	'{9,104,301,401,410,501}', 'the rows written since run 4 are frozen');

# run 5: the late transaction and what came after it
$since = xmin_run($node, $recv, 'w');
check_run(5, $since, [ 9, 104, 301, 401 .. 410, 501 ],
	'the late transaction\'s rows and the rows written since run 4');
my $run5 = since_ids();
ok(!(grep { $_ < $two32 } @$run5), "run 5's position has only ids above 2^32 (@$run5)");
is($node->safe_psql('postgres', q{
	SELECT split_part(position, ':', 1)::numeric >= 2^32 FROM calabi_push.stream_status WHERE sync = 'w'}),
	't', 'stream_status shows a position above 2^32');
assert_dest_equals_source($node, 'public', 't', 'run 5');

# run 6: the previous position is past 2^32 + 740: exact again
$node->safe_psql('postgres', q{
	INSERT INTO t SELECT g, 'well after the wrap' FROM generate_series(601, 605) g;
	UPDATE t SET v = 'updated well after the wrap' WHERE id IN (10, 111);
	VACUUM (FREEZE) t;
});
$since = xmin_run($node, $recv, 'w');
is_deeply(run_records($recv, 'w', $since), [ 10, 111, 601 .. 605 ],
	'run 6 sent exactly the rows written since run 5');
assert_dest_equals_source($node, 'public', 't', 'run 6');

# run 7: nothing changed, nothing sent
$since = xmin_run($node, $recv, 'w');
is_deeply(run_records($recv, 'w', $since), [], 'run 7 sent nothing');
is(xmin_checkpoint($node, 'w', 'read'), 'incremental', 'run 7 is incremental');

$recv->stop;
$node->stop;
done_testing();
