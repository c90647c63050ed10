# Running out of max_worker_processes is visible: a sync that cannot get a
# background worker shows the state waiting_for_worker in sync_status, the
# server log says so once (not at every attempt), and once a worker is free
# the sync starts by itself.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiSyncTest;

# the logical replication launcher, calabi_push's launcher and one sync
my ($node, $recv) = sync_setup(
	name => 'exhausted',
	conf => "max_worker_processes = 3\nmax_parallel_workers_per_gather = 0\n");

sub sql { $node->safe_psql('postgres', shift) }

sql(q{
	CREATE TABLE t (id int PRIMARY KEY);
	INSERT INTO t SELECT generate_series(1, 10);
	SELECT calabi_push.create_sync('first', 'recv', ARRAY['t']::regclass[],
	         options => '{"schedule": "1 hour"}');
	SELECT calabi_push.create_sync('second', 'recv', ARRAY['t']::regclass[],
	         options => '{"schedule": "1 hour"}');
	SELECT calabi_push.start_sync('first');
});
ok(wait_for_state($node, 'first', 'idle'), 'the first sync has the one free worker');

my $offset = -s $node->logfile;
sql(q{SELECT calabi_push.start_sync('second')});
ok(wait_for_state($node, 'second', 'waiting_for_worker'),
	'the second sync shows that it waits for a worker');

sub warnings_logged
{
	my $log = substr(slurp_file($node->logfile), $offset);
	my $n = () = $log =~ /WARNING:  calabi_push could not start a background worker/g;
	return $n;
}
# the launcher tries again every 5 s: three attempts at least
sleep 12;
is(sync_status($node, 'second', 'state'), 'waiting_for_worker', 'it still waits');
is(warnings_logged(), 1, 'the server log said it once, not at every attempt');
like(substr(slurp_file($node->logfile), $offset), qr/HINT:  Raise max_worker_processes/,
	'with the hint');

sql(q{SELECT calabi_push.stop_sync('first')});
ok(wait_for_state($node, 'second', 'idle'), 'a worker freed: the waiting sync runs by itself');
ok(wait_until(sub { slurp_file($node->logfile) =~ /LOG:  calabi_push could start background workers again/ }),
	'the log says the situation ended');
is(sync_status($node, 'first', 'state'), 'stopped', 'the first is stopped');

$recv->stop;
$node->stop;
done_testing();
