# sync_status.lag_time of a CDC sync is the age of the oldest committed
# change not yet acknowledged by the endpoint: 0 when caught up; while the
# endpoint stalls on the batch that holds a change, it grows with the stall
# (and lag_bytes counts the WAL since the acknowledged position); once the
# endpoint answers, it is back to about 0.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'lag');
allow_output_plugin($node);

sub sql { $node->safe_psql('postgres', shift) }

# Waits until the sync acknowledged everything committed so far.
sub caught_up
{
	my $lsn = sql('SELECT pg_current_wal_lsn()');
	return $node->poll_query_until('postgres', qq{
		SELECT lsn_acknowledged >= '$lsn' OR state = 'error'
		  FROM calabi_push.sync_status WHERE name = 'lag'});
}

# (lag_time in seconds, lag_bytes, state)
sub lag
{
	return split /\|/, sql(q{
		SELECT extract(epoch FROM lag_time), lag_bytes, state
		  FROM calabi_push.sync_status WHERE name = 'lag'});
}

sql(q{
	CREATE TABLE orders (id int PRIMARY KEY, status text);
	INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 100) g;
	SELECT calabi_push.create_sync('lag', 'recv', ARRAY['orders']::regclass[], method => 'cdc');
	SELECT calabi_push.start_sync('lag');
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM calabi_push.stream_status WHERE sync = 'lag' AND phase = 'done'}),
	'the table is backfilled');
ok(caught_up(), 'caught up after the backfill');
is(sync_status($node, 'lag', "state || coalesce(last_error, '')"), 'running', 'running, no error');

# caught up: no lag (the worker may be reading its own catalog writes for a
# moment: that is a few milliseconds, counted from when it was caught up)
ok($node->poll_query_until('postgres', q{
	SELECT lag_time = interval '0' FROM calabi_push.sync_status WHERE name = 'lag'}),
	'caught up: lag_time is 0');

# the endpoint stalls 10 s on the next batch, then accepts it
my $STALL = 10;
$recv->fault({ kind => 'stall', seconds => $STALL, count => 1 });
my $t0 = time();
sql(q{INSERT INTO orders VALUES (1000, 'during the stall')});
my $lsn = sql('SELECT pg_current_wal_lsn()');

# sample for about 6 s while the batch is stalled
my @samples;
while (time() - $t0 < 6)
{
	my ($secs, $bytes, $state) = lag();
	push @samples, { at => time() - $t0, lag => $secs, bytes => $bytes, state => $state };
	usleep(250_000);
}
note(join(' ', map { sprintf('%.2f:%s/%s', $_->{at}, $_->{lag}, $_->{bytes}) } @samples));
my $last = $samples[-1];
ok(time() - $t0 < $STALL, 'the samples were all taken during the stall')
  or diag('the machine was too slow for this test: the stall ended before the sampling');
ok(defined $last->{lag} && $last->{lag} >= 4,
	"stalled endpoint: lag_time grows with the stall (at ${\sprintf('%.1f', $last->{at})} s: $last->{lag} s)");
my @late = grep { $_->{at} >= 1 } @samples;
ok(@late && !grep({ $_->{lag} <= 0 } @late),
	'stalled endpoint: lag_time is never 0 once the change is waiting');
my $grows = 1;
for my $i (1 .. $#late)
{
	$grows = 0 if $late[$i]{lag} < $late[ $i - 1 ]{lag};
}
ok($grows, 'stalled endpoint: lag_time only grows while nothing is acknowledged');
ok(!grep({ !defined $_->{bytes} || $_->{bytes} <= 0 } @late),
	'stalled endpoint: lag_bytes > 0 during the stall');
is($last->{state}, 'running', 'stalled endpoint: the sync is running (the request is in flight)');

# the stall ends, the batch is accepted: back to about 0
ok($node->poll_query_until('postgres', qq{
	SELECT lsn_acknowledged >= '$lsn' FROM calabi_push.sync_status WHERE name = 'lag'}),
	'the change is acknowledged after the stall');
ok($node->poll_query_until('postgres', q{
	SELECT lag_time < interval '1 s' FROM calabi_push.sync_status WHERE name = 'lag'}),
	'acknowledged: lag_time is back to about 0');
is(sql(q{SELECT count(*) FROM orders}), '101', 'source row count');
is($node->safe_psql('calabi_dest', q{SELECT count(*) FROM public.orders WHERE id = 1000}), '1',
	'the change made during the stall landed');

# a stopped sync has no worker: lag_time is NULL, lag_bytes still counts
sql(q{SELECT calabi_push.stop_sync('lag')});
ok(wait_for_state($node, 'lag', 'stopped'), 'stopped');
sql(q{INSERT INTO orders VALUES (1001, 'while stopped')});
is(sync_status($node, 'lag', "(lag_time IS NULL)::text || ' ' || (lag_bytes > 0)::text"), 'true true',
	'stopped: lag_time is NULL, lag_bytes > 0');

sql(q{SELECT calabi_push.drop_sync('lag')});
done_testing();
