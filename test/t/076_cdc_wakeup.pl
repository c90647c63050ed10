# An idle CDC worker sleeps until a commit in its database wakes it
# (src/wakeup.c): with the fallback poll made far too slow to explain it,
# every committed change still reaches the endpoint within moments.  A
# change whose commit announces nothing (a session with
# calabi_push.test_commit_wakeup off) is not seen until something wakes
# the worker: a reload, or the fallback poll once it is short again.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use CalabiPushTest;
use CalabiSyncTest;

# autovacuum off: its commits would wake the worker too, and the test must
# know every commit made in the database
my ($node, $recv) = sync_setup(name => 'wakeup', receiver => { log_bodies => 1 },
	conf => "autovacuum = off\ncalabi_push.test_fallback_poll_ms = '10min'");
allow_output_plugin($node);

$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'backfilled' FROM generate_series(1, 10) g;
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[], method => 'cdc');
	SELECT calabi_push.start_sync('s');
});
ok($node->poll_query_until('postgres', q{
	SELECT state = 'running' AND
	       (SELECT bool_and(phase = 'done') FROM calabi_push.stream_status WHERE sync = 's')
	  FROM calabi_push.sync_status WHERE name = 's'}),
	'backfilled');

# Whether the record of key $id reached the receiver.
sub arrived
{
	my ($id) = @_;
	return scalar grep { ($_->{type} // '') eq 'RECORD' && $_->{record}{data}{id} == $id }
	  @{ sent_messages($recv, 's') };
}

# Seconds from committing $sql to the arrival of key $id; undef if it did
# not arrive within $timeout.
sub seconds_to_arrive
{
	my ($id, $sql, $timeout) = @_;
	my $t0 = time();
	$node->safe_psql('postgres', $sql);
	return wait_until(sub { arrived($id) }, $timeout) ? time() - $t0 : undef;
}

ok(wait_until(sub { arrived(10) }), 'the backfill arrived');
# the worker has nothing left to do: it sleeps, for up to 10 minutes
sleep 2;

# Ten minutes of fallback: only the commit's wake-up can bring a change
# within seconds, each time.
for my $id (101 .. 105)
{
	my $s = seconds_to_arrive($id, "INSERT INTO t VALUES ($id, 'woken')", 60);
	ok(defined $s && $s < 5,
		"committed change $id arrives within 5 s, not at the 10-minute fallback ("
		  . ($s // 'never') . ' s)');
	sleep 1;
}

# A commit that announces nothing is not seen: nothing else wakes the worker.
$node->safe_psql('postgres', q{
	SET calabi_push.test_commit_wakeup = off;
	INSERT INTO t VALUES (201, 'not announced');
});
sleep 3;
ok(!arrived(201), 'a change whose commit announced nothing waits for the next poll');

# A reload wakes the worker (SIGHUP sets its latch): it reads the change,
# and polls every 2 s from now on.
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET calabi_push.test_fallback_poll_ms = '2s';
	SELECT pg_reload_conf();
});
ok(wait_until(sub { arrived(201) }, 30), 'woken by the reload, the worker reads it');
sleep 1;

# The fallback poll alone finds WAL that no commit announced.
my $s = seconds_to_arrive(202, q{
	SET calabi_push.test_commit_wakeup = off;
	INSERT INTO t VALUES (202, 'not announced either');
}, 30);
ok(defined $s, 'the fallback poll finds a change no commit announced ('
	  . ($s // 'never') . ' s)');

is(sync_status($node, 's', "state || coalesce(last_error, '')"), 'running', 'running, no error');
$recv->stop;
$node->stop;
done_testing();
