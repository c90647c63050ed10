# The life of syncs and their workers, as a user sees it: stop_sync ends a
# worker stuck in a slow request or in a retry wait at once; start/stop in
# the wrong state are errors with a hint; drop_sync stops a running worker; a
# destination in use cannot be dropped; a server restart in the middle of a
# read resumes it from its checkpoint (same generation, nothing sent twice);
# a sync of a second database runs, also after a restart; ALTER DATABASE
# RENAME and a DROP DATABASE that fails let its worker start again; DROP
# DATABASE and DROP EXTENSION with a running sync succeed promptly and crash
# nothing (a rolled-back DROP EXTENSION stops nothing); a configuration
# reload breaks nothing; privileges (EXECUTE, run_as's SELECT, row-level
# security); a worker that fails is restarted with backoff and recovers by
# itself.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use CalabiReceiver;
use CalabiSyncTest;

my ($node, $recv, $token) = sync_setup(name => 'life');

sub sql { $node->safe_psql('postgres', shift) }

sub make_table
{
	my ($db, $name, $rows) = @_;
	$node->safe_psql($db, qq{
		CREATE TABLE $name (id int PRIMARY KEY, label text, amount numeric);
		INSERT INTO $name SELECT g, '$name row ' || g, g * 0.5 FROM generate_series(1, $rows) g;
	});
}

# A stall of $seconds on every ingest request, unapplied (the receiver
# sleeps, then answers 503 without storing anything).  It is queued with a
# large count rather than -1 so that stalls_taken() can tell how many
# requests it has caught so far.
my $STALL_COUNT = 1000;

sub stall_fault
{
	my ($seconds) = @_;
	return { kind => 'stall', seconds => $seconds, apply => JSON::PP::false, count => $STALL_COUNT };
}

sub stalls_taken
{
	my ($r, $seconds) = @_;
	for my $f (@{ $r->faults->{queue} })
	{
		return $STALL_COUNT - $f->{count}
		  if $f->{kind} eq 'stall' && $f->{seconds} == $seconds && $f->{count} > 0;
	}
	return -1;
}

# Wait until the receiver holds at least $n requests in the stall.
sub wait_stalled
{
	my ($r, $seconds, $n) = @_;
	return wait_until(sub { stalls_taken($r, $seconds) >= $n }, 60);
}

sub worker_alive
{
	my ($pid) = @_;
	return sql("SELECT count(*) FROM pg_stat_activity WHERE pid = $pid") eq '1';
}

# Wait for the process $pid to leave pg_stat_activity; returns the seconds
# it took from $t0, or undef.
sub wait_worker_gone
{
	my ($pid, $t0) = @_;
	return undef unless $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid");
	return time() - $t0;
}

sub log_since
{
	my ($offset) = @_;
	return substr(slurp_file($node->logfile), $offset);
}

sub crash_lines
{
	my ($log) = @_;
	return join("\n", grep { /terminated by signal|server process .* was terminated|PANIC|was terminated by exception/ }
		  split /\n/, $log);
}

my $sync_options = '{"batch_rows": 10, "chunk_rows": 10, "max_backoff": "1s"}';

# ---------------------------------------------------------------------------
# (a) stop_sync during a stalled request; start/stop errors; drop_sync;
#     drop_destination while in use
# ---------------------------------------------------------------------------
make_table('postgres', 'a_t', 50);
sql(qq{SELECT calabi_push.create_sync('a', 'recv', ARRAY['a_t']::regclass[], options => '$sync_options')});
$recv->fault(stall_fault(60));
sql(q{SELECT calabi_push.start_sync('a')});
ok(wait_stalled($recv, 60, 1), 'a request of sync a is stalled at the receiver');
my $pid = sync_status($node, 'a', 'pid');
like($pid, qr/^\d+$/, 'sync_status shows the worker pid');
is(sql("SELECT backend_type || ' / ' || application_name FROM pg_stat_activity WHERE pid = $pid"),
	'calabi_push sync / calabi_push sync a', 'the worker is in pg_stat_activity under its names');
is(sync_status($node, 'a', 'state'), 'running', 'the sync is running');

my $err = sql_error($node, 'postgres', q{SELECT calabi_push.start_sync('a')});
is($err && $err->{sqlstate}, '55000', 'start_sync of a running sync: SQLSTATE 55000');
like($err && $err->{message}, qr/already running/, 'start_sync of a running sync: "already running"');
like($err && $err->{hint}, qr/stop_sync.*resync/, 'start_sync of a running sync: a hint (stop_sync, resync)');

$err = sql_error($node, 'postgres', q{SELECT calabi_push.drop_destination('recv')});
is($err && $err->{sqlstate}, '2BP01', 'drop_destination of a destination in use: refused (2BP01)');
like($err && $err->{detail}, qr/\ba\b/, 'drop_destination refused: the detail names the sync');
ok($err && $err->{hint}, 'drop_destination refused: with a hint');
is(sql(q{SELECT count(*) FROM calabi_push.destinations WHERE name = 'recv'}), '1', 'the destination is still there');

my $t0 = time();
sql(q{SELECT calabi_push.stop_sync('a')});
my $took = wait_worker_gone($pid, $t0);
ok(defined $took && $took < 10,
	sprintf('stop_sync: the worker stuck in a 60 s request exits promptly (%.1f s)', $took // -1));
is(sync_status($node, 'a', "state || ' ' || coalesce(pid::text, 'no pid')"), 'stopped no pid',
	'stop_sync: state stopped, no worker');
is(scalar(grep { ($_->{status} // 0) == 200 } @{ ingest_requests($recv, 'a') }), 0,
	'nothing of sync a was accepted');

$err = sql_error($node, 'postgres', q{SELECT calabi_push.stop_sync('a')});
is($err && $err->{sqlstate}, '55000', 'stop_sync of a stopped sync: SQLSTATE 55000');
like($err && $err->{message}, qr/not running/, 'stop_sync of a stopped sync: "not running"');
like($err && $err->{hint}, qr/start_sync/, 'stop_sync of a stopped sync: a hint (start_sync)');

# stop_sync during a retry wait (Retry-After: 120)
$recv->clear_faults;
$recv->fault({ kind => 'retry_after', status => 429, retry_after => '120', count => 1 });
sql(q{SELECT calabi_push.start_sync('a')});
ok($node->poll_query_until('postgres', q{
	SELECT state = 'retrying' AND next_attempt_at > now() + interval '60 seconds' AND pid IS NOT NULL
	  FROM calabi_push.sync_status WHERE name = 'a'}),
	'sync a waits 120 s to retry (Retry-After), next_attempt_at says when');
$pid = sync_status($node, 'a', 'pid');
$t0 = time();
sql(q{SELECT calabi_push.stop_sync('a')});
$took = wait_worker_gone($pid, $t0);
ok(defined $took && $took < 10,
	sprintf('stop_sync: the worker waiting to retry exits promptly (%.1f s)', $took // -1));
is(sync_status($node, 'a', "state || ' ' || coalesce(pid::text, 'no pid')"), 'stopped no pid',
	'stop_sync during a retry wait: state stopped, no worker');

# drop_sync of a running sync
$recv->clear_faults;
$recv->fault(stall_fault(60));
my $before = stalls_taken($recv, 60);
sql(q{SELECT calabi_push.start_sync('a')});
ok(wait_stalled($recv, 60, $before + 1), 'sync a started again: its request is stalled');
$pid = sync_status($node, 'a', 'pid');
like($pid, qr/^\d+$/, 'the new worker has a pid');
$t0 = time();
sql(q{SELECT calabi_push.drop_sync('a')});
$took = wait_worker_gone($pid, $t0);
ok(defined $took && $took < 10, sprintf('drop_sync: the running worker exits promptly (%.1f s)', $took // -1));
is(sql(q{SELECT count(*) FROM calabi_push.sync_status WHERE name = 'a'}), '0', 'drop_sync: gone from sync_status');
is(sql(q{SELECT count(*) FROM calabi_push.stream_status WHERE sync = 'a'}), '0', 'drop_sync: its streams are gone');
$recv->clear_faults;

# ---------------------------------------------------------------------------
# (c) a sync in a second database
# ---------------------------------------------------------------------------
sql('CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION calabi_push');
my $token2 = 'tok-other-' . int(rand(1e9));
my $recv2 = CalabiReceiver->start(node => $node, dbname => 'dest_other', token => $token2, name => 'other');
$node->safe_psql('other',
	    "SELECT calabi_push.create_destination('recv2', '"
	  . $recv2->url
	  . "', token => '$token2', options => jsonb_build_object('ca_file', '"
	  . $recv2->ca_file . "'))");
make_table('other', 'o_t', 40);
$node->safe_psql('other', qq{
	SELECT calabi_push.create_sync('o', 'recv2', ARRAY['o_t']::regclass[], options => '$sync_options');
	SELECT calabi_push.start_sync('o');
});
ok(wait_for_state_in($node, 'other', 'o', 'idle', 'error'), 'database other: the sync runs');
is(sync_status_in($node, 'other', 'o', 'state'), 'idle', 'database other: its run completes');
assert_dest_equals_source_in($node, 'other', 'dest_other', 'public', 'o_t', 'database other');

# ---------------------------------------------------------------------------
# (b) a server restart in the middle of a read; (c) and in database other
# ---------------------------------------------------------------------------
make_table('postgres', 'big_t', 200);
sql(qq{SELECT calabi_push.create_sync('big', 'recv', ARRAY['big_t']::regclass[], options => '$sync_options')});
# five batches pass (a stall of 0 s changes nothing), the sixth stalls
$recv->fault([ { kind => 'stall', seconds => 0, count => 5 }, stall_fault(60) ]);
sql(q{SELECT calabi_push.start_sync('big')});
# and a new run of sync o, stalled at its first batch
$node->safe_psql('other', q{UPDATE o_t SET label = 'second run ' || id WHERE id % 3 = 0});
$recv2->fault(stall_fault(60));
$node->safe_psql('other', q{SELECT calabi_push.start_sync('o')});
ok(wait_stalled($recv, 60, 1), 'sync big: the sixth batch is stalled');
ok(wait_stalled($recv2, 60, 1), 'sync o: its first batch is stalled');

my ($phase, $rows_before, $generation) = split /\|/, sql(q{
	SELECT phase, rows_sent, generation FROM calabi_push.stream_status WHERE sync = 'big'});
is($phase, 'reading', 'before the restart: big_t is being read');
ok($rows_before > 0 && $rows_before < 200, "before the restart: part of big_t acknowledged ($rows_before rows)");
my @before_restart = @{ ingest_requests($recv, 'big') };
my $max_seq_before = (sort { $b <=> $a } map { $_->{batch_seq} } @before_restart)[0];
my $records_before = 0;
$records_before += ($_->{status} // 0) == 200 ? $_->{records} // 0 : 0 for @before_restart;
is($records_before, $rows_before, 'the receiver accepted what stream_status says');
my $since_big = scalar(@{ $recv->requests });

$recv->clear_faults;
$recv2->clear_faults;
my $restart_at = sql('SELECT now()');
$t0 = time();
$node->restart;
$took = time() - $t0;
ok($took < 20, sprintf('the restart is not held up by the workers in slow requests (%.1f s)', $took));

ok($node->poll_query_until('postgres', q{
	SELECT state = 'idle' AND completed_at IS NOT NULL FROM calabi_push.sync_status WHERE name = 'big'}),
	'after the restart: sync big resumes and completes');
is(sql(q{SELECT phase || ' ' || rows_sent || ' ' || generation FROM calabi_push.stream_status WHERE sync = 'big'}),
	"done 200 $generation", 'after the restart: read to the end in the same generation');
my @after_restart = @{ ingest_requests($recv, 'big', $since_big) };
my $records_after = 0;
$records_after += ($_->{status} // 0) == 200 ? $_->{records} // 0 : 0 for @after_restart;
is($records_after, 200 - $rows_before,
	'after the restart: the read continued after the checkpoint (no row sent again)');
ok(!(grep { $_->{batch_seq} <= $max_seq_before } @after_restart),
	'after the restart: batch numbers above every number sent before');
assert_dest_equals_source($node, 'public', 'big_t', 'restart in the middle of a read');

ok($node->poll_query_until('other', qq{
	SELECT state = 'idle' AND completed_at > '$restart_at' FROM calabi_push.sync_status WHERE name = 'o'}),
	'after the restart: the sync of database other runs again and completes');
assert_dest_equals_source_in($node, 'other', 'dest_other', 'public', 'o_t', 'database other, after the restart');

# ---------------------------------------------------------------------------
# (d) DROP DATABASE with a running sync; the other syncs keep running
# ---------------------------------------------------------------------------
make_table('postgres', 'keep_t', 30);
sql(qq{SELECT calabi_push.create_sync('keep', 'recv', ARRAY['keep_t']::regclass[], options => '$sync_options')});
$recv->fault(stall_fault(5));
sql(q{SELECT calabi_push.start_sync('keep')});
$recv2->fault(stall_fault(60));
$node->safe_psql('other', q{SELECT calabi_push.start_sync('o')});
ok(wait_stalled($recv, 5, 1), 'sync keep is held in a slow request');
ok(wait_stalled($recv2, 60, 1), 'sync o is held in a slow request');
my $keep_pid = sync_status($node, 'keep', 'pid');
my $o_pid = sync_status_in($node, 'other', 'o', 'pid');
like($o_pid, qr/^\d+$/, 'the worker of sync o has a pid');
my ($ret, $out, $stderr);

# The worker of sync o (database $db) after a command that stopped it for a
# moment: it must be running again with a new worker, and sending.  Up to
# 30 s (it starts again at once).  When it does not, says how the sync looks
# and gets it going again by hand (stop_sync, start_sync), so that what
# follows is tested on its own.
sub o_runs_again
{
	# $before: the stalls taken before the command, so that a new worker
	# that was quick to send is not missed
	my ($db, $old_pid, $what, $before) = @_;
	my $new_pid;
	my $ok = wait_until(
		sub {
			my $pid = $node->safe_psql($db, q{
				SELECT pid FROM calabi_push.sync_status WHERE name = 'o' AND state = 'running'});
			$new_pid = $pid if $pid ne '' && $pid ne $old_pid;
			return defined $new_pid && stalls_taken($recv2, 60) > $before;
		},
		30);
	ok($ok, "$what: sync o runs again, a new worker sending");
	return $new_pid if $ok;
	diag("$what: sync o: "
		  . sync_status_in($node, $db, 'o',
			"state || ', pid ' || coalesce(pid::text, 'none') || ', next attempt ' || coalesce(next_attempt_at::text, 'none')"));
	diag("$what: sync o in shared memory (_sync_runtime): "
		  . $node->safe_psql($db, q{
			SELECT coalesce(string_agg(format('should_run %s, pid %s, state %s, last_exit %s',
			         r.should_run, r.pid, r.state, r.last_exit), '; '), 'no slot')
			  FROM calabi_push._sync_runtime() r
			 WHERE r.sync_id = (SELECT id FROM calabi_push.sync WHERE name = 'o')}));
	my $err = sql_error($node, $db, q{SELECT calabi_push.start_sync('o')});
	diag("$what: start_sync('o') then says: " . ($err ? "$err->{sqlstate}: $err->{message}" : 'nothing (it started)'));
	$node->safe_psql($db, q{SELECT calabi_push.stop_sync('o')}) if $err;
	$node->safe_psql($db, q{SELECT calabi_push.start_sync('o')}) if $err;
	$before = stalls_taken($recv2, 60);
	wait_stalled($recv2, 60, $before + 1) or die "sync o does not run again even after stop_sync/start_sync";
	return sync_status_in($node, $db, 'o', 'pid');
}

# ALTER DATABASE ... RENAME: the workers are stopped for it, then start again
my $stalls = stalls_taken($recv2, 60);
($ret, $out, $stderr) = $node->psql('postgres', 'ALTER DATABASE other RENAME TO other2');
is($ret, 0, 'ALTER DATABASE RENAME of a database with a running sync succeeds');
is($stderr, '', 'ALTER DATABASE RENAME: no error, no warning');
ok(!worker_alive($o_pid), 'ALTER DATABASE RENAME: the old worker was stopped');
$o_pid = o_runs_again('other2', $o_pid, 'after ALTER DATABASE RENAME', $stalls);

# a DROP DATABASE that fails (a user session is connected) lets the
# sync's worker start again
my $session = $node->background_psql('other2');
$session->query_safe('SELECT 1');
$stalls = stalls_taken($recv2, 60);
($ret, $out, $stderr) = $node->psql('postgres', 'DROP DATABASE other2');
isnt($ret, 0, 'DROP DATABASE while a user session is connected fails');
like($stderr, qr/being accessed by other users/, 'DROP DATABASE failed because of the user session');
like($stderr, qr/There is 1 other session using the database/,
	'the sync worker is not counted among the sessions in the way');
$session->quit;
$o_pid = o_runs_again('other2', $o_pid, 'after a failed DROP DATABASE', $stalls);
ok(worker_alive($keep_pid), 'meanwhile the worker of sync keep still runs');

$t0 = time();
($ret, $out, $stderr) = $node->psql('postgres', 'DROP DATABASE other2');
$took = time() - $t0;
is($ret, 0, 'DROP DATABASE of a database with a running sync succeeds');
unlike($stderr, qr/being accessed by other users/, 'DROP DATABASE: no "being accessed by other users"');
ok($took < 10, sprintf('DROP DATABASE is prompt (%.1f s)', $took));
is(sql(q{SELECT count(*) FROM pg_database WHERE datname IN ('other', 'other2')}), '0', 'database other2 is gone');
ok(!worker_alive($o_pid), 'the worker of sync o is gone');
ok(worker_alive($keep_pid), 'the worker of sync keep still runs');
is(sync_status($node, 'keep', 'pid'), $keep_pid, 'sync keep: the same worker');
$recv->clear_faults;
ok($node->poll_query_until('postgres', q{
	SELECT state = 'idle' AND completed_at IS NOT NULL FROM calabi_push.sync_status WHERE name = 'keep'}),
	'sync keep completes');
assert_dest_equals_source($node, 'public', 'keep_t', 'the sync that kept running');

# ---------------------------------------------------------------------------
# (e) DROP EXTENSION with a running sync
# ---------------------------------------------------------------------------
sql('CREATE DATABASE x');
$node->safe_psql('x', 'CREATE EXTENSION calabi_push');
my $create_x = "SELECT calabi_push.create_destination('recv2', '"
  . $recv2->url
  . "', token => '$token2', options => jsonb_build_object('ca_file', '"
  . $recv2->ca_file . "'));
	SELECT calabi_push.create_sync('xs', 'recv2', ARRAY['x_t']::regclass[], options => '$sync_options');";
make_table('x', 'x_t', 30);
$node->safe_psql('x', $create_x);
$recv2->clear_faults;
$recv2->fault(stall_fault(60));
$node->safe_psql('x', q{SELECT calabi_push.start_sync('xs')});
ok(wait_stalled($recv2, 60, 1), 'sync xs is held in a slow request');
my $x_pid = sync_status_in($node, 'x', 'xs', 'pid');
like($x_pid, qr/^\d+$/, 'the worker of sync xs has a pid');
my $pm_start = sql('SELECT pg_postmaster_start_time()');
my $log_offset = -s $node->logfile;

# a DROP EXTENSION rolled back stops nothing
($ret, $out, $stderr) = $node->psql('x', 'BEGIN; DROP EXTENSION calabi_push; ROLLBACK;');
is($ret, 0, 'DROP EXTENSION rolled back');
is(sync_status_in($node, 'x', 'xs', "state || ' ' || pid"), "running $x_pid",
	'DROP EXTENSION rolled back: the sync still runs, same worker');
ok(worker_alive($x_pid), 'DROP EXTENSION rolled back: the worker is alive');

$t0 = time();
($ret, $out, $stderr) = $node->psql('x', 'DROP EXTENSION calabi_push');
is($ret, 0, 'DROP EXTENSION with a running sync succeeds');
$took = wait_worker_gone($x_pid, $t0);
ok(defined $took && $took < 10, sprintf('DROP EXTENSION: the worker exits promptly (%.1f s)', $took // -1));
# a moment for anything the worker's exit would set off (a crash restart
# would reset every backend): the launcher must be the same and idle
$node->safe_psql('postgres', 'SELECT pg_sleep(1)');
is(sql('SELECT pg_postmaster_start_time()'), $pm_start, 'DROP EXTENSION: no crash and restart of the server');
is(crash_lines(log_since($log_offset)), '', 'DROP EXTENSION: no process terminated by a signal');
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'calabi_push launcher'}), '1',
	'the launcher still runs');

$recv2->clear_faults;
$node->safe_psql('x', 'CREATE EXTENSION calabi_push');
$node->safe_psql('x', $create_x);
$node->safe_psql('x', q{SELECT calabi_push.start_sync('xs')});
ok(wait_for_state_in($node, 'x', 'xs', 'idle', 'error'), 'CREATE EXTENSION again: a new sync runs');
is(sync_status_in($node, 'x', 'xs', 'state'), 'idle', 'CREATE EXTENSION again: its run completes');
assert_dest_equals_source_in($node, 'x', 'dest_other', 'public', 'x_t', 'after DROP and CREATE EXTENSION');

# ---------------------------------------------------------------------------
# (f) a configuration reload while a sync runs
# ---------------------------------------------------------------------------
make_table('postgres', 'cfg_t', 50);
sql(qq{SELECT calabi_push.create_sync('cfg', 'recv', ARRAY['cfg_t']::regclass[], options => '$sync_options')});
# the first two batches are stored, then answered after 2 s
$recv->fault({ kind => 'stall', seconds => 2, count => 2 });
sql(q{SELECT calabi_push.start_sync('cfg')});
ok(wait_until(sub { scalar(@{ $recv->faults->{queue} }) == 0 || $recv->faults->{queue}[0]{count} < 2 }, 60),
	'sync cfg is in its first (slow) request');
my $cfg_pid = sync_status($node, 'cfg', 'pid');
$log_offset = -s $node->logfile;
sql(q{ALTER SYSTEM SET work_mem = '8MB'});
sql(q{SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', q{SELECT current_setting('work_mem') = '8MB'}),
	'the new setting is in force');
ok($node->poll_query_until('postgres', q{
	SELECT state = 'idle' AND completed_at IS NOT NULL FROM calabi_push.sync_status WHERE name = 'cfg'}),
	'reload during a run: the run completes');
is(sync_status($node, 'cfg', "coalesce(last_error, 'no error') || ' ' || retries"), 'no error 0',
	'reload during a run: no error, no retry');
assert_dest_equals_source($node, 'public', 'cfg_t', 'reload during a run');
is(crash_lines(log_since($log_offset)), '', 'reload: nothing crashed');
unlike(log_since($log_offset), qr/(?:not delivered|ERROR:  )[^\n]*\n(?:(?:[^\n]*(?:DETAIL|HINT):  |\t)[^\n]*\n)*[^\n]*CONTEXT:  (?:[^\n]*\n\t)*calabi_push sync "cfg"\n/,
	'reload: the worker logged no failure');
sql(q{ALTER SYSTEM RESET work_mem});
sql(q{SELECT pg_reload_conf()});

# ---------------------------------------------------------------------------
# (g) privileges
# ---------------------------------------------------------------------------
sql(q{
	CREATE ROLE nobody LOGIN;
	GRANT USAGE ON SCHEMA calabi_push TO nobody;
	CREATE ROLE reader NOLOGIN;
	CREATE ROLE sync_admin LOGIN;
	GRANT reader TO sync_admin;
	CREATE TABLE secret_t (id int PRIMARY KEY, v text);
	INSERT INTO secret_t VALUES (1, 'classified');
	CREATE TABLE rls_t (id int PRIMARY KEY, owner text, v text);
	INSERT INTO rls_t SELECT g, (ARRAY['alice', 'bob', 'carol'])[g % 3 + 1], 'v' || g
	  FROM generate_series(1, 30) g;
	ALTER TABLE rls_t ENABLE ROW LEVEL SECURITY;
	CREATE POLICY alice_only ON rls_t FOR SELECT TO reader USING (owner = 'alice');
	GRANT SELECT ON rls_t TO reader;
});
grant_sync_management($node, 'sync_admin');

$err = sql_error($node, 'postgres', q{SET ROLE nobody;
	SELECT calabi_push.create_sync('p', 'recv', ARRAY['rls_t']::regclass[])});
is($err && $err->{sqlstate}, '42501', 'a role without EXECUTE: create_sync refused (42501)');
like($err && $err->{message}, qr/permission denied for function create_sync/,
	'a role without EXECUTE: permission denied for the function');

$err = sql_error($node, 'postgres', q{SET ROLE sync_admin;
	SELECT calabi_push.create_sync('p', 'recv', ARRAY['secret_t']::regclass[],
	  options => '{"run_as": "reader"}')});
is($err && $err->{sqlstate}, '42501', 'run_as lacks SELECT: create_sync refused (42501)');
like($err && $err->{message}, qr/permission denied for relation "(?:public\.)?secret_t"/,
	'run_as lacks SELECT: the message names the relation');
like($err && $err->{hint}, qr/GRANT SELECT ON (?:public\.)?secret_t TO reader;/, 'run_as lacks SELECT: the hint gives the GRANT');

$err = sql_error($node, 'postgres', q{SET ROLE sync_admin;
	SELECT calabi_push.create_sync('p', 'recv', ARRAY['rls_t']::regclass[],
	  options => '{"run_as": "nobody"}')});
is($err && $err->{sqlstate}, '42501', 'run_as a role the caller is not a member of: refused');
ok($err && $err->{hint}, 'run_as a role the caller is not a member of: with a hint');
is(sql(q{SELECT count(*) FROM calabi_push.sync WHERE name = 'p'}), '0', 'no sync was created by the refused calls');

$node->safe_psql('postgres', qq{SET ROLE sync_admin;
	SELECT calabi_push.create_sync('rls', 'recv', ARRAY['rls_t']::regclass[],
	  options => '{"run_as": "reader", "batch_rows": 10}');
	SELECT calabi_push.start_sync('rls');});
ok(wait_for_state($node, 'rls', 'idle', 'error'), 'row-level security: the run ends');
is(sync_status($node, 'rls', 'state'), 'idle', 'row-level security: the run completes');
my $expected = sql(q{SELECT string_agg(id::text, ',' ORDER BY id) FROM rls_t WHERE owner = 'alice'});
is($node->safe_psql('calabi_dest', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM public.rls_t}),
	$expected, 'row-level security: the destination has exactly the rows the policy lets reader see');
is($node->safe_psql('calabi_dest', q{SELECT count(*) FROM public.rls_t WHERE owner <> 'alice'}), '0',
	'row-level security: no row of another owner');

# ---------------------------------------------------------------------------
# (h) a worker that fails, and recovers by itself
# ---------------------------------------------------------------------------
make_table('postgres', 'h_t', 40);
sql(qq{GRANT SELECT ON h_t TO reader;
	SELECT calabi_push.create_sync('h', 'recv', ARRAY['h_t']::regclass[],
	  options => '{"run_as": "reader", "batch_rows": 10}')});

# start_sync checks the privileges again
sql('REVOKE SELECT ON h_t FROM reader');
$err = sql_error($node, 'postgres', q{SELECT calabi_push.start_sync('h')});
is($err && $err->{sqlstate}, '42501', 'start_sync when run_as lost SELECT: refused (42501)');
like($err && $err->{hint}, qr/GRANT SELECT ON (?:public\.)?h_t TO reader;/, 'start_sync refused: the hint gives the GRANT');

# the privilege is lost after start_sync's check, before the worker reads
sql(q{BEGIN;
	GRANT SELECT ON h_t TO reader;
	SELECT calabi_push.start_sync('h');
	REVOKE SELECT ON h_t FROM reader;
	COMMIT;});
ok($node->poll_query_until('postgres', q{
	SELECT state = 'retrying' AND last_error LIKE '%permission denied%' AND next_attempt_at IS NOT NULL
	  FROM calabi_push.sync_status WHERE name = 'h'}),
	'a failing worker: retrying, with the error and the next attempt in sync_status');
like(sync_status($node, 'h', 'last_error'), qr/permission denied for (?:relation|table) "?(?:public\.)?h_t"?/,
	'a failing worker: last_error says what failed');
like(slurp_file($node->logfile), qr/ERROR:\s+permission denied for (?:relation|table) "?(?:public\.)?h_t"?/, 'a failing worker: the error is logged');
$t0 = time();
sql('GRANT SELECT ON h_t TO reader');
ok($node->poll_query_until('postgres', q{
	SELECT state = 'idle' AND completed_at IS NOT NULL FROM calabi_push.sync_status WHERE name = 'h'}),
	'privilege granted again: the sync recovers by itself');
$took = time() - $t0;
ok($took < 40, sprintf('recovered within the restart backoff (%.1f s)', $took));
assert_dest_equals_source($node, 'public', 'h_t', 'after recovery');

# ---------------------------------------------------------------------------
# the whole server log
# ---------------------------------------------------------------------------
my $log = slurp_file($node->logfile);
is(crash_lines($log), '', 'no server process was terminated by a signal');
unlike($log, qr/FATAL:.*database \d+ does not exist/, 'no worker was started for a dropped database');

$recv->stop;
$recv2->stop;
$node->stop;
done_testing();
