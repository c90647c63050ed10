# CDC through repeated kill -9 of the postmaster under a write workload
# (issue 14): pgbench clients insert, update and delete a keyed table, some
# in large transactions, some with synchronous_commit = off, while the
# postmaster (and so, once they notice, every process) is killed with
# SIGKILL mid-stream, then restarted.  Afterwards the sync catches up, in
# time, and the destination equals the source: nothing stalls, nothing is
# skipped.  The last rounds run with synchronous_commit = off for the
# whole database of the sync, the sync's own worker included.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use CalabiPushTest;
use CalabiSyncTest;

my $rows = 20000;
my ($node, $recv) = cdc_sync_setup(
	setup => { name => 'cdckill9',
		conf => "restart_after_crash = on\ninclude_if_exists = 'test_stop_at.conf'" },
	sql => qq{
		CREATE TABLE t (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
		INSERT INTO t SELECT g, md5(g::text), 0 FROM generate_series(1, $rows) g;
	},
	sync => 's', relations => ['t'],
	options => q{{"batch_rows": 200, "chunk_rows": 2000}});
# the endpoint's commits stay durable whatever the sync's database does
$node->safe_psql('postgres', q{ALTER DATABASE calabi_dest SET synchronous_commit = on});
$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
ok(cdc_caught_up($node, 's'), 'backfilled and caught up');

my $dir = PostgreSQL::Test::Utils::tempdir;
PostgreSQL::Test::Utils::append_to_file("$dir/small.sql", <<"SQL");
\\set a random(1, $rows)
\\set b random(1, $rows)
INSERT INTO t VALUES (:a, 'ins ' || :a) ON CONFLICT (id) DO UPDATE SET n = t.n + 1, v = 'ups ' || :b;
UPDATE t SET n = n + 1, v = 'upd ' || :a WHERE id = :b;
DELETE FROM t WHERE id = (:a * 7) % $rows + 1;
SQL
PostgreSQL::Test::Utils::append_to_file("$dir/large.sql", <<"SQL");
\\set a random(1, $rows - 1000)
BEGIN;
INSERT INTO t SELECT g, 'big ' || g FROM generate_series(:a, :a + 299) g
  ON CONFLICT (id) DO UPDATE SET n = t.n + 1, v = 'bigup';
DELETE FROM t WHERE id BETWEEN :a + 100 AND :a + 180;
COMMIT;
SQL

# pgbench in the background until killed with the server (or $seconds),
# at a rate the test's receiver keeps up with on a small machine (about
# 1,500 rows a second): a crash then lands while the sync streams, not
# only while it works through a backlog
sub start_workload
{
	my ($seconds, $async) = @_;
	local $ENV{PGOPTIONS} = $async ? '-c synchronous_commit=off' : '';
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'pgbench', '-n', '-c', '4', '-j', '2', '-T', $seconds, '-R', '100',
		  '-f', "$dir/small.sql\@30", '-f', "$dir/large.sql\@1",
		  '-h', $node->host, '-p', $node->port, 'postgres' ],
		'>', \$out, '2>', \$err);
	return $h;
}

# kill -9 of the postmaster: its children notice its death and exit (they
# hold the shared memory, which a new postmaster refuses to share), then
# the server starts again and recovers.
sub kill9_and_restart
{
	my ($what) = @_;
	my $pidfile = $node->data_dir . '/postmaster.pid';
	my ($pm) = split /\n/, slurp_file($pidfile);
	my @children = grep { /\d/ } split /\s+/, `ps -o pid= --ppid $pm`;
	kill 'KILL', $pm;
	my $gone = wait_until(sub { !grep { kill 0, $_ } ($pm, @children) }, 30);
	ok($gone, "$what: every process of the killed server exited")
	  or diag('still running: ' . `ps -o pid,args -p @{[ join(',', $pm, @children) ]}`),
	  kill('KILL', @children);
	# stale once its processes are gone (the framework refuses to start
	# over one; the postmaster itself would not)
	unlink $pidfile;
	$node->_update_pid(0);
	$node->start;
}

sub sync_diag
{
	diag($node->safe_psql('postgres', q{
		SELECT row_to_json(s) FROM calabi_push.sync_status s WHERE name = 's'}));
	diag($node->safe_psql('postgres', q{
		SELECT row_to_json(r) FROM pg_replication_slots r}));
	diag('current WAL: ' . $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()'));
}

# rounds: [what, async workload, seconds before the kill, how to pick the moment]
my @rounds = (
	[ 'synchronous workload', 0, 3 ],
	[ 'asynchronous workload', 1, 2 ],
	[ 'right after an acknowledgement', 1, 'ack' ],
	[ 'asynchronous workload again', 1, 4 ],
	[ 'database-wide asynchronous commit', 'db', 3 ],
	[ 'database-wide asynchronous commit, after an acknowledgement', 'db', 'ack' ],
);
for my $round (@rounds)
{
	my ($what, $async, $when) = @$round;
	if ($async eq 'db')
	{
		# the worker starts after the crash with it too
		$node->safe_psql('postgres', q{ALTER DATABASE postgres SET synchronous_commit = off});
	}
	my $h = start_workload(60, $async);
	if ($when eq 'ack')
	{
		sleep 2;
		my $acked = sync_status($node, 's', 'batches_sent');
		wait_until(sub { sync_status($node, 's', 'batches_sent') > $acked }, 10);
	}
	else
	{
		usleep($when * 1_000_000 + int(rand(1_000_000)));
	}
	kill9_and_restart($what);
	$h->finish;
	# (the receiver's pooled connections to the destination, on the killed
	# server too, fail once: a 503, retried; so the sync may pass through
	# retrying before it runs)
	ok(wait_for_state($node, 's', 'running'), "$what: the sync runs after the restart")
	  or diag(sync_status($node, 's', q{state || ': ' || coalesce(last_error, '')}));
}

# a last stretch of workload with no crash, then quiet
my $h = start_workload(3, 0);
$h->finish;
ok(cdc_caught_up($node, 's'), 'after the workload: caught up') or sync_diag();
is(sync_status($node, 's', 'state'), 'running', 'no error');
assert_dest_equals_source($node, 'public', 't', 'after the kills');

# --- synchronous_commit = off for the whole server, the sync's worker
# included: its checkpoint's commit is then not flushed when it confirms
# the slot, which saves the slot to disk at once.  A crash right there (the
# worker SIGKILLs itself at the test point, and with restart_after_crash =
# off the server goes down) lost the commit but not the slot: the slot came
# back ahead of the checkpoint and the sync stopped for good ("is ahead of
# the sync's checkpoint"), with nothing more arriving.  The worker flushes
# its own commits whatever the setting. ---
{
	my $stop_conf = $node->data_dir . '/test_stop_at.conf';
	$node->safe_psql('postgres', q{
		ALTER DATABASE postgres RESET synchronous_commit;
		ALTER SYSTEM SET synchronous_commit = off;
		SELECT pg_reload_conf();
		SELECT calabi_push.stop_sync('s');
	});
	ok($node->poll_query_until('postgres', q{
		SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name LIKE 'calabi_push_%'}),
		'server-wide asynchronous commit: the sync is stopped');
	# batches wait for the worker when it starts
	$node->safe_psql('postgres', "UPDATE t SET n = n + 1 WHERE id % 40 = $_") for 0 .. 19;
	append_to_file($stop_conf, "calabi_push.test_stop_at = 'after_confirm'\nrestart_after_crash = off\n");
	$node->reload;
	$node->poll_query_until('postgres', q{SELECT current_setting('calabi_push.test_stop_at') = 'after_confirm'});
	$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
	ok(wait_until(sub { !-e $node->data_dir . '/postmaster.pid' }),
		'server-wide asynchronous commit: the worker crashed once the slot was confirmed');
	$node->_update_pid(0);
	unlink $stop_conf or die "$stop_conf: $!";
	$node->start;
	# an error stops the sync: no use waiting for it to catch up then
	my $lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	ok($node->poll_query_until('postgres', qq{
		SELECT state = 'error' OR lsn_acknowledged >= '$lsn' FROM calabi_push.sync_status WHERE name = 's'}),
		'server-wide asynchronous commit: caught up after the crash, or stopped') or sync_diag();
	is(sync_status($node, 's', 'state'), 'running',
		'server-wide asynchronous commit: the sync resumes without error')
	  or diag(sync_status($node, 's', 'last_error'));
	assert_dest_equals_source($node, 'public', 't', 'server-wide asynchronous commit');
}

$recv->stop;
$node->stop;
done_testing();
