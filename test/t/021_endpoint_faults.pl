# What the endpoint does wrong, and what the sync does about it: a storm of
# 503s and dropped connections (retried, same bytes, same number), 429 with
# Retry-After in seconds and as an HTTP date (honoured), a stall past the
# request timeout (retried), 413 (the batch is split, nothing lost or
# reordered), and a 400 (the sync stops in error, nothing checkpointed; it
# resumes after start_sync once the endpoint is fixed).
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use POSIX qw(strftime);
use CalabiSyncTest;

my ($node, $recv) = sync_setup(
	name => 'faults',
	dest_options => '{"request_timeout": "2s"}');

$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, payload text);
	INSERT INTO t SELECT g, md5(g::text) || repeat(chr(65 + g % 26), 40) FROM generate_series(1, 200) g;
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[],
	  options => '{"batch_rows": 40, "max_backoff": "1s"}');
});

# Run the sync once under the faults given; returns the ingest requests of
# that run.
sub run_with_faults
{
	my ($what, @faults) = @_;
	my $before = scalar(@{ $recv->requests });
	$recv->clear_faults;
	$recv->fault($_) for @faults;
	$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
	ok( $node->poll_query_until('postgres', q{
			SELECT state = 'idle' AND completed_at IS NOT NULL
			  FROM calabi_push.sync_status WHERE name = 's'}),
		"$what: the run completes");
	assert_dest_equals_source($node, 'public', 't', $what);
	my @all = @{ $recv->requests };
	my @ingest = grep { ($_->{path} // '') eq '/ingest' } @all[ $before .. $#all ];
	# refused requests are not parsed: take the number from the header
	$_->{batch_seq} //= $_->{headers}{'Calabi-Batch-Seq'} for @ingest;
	return \@ingest;
}

# the same bytes are retried under the same number until accepted
sub retried_same_number
{
	my ($reqs, $status) = @_;
	my ($failed) = grep { ($_->{status} // 0) == $status } @$reqs;
	return 0 unless $failed;
	my @same = grep { $_->{batch_seq} == $failed->{batch_seq} } @$reqs;
	return (grep { ($_->{status} // 0) == 200 } @same)
	  && !(grep { $_->{body_bytes} != $failed->{body_bytes} } @same);
}

my $reqs = run_with_faults('503 storm',
	{ kind => 'status', status => 503, count => 4 });
is(scalar(grep { ($_->{status} // 0) == 503 } @$reqs), 4, '503 storm: four 503s answered');
ok(retried_same_number($reqs, 503), '503 storm: the same bytes retried under the same number');
like($node->safe_psql('postgres', q{SELECT last_error FROM calabi_push.sync_status WHERE name = 's'}),
	qr/503/, 'the last transient error shows in sync_status');
ok($node->safe_psql('postgres', q{SELECT retries >= 4 FROM calabi_push.sync_status WHERE name = 's'}),
	'retries are counted');

$reqs = run_with_faults('dropped connection', { kind => 'drop', count => 2 });

# Retry-After in seconds: the retry waits that long (the backoff alone
# would wait about one second)
my $t0 = time();
$reqs = run_with_faults('429 Retry-After: 3',
	{ kind => 'retry_after', status => 429, retry_after => '3' });
ok(time() - $t0 >= 3, '429: Retry-After seconds honoured');
ok(retried_same_number($reqs, 429), '429: same bytes, same number');

# Retry-After as an HTTP date, 3 seconds ahead
$t0 = time();
$reqs = run_with_faults('429 Retry-After: <date>',
	{
		kind => 'retry_after',
		status => 429,
		retry_after => strftime('%a, %d %b %Y %H:%M:%S GMT', gmtime(time() + 4))
	});
ok(time() - $t0 >= 2.5, '429: Retry-After HTTP date honoured');

# a stall past the 2 s request timeout is a transient failure: the batch is
# sent again, and the receiver, which did store the stalled request in the
# end, answers the repeat with 409 (that Idempotency-Key was accepted)
$reqs = run_with_faults('stall', { kind => 'stall', seconds => 4 });
is(scalar(grep { ($_->{status} // 0) == 409 } @$reqs), 1,
	'stall: the batch was sent again after the timeout, under the same number');
# the receiver logs the stalled request when its stall ends: wait for it, so
# that it is not taken for a request of the next scenario
my $deadline = time() + 30;
sleep 0.2
  until time() > $deadline
  || grep { ($_->{fault} && $_->{fault}{kind} eq 'stall') } @{ $recv->requests };

# 413: halves, each under a new number, until they fit; order kept
$reqs = run_with_faults('413', { kind => 'max_bytes', bytes => 1500, count => -1 });
my @too_large = grep { ($_->{status} // 0) == 413 } @$reqs;
ok(scalar(@too_large) >= 1, '413: some batches were too large');
my @ok_seqs = map { $_->{batch_seq} } grep { ($_->{status} // 0) == 200 } @$reqs;
is_deeply([ sort { $a <=> $b } @ok_seqs ], \@ok_seqs, '413: accepted batches in order');
my %refused = map { $_->{batch_seq} => 1 } @too_large;
ok(!(grep { $refused{$_} } @ok_seqs), '413: a refused number is never reused');

# The same faults with uncompressed bodies, which are sent from the batch
# where its lines were written, the STATE line apart: a retry and a split
# send exactly the bytes a first attempt would.
$node->safe_psql('postgres',
	q{SELECT calabi_push.alter_destination('recv', options => '{"compression": "none"}')});
$reqs = run_with_faults('uncompressed 503 storm',
	{ kind => 'status', status => 503, count => 3 });
ok(retried_same_number($reqs, 503), 'uncompressed 503 storm: the same bytes retried under the same number');
ok(!(grep { defined $_->{headers}{'Content-Encoding'} } @$reqs),
	'uncompressed: no Content-Encoding header');
# 40 rows of about 100 bytes: gzip would make them a fifth of that
ok((grep { ($_->{body_bytes} // 0) > 4000 } @$reqs),
	'uncompressed: a 40-row body is the whole NDJSON');
run_with_faults('uncompressed dropped connection', { kind => 'drop', count => 2 });
$reqs = run_with_faults('uncompressed 413', { kind => 'max_bytes', bytes => 4000, count => -1 });
@too_large = grep { ($_->{status} // 0) == 413 } @$reqs;
ok(scalar(@too_large) >= 1, 'uncompressed 413: some batches were too large');
@ok_seqs = map { $_->{batch_seq} } grep { ($_->{status} // 0) == 200 } @$reqs;
is_deeply([ sort { $a <=> $b } @ok_seqs ], \@ok_seqs, 'uncompressed 413: accepted batches in order');
$node->safe_psql('postgres',
	q{SELECT calabi_push.alter_destination('recv', options => '{"compression": null}')});

# 400: the sync stops in error; nothing of that batch is checkpointed
$recv->clear_faults;
$recv->fault({ kind => 'refuse', status => 400, error => 'stream t is closed', count => -1 });
$node->safe_psql('postgres', q{
	UPDATE t SET payload = 'changed' WHERE id <= 10;
	SELECT calabi_push.start_sync('s');
});
ok(wait_for_state($node, 's', 'error'), '400: the sync stops in error');
like(sync_status($node, 's', 'last_error'), qr/HTTP 400.*stream t is closed/,
	'400: sync_status shows the status and the start of the body');
is($node->safe_psql('postgres', q{
	SELECT phase || ' ' || rows_sent FROM calabi_push.stream_status WHERE sync = 's'}),
	'pending 0', '400: nothing was checkpointed (the new run had not begun)');
$node->safe_psql('postgres', q{SELECT pg_sleep(1.5)});
is(sync_status($node, 's', 'state'), 'error', '400: not restarted by itself');
is(scalar(grep { ($_->{status} // 0) == 400 } @{ $recv->requests }), 1,
	'400: the refused batch was not retried');

# fixed: start_sync resumes and completes
run_with_faults('after a 400, fixed');

$recv->stop;
$node->stop;
done_testing();
