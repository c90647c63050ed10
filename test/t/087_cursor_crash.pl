# Crashes of a cursor sync.
#
# A view, read in cursor order through a held cursor: kill -9 of the worker
# in the middle of its full read, and of an incremental one, where 25 rows
# share each cursor value (chunks of 5, batches of 7: a tie spans several
# chunks and batches).  The run resumes, after recovery, at the largest
# value acknowledged, inclusive.  Every row the run had to send arrives at
# least once; a row arrives twice only if its cursor is at least that
# value; and the rows sent twice are at most the ties at that value (sent
# again on purpose: a row added later with the same value could not be
# told from them) plus one batch: a batch's STATE is committed once the
# endpoint acknowledged it, and the worker sends the next only once that
# answer came (delivery.c), so the endpoint holds at most one batch past
# the committed position when the worker dies: at most batch_rows rows
# past the resumed value are sent twice.
#
# A table: kill -9 of the postmaster (an immediate stop) between runs
# loses nothing: after the next run the destination, deduplicated by key,
# equals the source.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;
use CalabiXminTest;

my $batch_rows = 7;
my ($node, $recv) = sync_setup(name => 'cursorcrash', receiver => { log_bodies => 1 },
	conf => 'restart_after_crash = on');

# 300 rows, 25 a value (k 1 .. 12), and 6 without a cursor
$node->safe_psql('postgres', qq{
	CREATE TABLE base (id int PRIMARY KEY, k int, v text);
	INSERT INTO base SELECT g, (g - 1) / 25 + 1, md5(g::text) FROM generate_series(1, 300) g;
	INSERT INTO base SELECT g, NULL, 'no cursor' FROM generate_series(301, 306) g;
	CREATE VIEW cv AS SELECT id, k, v FROM base;
	SELECT calabi_push.create_sync('v', 'recv', ARRAY['cv']::regclass[], method => 'cursor',
	  options => '{"cursor": "k", "chunk_rows": 5, "batch_rows": $batch_rows}');
});

# The cursor value of each row of base now: id => k (undef: NULL).
sub source_k
{
	my %k;
	for (split /\n/, $node->safe_psql('postgres', 'SELECT id, k FROM base'))
	{
		my ($id, $k) = split /\|/;
		$k{$id} = $k eq '' ? undef : $k;
	}
	return \%k;
}

# Starts a run of sync v slowed by the receiver (each request answered
# half a second late), kills its worker once $rows rows are acknowledged,
# and checks the resumed run: what it sent against @$want (the ids it had
# to send), the rows sent twice against the resumed value.
sub kill_view_worker_mid_read
{
	my ($what, $rows, $want) = @_;
	my $log = -s $node->logfile;
	my $before = scalar @{ $recv->requests };
	my $k = source_k();
	$recv->fault({ kind => 'stall', seconds => 0.5, count => -1 });
	$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('v')});
	ok($node->poll_query_until('postgres', qq{
		SELECT rows_sent >= $rows AND phase = 'reading'
		  FROM calabi_push.stream_status WHERE sync = 'v'}), "$what: part acknowledged");
	my $pid = $node->safe_psql('postgres', q{SELECT pid FROM calabi_push.sync_status WHERE name = 'v'});
	ok($pid =~ /^\d+$/, "$what: the worker runs");
	my $after = $node->safe_psql('postgres', q{
		SELECT checkpoint->'after'->>0 FROM calabi_push.stream_status WHERE sync = 'v'});
	kill 'KILL', $pid;
	$node->poll_query_until('postgres', 'SELECT true');
	$recv->clear_faults;
	ok($node->poll_query_until('postgres', q{
		SELECT st.phase = 'done' AND s.state = 'idle' AND s.completed_at IS NOT NULL AND s.pid IS NULL
		  FROM calabi_push.sync_status s JOIN calabi_push.stream_status st ON st.sync = s.name
		 WHERE s.name = 'v'}), "$what: the run completes after recovery");
	my $server_log = slurp_file($node->logfile, $log);
	my ($resumed) = $server_log =~ /resuming the \w+ read of "public"\."cv" at (\S+) after \d+ rows/;
	ok(defined $resumed, "$what: resumed at a value") or diag($server_log);
	$resumed //= -1;
	cmp_ok($resumed, '>=', $after, "$what: at the value acknowledged before the kill ($after) or past it");

	my $sent = run_data($recv, 'v', $before);
	my %times;
	$times{ $_->{id} }++ for @$sent;
	my @missing = grep { !$times{$_} } @$want;
	is(scalar @missing, 0, "$what: every row it had to send was sent")
	  or diag("missing: @missing");
	my @unwanted = grep { my $id = $_; !grep { $_ == $id } @$want } keys %times;
	is(scalar @unwanted, 0, "$what: no other row was sent") or diag("unwanted: @unwanted");
	my @twice = grep { $times{$_} > 1 } keys %times;
	my @below = grep { !defined $k->{$_} || $k->{$_} < $resumed } @twice;
	is(scalar @below, 0, "$what: no row below the resumed value $resumed was sent again")
	  or diag("sent again below it: @below");
	cmp_ok((grep { $times{$_} > 2 } keys %times), '==', 0, "$what: no row sent three times");
	my $ties = grep { defined $k->{$_} && $k->{$_} == $resumed } keys %$k;
	my $at = grep { $k->{$_} == $resumed } @twice;
	my $past = grep { $k->{$_} > $resumed } @twice;
	cmp_ok($at, '<=', $ties, "$what: $at rows at $resumed sent twice, at most its $ties ties");
	cmp_ok($past, '<=', $batch_rows,
		"$what: $past rows past $resumed sent twice, at most the $batch_rows of the batch in flight");
	cmp_ok($at + $past, '>', 0, "$what: the kill landed mid-read (rows were sent again)");
	return $resumed;
}

# run 1, full: killed mid-read, with ties at every value
kill_view_worker_mid_read('full read', 100, [ 1 .. 306 ]);
is(xmin_checkpoint($node, 'v', 'read'), 'full', 'the resumed run stayed a full read');
is(xmin_checkpoint($node, 'v', 'since'), '12', 'the position is the largest value');

# run 2, incremental: every other row's cursor moves past the largest
# value, 12 or 13 rows to each of the values 13 .. 24; the 12 rows still
# at 12 are sent again with them
$node->safe_psql('postgres', q{UPDATE base SET k = k + 12, v = 'moved' WHERE id % 2 = 0 AND k IS NOT NULL});
my @want = split /\n/, $node->safe_psql('postgres', 'SELECT id FROM base WHERE k >= 12 ORDER BY id');
is(scalar @want, 162, '162 rows at or past the largest value');
kill_view_worker_mid_read('incremental read', 60, \@want);
is(xmin_checkpoint($node, 'v', 'read'), 'incremental', 'the resumed run stayed incremental');
is(xmin_checkpoint($node, 'v', 'since'), '24', 'the position moved to the new largest value');

# the destination (append) holds every version of every row: each row's
# latest version among them
my %dest = map { my ($id, $k, $v) = split /\|/; ($id => "$k|$v") } split /\n/,
  $node->safe_psql('calabi_dest', q{
	SELECT DISTINCT ON (id) id, k, v FROM public.cv ORDER BY id, _calabi_emitted_at DESC, k DESC NULLS LAST});
my %src = map { my ($id, $k, $v) = split /\|/; ($id => "$k|$v") } split /\n/,
  $node->safe_psql('postgres', 'SELECT id, k, v FROM base');
is_deeply(\%dest, \%src, 'the destination holds each row\'s current version');

# a table: kill -9 of the postmaster between runs, changes waiting
$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text, updated_at timestamptz NOT NULL);
	INSERT INTO t SELECT g, 'v' || g, '2026-01-01 00:00:00+00'::timestamptz + (g / 10) * interval '1 minute'
	  FROM generate_series(1, 500) g;
	SELECT calabi_push.create_sync('t', 'recv', ARRAY['t']::regclass[], method => 'cursor',
	  options => '{"cursor": "updated_at", "chunk_rows": 20, "batch_rows": 50}');
});
is($node->safe_psql('postgres', q{SELECT destination_sync_mode FROM calabi_push.sync WHERE name = 't'}),
	'append_dedup', 'the table syncs append_dedup');
my $since = method_run($node, $recv, 't');
is_deeply(run_records($recv, 't', $since), [ 1 .. 500 ], 'table: run 1 sent every row once');
assert_dest_equals_source($node, 'public', 't', 'table: run 1');
my $cursor = xmin_checkpoint($node, 't', 'cursor');
is($cursor, '2026-01-01 00:50:00+00', 'table: the largest cursor value sent is kept');

$node->safe_psql('postgres', q{
	UPDATE t SET v = 'updated', updated_at = '2026-01-01 01:00:00+00' WHERE id IN (3, 300);
	UPDATE t SET v = 'cursor not moved' WHERE id = 7;
	UPDATE t SET v = 'cursor moved back', updated_at = '2025-01-01 00:00:00+00' WHERE id = 8;
	INSERT INTO t VALUES (501, 'new', '2026-01-01 00:50:00+00'), (502, 'new, old cursor', '2020-01-01 00:00:00+00');
});
$node->stop('immediate');
$node->start;
is(xmin_checkpoint($node, 't', 'cursor'), $cursor, 'table: the position survived the crash');
$since = method_run($node, $recv, 't');
is(xmin_checkpoint($node, 't', 'read'), 'incremental', 'table: the run after the crash is incremental');
is_deeply(run_records($recv, 't', $since), [ 3, 7, 8, 300, 501, 502 ],
	'table: the run after the crash sent exactly the rows written since the previous run');
assert_dest_equals_source($node, 'public', 't', 'table: after a postmaster crash between runs');
is(xmin_checkpoint($node, 't', 'cursor'), '2026-01-01 01:00:00+00', 'table: the largest value moved');

# and again, the crash right after a run: nothing changed, nothing lost
$node->stop('immediate');
$node->start;
$since = method_run($node, $recv, 't');
is_deeply(run_records($recv, 't', $since), [], 'table: a run after a crash with nothing changed sends nothing');
assert_dest_equals_source($node, 'public', 't', 'table: after a second crash');

$recv->stop;
$node->stop;
done_testing();
