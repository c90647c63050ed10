# A scheduled sync's second run, made by the same worker, which stays idle
# in between, reads everything again; after a server restart it waits for
# its next run without claiming one.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'schedule');

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
unlike(slurp_file($node->logfile, $log_offset), qr/the sync completed a run[^\n]*\n(?:(?:[^\n]*(?:DETAIL|HINT):  |\t)[^\n]*\n)*[^\n]*CONTEXT:  (?:[^\n]*\n\t)*calabi_push sync "sched"\n/,
	'schedule, after a restart: no "completed a run" in the log');

$recv->stop;
$node->stop;
done_testing();
