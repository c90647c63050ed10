# The extension can go away other ways than DROP EXTENSION: DROP SCHEMA
# calabi_push CASCADE takes it with it.  Every way stops the database's sync
# workers and drops its CDC syncs' slots when it commits, and nothing when it
# rolls back.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'dropschema');
allow_output_plugin($node);

sub sql { $node->safe_psql('postgres', shift) }

sql(q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g;
	SELECT calabi_push.create_sync('fr', 'recv', ARRAY['t']::regclass[],
	         options => '{"schedule": "1 hour"}');
	SELECT calabi_push.create_sync('cdc', 'recv', ARRAY['t']::regclass[], method => 'cdc');
	SELECT calabi_push.start_sync('fr');
	SELECT calabi_push.start_sync('cdc');
});
ok(wait_for_state($node, 'fr', 'idle'), 'the full refresh sync ran and waits for its schedule');
ok(wait_for_state($node, 'cdc', 'running'), 'the CDC sync streams');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name LIKE 'calabi\_push\_%'}),
	'the CDC sync has its slot');

sub workers
{
	return sql(q{SELECT count(*) FROM pg_stat_activity
	              WHERE application_name LIKE 'calabi_push sync %'});
}
is(workers(), 2, 'two sync workers run');

# rolled back: nothing stops
sql(q{BEGIN; DROP SCHEMA calabi_push CASCADE; ROLLBACK;});
sleep 2;
is(workers(), 2, 'a rolled-back DROP SCHEMA stops no worker');
is(sync_status($node, 'cdc', 'state'), 'running', 'and the CDC sync still streams');

# committed: the workers stop and the slot goes
sql(q{DROP SCHEMA calabi_push CASCADE});
is(sql(q{SELECT count(*) FROM pg_extension WHERE extname = 'calabi_push'}), '0',
	'DROP SCHEMA CASCADE dropped the extension');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name LIKE 'calabi_push sync %'}),
	'DROP SCHEMA CASCADE: the sync workers stop');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name LIKE 'calabi\_push\_%'}),
	'DROP SCHEMA CASCADE: the CDC slot is dropped, no WAL held');

$recv->stop;
$node->stop;
done_testing();
