# A sync that runs on a standby (option run_on, sql/install/24_run_on.sql):
# the primary never runs it; the standby whose cluster_name it names reads
# its own copy of the tables and keeps the sync's progress in a state file
# (its catalog is read-only), which survives a crash; the primary's
# start_sync, stop_sync and resync reach it through the replayed catalog;
# sync_status on the standby shows the file's progress.  Promoted beside
# its live old primary, the standby carries on from its own checkpoint,
# takes the file into its catalog, and never reuses a batch number; the
# old primary's copy stays stopped.  The receiver stores into a third
# server, so that it outlives either.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CalabiSyncTest;

my $dest = dest_node();

# (PostgreSQL::Test::Cluster starts each server with its node's name as
# cluster_name)
my ($primary, $recv) = sync_setup(name => 'main1', init => { allows_streaming => 1 },
	dest_node => $dest);
$primary->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 20000) g;
	CREATE VIEW v AS SELECT id, upper(v) AS v FROM t WHERE id % 10 = 0;});

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('replica1');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->append_conf('postgresql.conf', 'hot_standby_feedback = on');
$standby->start;

# a sync cannot name the server it is created on: standbys sharing that
# name would run it too
my $e = sql_error($primary, 'postgres', q{SELECT calabi_push.create_sync('mine', 'recv', ARRAY['t']::regclass[],
		options => '{"run_on": "main1"}')});
like($e->{message}, qr/names this server/, 'run_on naming the primary itself is refused');
like($e->{hint}, qr/cluster_name of its own/, '... saying the way out');

$primary->safe_psql('postgres', q{
	SELECT calabi_push.create_sync('fr', 'recv', ARRAY['t', 'v']::regclass[],
	         options => '{"batch_rows": 200, "run_on": "replica1"}');
	SELECT calabi_push.start_sync('fr');});
$primary->wait_for_catchup($standby);

my ($dboid, $sync_id) = split /\|/, $primary->safe_psql('postgres', q{
	SELECT d.oid, s.id FROM pg_database d, calabi_push.sync s
	 WHERE d.datname = 'postgres' AND s.name = 'fr'});
my $state_file = $standby->data_dir . "/pg_calabi_push/$dboid/$sync_id.json";

# the batches of fr the receiver answered: their numbers, and how many it
# refused
sub accepted
{
	my @reqs = @{ ingest_requests($recv, 'fr') };
	return ([ map { $_->{batch_seq} } grep { ($_->{status} // 0) == 200 } @reqs ],
		scalar(grep { ($_->{status} // 0) >= 400 } @reqs));
}

sub no_number_twice
{
	my ($name) = @_;
	my ($seqs, $refused) = accepted();
	my %seen;
	my @twice = grep { $seen{$_}++ } @$seqs;
	is($refused, 0, "$name: the receiver refused no batch");
	is(scalar(@twice), 0, "$name: no batch number was accepted twice");
	return $seqs;
}

sub dest_equals_source
{
	my ($node, $name) = @_;
	for my $rel ('t', 'v')
	{
		my $src = stream_rows_source($node, "public.$rel");
		my $dst = stream_rows_dest_in($dest, 'calabi_dest', 'public', $rel, [ 'id', 'v' ]);
		is(scalar(@$dst), scalar(@$src), "$name: $rel: row count");
		is_deeply($dst, $src, "$name: $rel: destination equals source");
	}
}

sub sync_workers
{
	my ($node) = @_;
	return $node->safe_psql('postgres', q{
		SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'calabi_push sync'});
}

# --- the standby runs it, the primary does not
run_completes($standby, 'fr', 'on the standby');
dest_equals_source($standby, 'first run');
is(sync_status($primary, 'fr', 'state'), 'on_standby', 'the primary says the sync runs elsewhere');
like(sync_status($primary, 'fr', 'state_detail'), qr/cluster_name is 'replica1'/,
	'... and where');
is(sync_workers($primary), '0', 'the primary runs no worker for it');
is(sync_status($standby, 'fr', 'records_sent'), 22000,
	'the standby\'s sync_status shows the progress of its state file');
is($primary->safe_psql('postgres', q{SELECT records_sent FROM calabi_push.sync WHERE name = 'fr'}),
	'0', 'the primary\'s catalog holds none of it');
ok(-f $state_file, 'the progress is in a state file of the standby');
is($standby->safe_psql('postgres', q{
		SELECT string_agg(phase, ',' ORDER BY ordinal) FROM calabi_push.stream_status WHERE sync = 'fr'}),
	'done,done', 'stream_status on the standby shows the streams done');
my $seqs = no_number_twice('first run');

# --- a crash of the standby mid-read: the read resumes from its checkpoint
$primary->safe_psql('postgres', q{UPDATE t SET v = 'second ' || id WHERE id % 4 = 0});
$recv->fault({ kind => 'stall', seconds => 1, count => -1 });
$primary->safe_psql('postgres', q{SELECT calabi_push.resync('fr')});
ok( $standby->poll_query_until('postgres', q{
		SELECT phase = 'reading' AND rows_sent >= 400
		  FROM calabi_push.stream_status WHERE sync = 'fr' AND relation = 't'::regclass}),
	'resync on the primary: the standby reads again');
my $generation = $standby->safe_psql('postgres', q{
	SELECT generation FROM calabi_push.stream_status WHERE sync = 'fr' AND relation = 't'::regclass});
$standby->stop('immediate');
$recv->clear_faults;
$standby->start;
ok( $standby->poll_query_until('postgres', q{
		SELECT rows_sent > 0 FROM calabi_push.stream_status WHERE sync = 'fr' AND relation = 't'::regclass}),
	'after the crash, the stream shows its checkpoint');
run_completes($standby, 'fr', 'after the crash');
is($standby->safe_psql('postgres', q{
		SELECT generation FROM calabi_push.stream_status WHERE sync = 'fr' AND relation = 't'::regclass}),
	$generation, 'the read under way resumed (same generation)');
dest_equals_source($standby, 'after the crash');
$seqs = no_number_twice('after the crash');

# --- stop_sync and start_sync on the primary reach the standby
$primary->safe_psql('postgres', q{
	ALTER TABLE t SET (autovacuum_enabled = off);
	SELECT calabi_push.stop_sync('fr');});
ok( $standby->poll_query_until('postgres', q{
		SELECT state = 'stopped' FROM calabi_push.sync_status WHERE name = 'fr'}),
	'stop_sync on the primary: stopped on the standby');
my $completed = sync_status($standby, 'fr', 'completed_at');
$primary->safe_psql('postgres', q{
	DELETE FROM t WHERE id % 5 = 0;
	SELECT calabi_push.start_sync('fr');});
ok( $standby->poll_query_until('postgres', qq{
		SELECT completed_at > '$completed' AND state = 'idle'
		  FROM calabi_push.sync_status WHERE name = 'fr'}),
	'start_sync on the primary: a new run on the standby');
dest_equals_source($standby, 'after start_sync');
$seqs = no_number_twice('after start_sync');

# --- what is on disk is not trusted beyond the progress it holds: a state
# file that names another method, role and destination changes none of
# them; one that is not JSON stops only its sync, loudly
my $saved = slurp_file($state_file);
(my $forged = $saved) =~ s/"sync": \{/"sync": {"method": null, "run_as": 10, "destination": "nowhere", /;
$standby->stop;
append_to_file($state_file . '.forged', $forged);
rename($state_file . '.forged', $state_file) or die "rename: $!";
$standby->start;
$completed = sync_status($standby, 'fr', 'completed_at');
$primary->safe_psql('postgres', q{SELECT calabi_push.start_sync('fr')});
ok( $standby->poll_query_until('postgres', qq{
		SELECT completed_at > '$completed' AND state = 'idle' AND last_error IS NULL
		  FROM calabi_push.sync_status WHERE name = 'fr'}),
	'a forged state file: the sync ran as defined in the catalog');
$standby->stop;
$saved = slurp_file($state_file);
unlink($state_file);
append_to_file($state_file, '{"sync": {"retries": 1');
$standby->start;
my ($ret, $out, $err) = $standby->psql('postgres',
	q{SELECT name, state FROM calabi_push.sync_status WHERE name = 'fr'});
like($out, qr/^fr\|/, 'a state file that is not JSON: sync_status still answers');
like($err, qr/WARNING:.*state file of sync .* is not valid JSON.*HINT:.*Move the file/s,
	'... and warns, saying the way out');
ok(wait_until(sub { slurp_file($standby->logfile) =~ /reading the state file pg_calabi_push\/$dboid\/$sync_id.json \(move it away/ }),
	'... the worker stops on it in error, naming the file and the way out');
$standby->stop;
unlink($state_file);
append_to_file($state_file, $saved);
$standby->start;

# --- a standby without the state file (rebuilt from the primary, or the
# file moved away) starts from the catalog, above every number used before
$seqs = no_number_twice('before the file went');
$standby->stop;
unlink($state_file);
$standby->start;
$primary->safe_psql('postgres', q{SELECT calabi_push.start_sync('fr')});
$primary->wait_for_catchup($standby);
ok( $standby->poll_query_until('postgres', q{
		SELECT st.completed_at IS NOT NULL AND st.state = 'idle' AND st.last_error IS NULL
		   AND (calabi_push._standby_state(s.id)->>'applied_command')::int8 = s.command_seq
		  FROM calabi_push.sync_status st JOIN calabi_push.sync s USING (name) WHERE name = 'fr'}),
	'without its state file: the standby ran the sync again');
dest_equals_source($standby, 'without its state file');
$seqs = no_number_twice('without its state file');

# --- drop_sync on the primary while the standby reads: the worker stops,
# nothing crashes, the file goes
$primary->safe_psql('postgres', q{
	SELECT calabi_push.create_sync('gone', 'recv', ARRAY['t']::regclass[],
	         options => '{"batch_rows": 50, "run_on": "replica1"}');
	SELECT calabi_push.start_sync('gone');});
my $gone_id = $primary->safe_psql('postgres', q{SELECT id FROM calabi_push.sync WHERE name = 'gone'});
$recv->fault({ kind => 'stall', seconds => 1, count => -1 });
ok( $standby->poll_query_until('postgres', q{
		SELECT rows_sent >= 100 FROM calabi_push.stream_status WHERE sync = 'gone'}),
	'a second sync reads on the standby');
my $started = $standby->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
$primary->safe_psql('postgres', q{SELECT calabi_push.drop_sync('gone')});
ok( $standby->poll_query_until('postgres', q{
		SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'calabi_push sync'
		   AND application_name = 'calabi_push sync gone'}),
	'drop_sync on the primary: the standby\'s worker stopped');
$recv->clear_faults;
ok(wait_until(sub { !-f $standby->data_dir . "/pg_calabi_push/$dboid/$gone_id.json" }),
	'... and its state file went');
is($standby->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started,
	'... with no crash of the standby');
unlike(slurp_file($standby->logfile), qr/terminated by signal/, 'no process died of a signal');

# --- xmin and cursor syncs read the standby's tables too, incrementally
$primary->safe_psql('postgres', q{
	CREATE TABLE x (id int PRIMARY KEY, v text);
	INSERT INTO x SELECT g, 'x ' || g FROM generate_series(1, 16000) g;
	CREATE TABLE c (id int PRIMARY KEY, updated_at timestamptz NOT NULL DEFAULT clock_timestamp(), v text);
	INSERT INTO c (id, v) SELECT g, 'c ' || g FROM generate_series(1, 3000) g;
	SELECT calabi_push.create_sync('xs', 'recv', ARRAY['x']::regclass[], method => 'xmin',
	         destination_sync_mode => 'append_dedup',
	         options => '{"run_on": "replica1", "batch_rows": 500}');
	SELECT calabi_push.create_sync('cs', 'recv', ARRAY['c']::regclass[], method => 'cursor',
	         destination_sync_mode => 'append_dedup',
	         options => '{"run_on": "replica1", "cursor": "updated_at", "batch_rows": 500}');
	SELECT calabi_push.start_sync('xs');
	SELECT calabi_push.start_sync('cs');});
for my $sync ('xs', 'cs')
{
	ok( $standby->poll_query_until('postgres', qq{
			SELECT state = 'idle' AND completed_at IS NOT NULL AND last_error IS NULL
			  FROM calabi_push.sync_status WHERE name = '$sync'}),
		"$sync: the first run completed on the standby");
}
is(sync_status($standby, 'xs', 'records_sent'), 16000, 'xmin: the first run read the table whole');
is(sync_status($standby, 'cs', 'records_sent'), 3000, 'cursor: the first run read the table whole');
$primary->safe_psql('postgres', q{
	UPDATE x SET v = 'xmin ' || id WHERE id <= 1000;
	UPDATE c SET v = 'cursor ' || id, updated_at = clock_timestamp() WHERE id % 6 = 0;});
for my $sync ('xs', 'cs')
{
	my $done = sync_status($standby, $sync, 'completed_at');
	$primary->safe_psql('postgres', "SELECT calabi_push.start_sync('$sync')");
	ok( $standby->poll_query_until('postgres', qq{
			SELECT state = 'idle' AND completed_at > '$done' AND last_error IS NULL
			  FROM calabi_push.sync_status WHERE name = '$sync'}),
		"$sync: start_sync on the primary: an incremental run on the standby");
}
is($standby->safe_psql('postgres', q{SELECT read FROM calabi_push.stream_status WHERE sync = 'xs'}),
	'incremental', 'xmin: the second run read what changed');
cmp_ok(sync_status($standby, 'xs', 'records_sent'), '<=', 16000 + 2 * 1000,
	'xmin: the second run sent about the updated rows, not the table');
# the pages no transaction since the first run wrote are skipped by their
# LSN, compared with the replay position the first run marked
cmp_ok($standby->safe_psql('postgres', q{SELECT pages_skipped FROM calabi_push.stream_status WHERE sync = 'xs'}),
	'>', 50, 'xmin: the pages no one wrote since were skipped');
cmp_ok(sync_status($standby, 'cs', 'records_sent'), '<=', 3000 + 500 + 2,
	'cursor: the second run sent the updated rows (and its boundary) only');
for my $rel ('x', 'c')
{
	my $src = stream_rows_source($standby, "public.$rel");
	my $dst = stream_rows_dest_in($dest, 'calabi_dest', 'public', $rel, [ 'id', 'v' ]);
	s/, "updated_at": "[^"]*"// for @$src;
	is_deeply($dst, $src, "$rel: destination equals source");
}
$primary->safe_psql('postgres', q{
	SELECT calabi_push.drop_sync('xs');
	SELECT calabi_push.drop_sync('cs');});

# --- promotion beside the live old primary: the standby carries on
$primary->safe_psql('postgres', q{
	SELECT calabi_push.create_sync('other', 'recv', ARRAY['t']::regclass[]);
	UPDATE t SET v = 'third ' || id WHERE id % 3 = 0;});
$recv->fault({ kind => 'stall', seconds => 1, count => -1 });
$primary->safe_psql('postgres', q{SELECT calabi_push.resync('fr')});
$primary->wait_for_catchup($standby);
ok( $standby->poll_query_until('postgres', q{
		SELECT phase = 'reading' AND rows_sent >= 400
		  FROM calabi_push.stream_status WHERE sync = 'fr' AND relation = 't'::regclass}),
	'a third run reads on the standby');
my $sent_before = $standby->safe_psql('postgres', q{SELECT batches_sent FROM calabi_push.sync_status WHERE name = 'fr'});
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the standby was not promoted';
$recv->clear_faults;
run_completes($standby, 'fr', 'promoted');
ok(!-f $state_file, 'promoted: the state file was taken into the catalog');
cmp_ok($standby->safe_psql('postgres', q{SELECT batches_sent FROM calabi_push.sync WHERE name = 'fr'}),
	'>', $sent_before, 'promoted: the catalog carries the standby\'s counters on');
cmp_ok($standby->safe_psql('postgres', q{SELECT standby_import FROM calabi_push.sync WHERE name = 'fr'}),
	'>', 0, 'promoted: the import is recorded');
is(sync_status($standby, 'other', 'state'), 'copied',
	'promoted beside a live primary: the syncs the primary ran are copies');
dest_equals_source($standby, 'promoted');
no_number_twice('promoted');
is(sync_status($primary, 'fr', 'state'), 'on_standby', 'the old primary still does not run it');
is(sync_workers($primary), '0', 'the old primary runs no worker');

$recv->stop;
$standby->stop;
$primary->stop;
$dest->stop;
done_testing();
