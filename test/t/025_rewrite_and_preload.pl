# A table rewritten in the middle of its read (VACUUM FULL, CLUSTER,
# TRUNCATE give it a new relfilenode), or whose columns change, is read
# again from the start under a new generation, announced with refresh_start
# (and a new STREAM); the destination ends equal to the source.  A scheduled
# sync's second run reads everything again; after a server restart it waits
# for its next run without claiming one.  A view read through a held
# cursor runs as the sync's role.  Without shared_preload_libraries,
# CREATE EXTENSION warns at once (a preloaded library does not), and
# preview works while starting a sync says what to change.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'rewrite');
$node->safe_psql('postgres', q{
	CREATE TABLE r (id int PRIMARY KEY, v text);
	INSERT INTO r SELECT g, md5(g::text) FROM generate_series(1, 1000) g;
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['r']::regclass[],
	  options => '{"batch_rows": 50, "chunk_rows": 50}');
});

# Slow the receiver so the read is in progress, rewrite the table under it,
# let it finish; returns the generation it ended with.
sub rewrite_mid_read
{
	my ($what, $sql, $noticed) = @_;
	$noticed //= qr/"public"."r" was rewritten during its read; reading it again/;
	my $generation = $node->safe_psql('postgres',
		q{SELECT generation FROM calabi_push.stream_status WHERE sync = 's'});
	$recv->fault({ kind => 'stall', seconds => 1, count => -1 });
	$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
	ok( $node->poll_query_until('postgres', q{
			SELECT rows_sent >= 100 AND phase = 'reading'
			  FROM calabi_push.stream_status WHERE sync = 's'}),
		"$what: the read is under way");
	$node->safe_psql('postgres', $sql);
	$recv->clear_faults;
	ok( $node->poll_query_until('postgres', q{
			SELECT state = 'idle' AND completed_at IS NOT NULL
			  FROM calabi_push.sync_status WHERE name = 's'}),
		"$what: the run completes");
	like(slurp_file($node->logfile), $noticed, "$what: the change was noticed");
	is($node->safe_psql('postgres',
		q{SELECT generation FROM calabi_push.stream_status WHERE sync = 's'}),
		$generation + 2, "$what: the read started again under a new generation");
	assert_dest_equals_source($node, 'public', 'r', $what);
}

$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
ok(wait_for_state($node, 's', 'idle'), 'a first complete run');

rewrite_mid_read('VACUUM FULL', q{
	DELETE FROM r WHERE id % 10 = 0;
	VACUUM FULL r;
});
rewrite_mid_read('TRUNCATE', q{
	BEGIN;
	TRUNCATE r;
	INSERT INTO r SELECT g, 'after truncate ' || g FROM generate_series(1, 700) g;
	COMMIT;
});

# columns added or dropped mid-read (no rewrite): the rows change shape
rewrite_mid_read('ADD COLUMN', q{ALTER TABLE r ADD COLUMN extra int DEFAULT 7},
	qr/the columns of "public"."r" changed during its read; reading it again/);
rewrite_mid_read('DROP COLUMN', q{ALTER TABLE r DROP COLUMN v},
	qr/the columns of "public"."r" changed during its read; reading it again/);

# the receiver saw a refresh_start for the abandoned and for the new read
my @starts = grep { ($_->{types}{CONTROL} // 0) > 0 } @{ $recv->requests };
ok(scalar(@starts) >= 5, 'refresh_start announced every read, the restarted ones included');

# a view read through a held cursor runs as the sync's role, not as the
# worker's superuser (the cursor's query runs when its transaction commits)
$node->safe_psql('postgres', q{
	CREATE ROLE alice;
	CREATE TABLE owned (id int, owner name);
	INSERT INTO owned VALUES (1, 'alice'), (2, 'bob');
	CREATE VIEW whoami AS SELECT id, current_user AS reader FROM owned WHERE owner = current_user;
	GRANT SELECT ON owned, whoami TO alice;
	SELECT calabi_push.create_sync('as_alice', 'recv', ARRAY['whoami']::regclass[],
	  options => '{"run_as": "alice"}');
	SELECT calabi_push.start_sync('as_alice');
});
ok(wait_for_state($node, 'as_alice', 'idle', 'error'), 'run_as: the run completes');
is($node->safe_psql('calabi_dest', q{SELECT string_agg(id || ':' || reader, ',') FROM public.whoami}),
	'1:alice', 'run_as: the view was read as alice (current_user and its filter)');

# a scheduled sync's second run, in the same worker, reads every row again
$node->safe_psql('postgres', q{
	CREATE TABLE sched (id int PRIMARY KEY, v text);
	INSERT INTO sched SELECT g, 'first ' || g FROM generate_series(1, 55) g;
	SELECT calabi_push.create_sync('sched', 'recv', ARRAY['sched']::regclass[],
	  options => '{"schedule": "1 minute", "batch_rows": 20, "chunk_rows": 10}');
	SELECT calabi_push.start_sync('sched');
});
ok($node->poll_query_until('postgres', q{
	SELECT completed_at IS NOT NULL FROM calabi_push.sync_status WHERE name = 'sched'}),
	'schedule: the first run completes');
my $worker = $node->safe_psql('postgres', q{SELECT pid FROM calabi_push.sync_status WHERE name = 'sched'});
$node->safe_psql('postgres', q{
	UPDATE sched SET v = 'second ' || id;
	INSERT INTO sched SELECT g, 'second ' || g FROM generate_series(56, 70) g;
});
ok($node->poll_query_until('postgres', q{
	SELECT generation = 2 AND phase = 'done' FROM calabi_push.stream_status WHERE sync = 'sched'}),
	'schedule: the second run completes a minute later');
is($node->safe_psql('postgres', q{SELECT pid FROM calabi_push.sync_status WHERE name = 'sched'}),
	$worker, 'schedule: by the same worker, which stays idle in between');
assert_dest_equals_source($node, 'public', 'sched', 'schedule: the second run');

# a server restart after a complete scheduled run: the worker waits for the
# next run (due a minute after the last one started), and neither marks nor
# logs a run it did not make
ok($node->poll_query_until('postgres', q{
	SELECT state = 'idle' AND completed_at IS NOT NULL FROM calabi_push.sync_status WHERE name = 'sched'}),
	'schedule: the second run is recorded complete');
my $before = $node->safe_psql('postgres', q{
	SELECT started_at || ' ' || completed_at || ' ' || batches_sent
	  FROM calabi_push.sync_status WHERE name = 'sched'});
my $log_offset = -s $node->logfile;
$node->restart;
ok($node->poll_query_until('postgres', q{
	SELECT state = 'idle' AND pid IS NOT NULL FROM calabi_push.sync_status WHERE name = 'sched'}),
	'schedule, after a restart: the worker waits, idle');
is($node->safe_psql('postgres', q{
	SELECT started_at || ' ' || completed_at || ' ' || batches_sent
	  FROM calabi_push.sync_status WHERE name = 'sched'}),
	$before, 'schedule, after a restart: no run is marked, nothing sent');
unlike(slurp_file($node->logfile, $log_offset), qr/calabi_push sync "sched" completed a run/,
	'schedule, after a restart: no "completed a run" in the log');

# a preloaded library: CREATE EXTENSION is silent
$node->safe_psql('postgres', 'CREATE DATABASE preloaded');
my ($pret, $pout, $perr) = $node->psql('preloaded', q{CREATE EXTENSION calabi_push});
is($pret, 0, 'with shared_preload_libraries, CREATE EXTENSION succeeds');
unlike($perr, qr/WARNING/, 'with shared_preload_libraries, CREATE EXTENSION does not warn');

$recv->stop;
$node->stop;

# without shared_preload_libraries
my $plain = PostgreSQL::Test::Cluster->new('no_preload');
$plain->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$plain->start;
# CREATE EXTENSION says at once that syncs cannot run, and how to fix it
my ($cret, $cout, $cerr) = $plain->psql('postgres', q{CREATE EXTENSION calabi_push},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
is($cret, 0, 'without shared_preload_libraries, CREATE EXTENSION succeeds');
like($cerr, qr/WARNING:  55000: calabi_push is not loaded at server start/,
	'CREATE EXTENSION without shared_preload_libraries warns at once');
like($cerr, qr/HINT:  Add "calabi_push" to shared_preload_libraries/,
	'the warning says how to fix it');
is($plain->safe_psql('postgres', q{SELECT count(*) FROM pg_proc WHERE proname = '_warn_unless_preloaded'}),
	'0', 'the check leaves no function behind');
$plain->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY);
	INSERT INTO t VALUES (1);
});
is($plain->safe_psql('postgres', q{SELECT calabi_push.preview('t')::text}), '{"id":1}',
	'without shared_preload_libraries, preview works');
$plain->safe_psql('postgres', q{
	SELECT calabi_push.create_destination('d', 'https://ingest.example.com/i');
	SELECT calabi_push.create_sync('s', 'd', ARRAY['t']::regclass[]);
});
my ($ret, $out, $err) = $plain->psql('postgres', q{SELECT calabi_push.start_sync('s')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($ret, 0, 'start_sync fails without shared_preload_libraries');
like($err, qr/55000: calabi_push is not loaded at server start/, 'the error says what is wrong');
like($err, qr/HINT:  Add "calabi_push" to shared_preload_libraries/, 'and how to fix it');
is($plain->safe_psql('postgres', q{SELECT enabled FROM calabi_push.sync}), 'f',
	'nothing was left half-started');
$plain->stop;

done_testing();
