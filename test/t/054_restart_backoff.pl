# A worker that keeps failing backs off (1 s, doubling), whatever the state
# it reached before failing; only an acknowledged batch resets the backoff.
# A relation dropped from under a sync is permanent: the sync stops in
# 'error' with its hint, and no worker is started again for it.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::Local qw(timegm);
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'backoff');

sub sql { $node->safe_psql('postgres', shift) }

sql(q{
	CREATE ROLE reader;
	GRANT USAGE ON SCHEMA calabi_push TO reader;
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 10) g;
	GRANT SELECT ON t TO reader;
	SELECT calabi_push.create_sync('fails', 'recv', ARRAY['t']::regclass[],
	         options => '{"run_as": "reader", "schedule": "1 hour"}');
	SELECT calabi_push.start_sync('fails');
});
ok(wait_for_state($node, 'fails', 'idle'), 'the sync ran once');

# From now on every run fails at once, before anything is delivered.
my $offset = -s $node->logfile;
sql(q{REVOKE SELECT ON t FROM reader; SELECT calabi_push.resync('fails')});

# the times at which the worker failed, from the log (millisecond stamps)
sub failure_times
{
	my @times;
	my $log = substr(slurp_file($node->logfile), $offset);
	while ($log =~ /^(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)\.(\d+) \S+ \[\d+\] \S*\s*ERROR:\s+permission denied for relation "t"/mg)
	{
		push @times, timegm($6, $5, $4, $3, $2 - 1, $1) + $7 / 1000;
	}
	return @times;
}

ok(wait_until(sub { failure_times() >= 5 }, 60), 'the worker failed five times');
my @t = failure_times();
my @gaps = map { $t[$_] - $t[ $_ - 1 ] } 1 .. 4;
note('gaps between failures: ' . join(' ', map { sprintf('%.2f s', $_) } @gaps));
# 1 s, 2 s, 4 s, 8 s, with launcher wake-up slack; a worker restarted every
# second (the defect) would show four gaps of about one second
cmp_ok($gaps[1], '>', $gaps[0] * 1.5, 'the second delay is longer than the first');
cmp_ok($gaps[2], '>', $gaps[1] * 1.5, 'the third delay is longer than the second');
cmp_ok($gaps[3], '>=', 7, 'the fourth delay is about 8 s');
is(sync_status($node, 'fails', 'state'), 'retrying', 'the sync is retrying, with its error');
like(sync_status($node, 'fails', 'last_error'), qr/permission denied/, 'last_error says why');

# Granted again: the next attempt delivers and the sync is healthy again.
sql(q{GRANT SELECT ON t TO reader});
ok(wait_for_state($node, 'fails', 'idle'), 'after GRANT the sync recovers by itself');

# A dropped relation cannot come back: the sync stops in error at once.
sql(q{
	CREATE TABLE gone (id int PRIMARY KEY);
	SELECT calabi_push.create_sync('dropped', 'recv', ARRAY['gone']::regclass[],
	         options => '{"schedule": "1 hour"}');
	SELECT calabi_push.start_sync('dropped');
});
ok(wait_for_state($node, 'dropped', 'idle'), 'the second sync ran once');
sql(q{DROP TABLE gone; SELECT calabi_push.resync('dropped')});
ok(wait_for_state($node, 'dropped', 'error'), 'a dropped relation stops the sync in error');
like(sync_status($node, 'dropped', 'last_error'), qr/no longer exists/,
	'last_error says the relation no longer exists');
my $errors = () = substr(slurp_file($node->logfile), $offset) =~ /a relation of sync "dropped" no longer exists/g;
sleep 3;
my $later = () = substr(slurp_file($node->logfile), $offset) =~ /a relation of sync "dropped" no longer exists/g;
is($later, $errors, 'no worker is started again for it');
is(sync_status($node, 'dropped', 'pid'), '', 'and none runs');

done_testing();
