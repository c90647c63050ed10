# DROP EXTENSION drops the replication slots of the CDC syncs, running
# or stopped.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = cdc_running_sync(undef, name => 'cdcdrop');

$node->safe_psql('postgres', q{
	CREATE TABLE other (id int PRIMARY KEY);
	SELECT calabi_push.create_sync('stopped-one', 'recv', ARRAY['other']::regclass[], method => 'cdc');
	SELECT calabi_push.start_sync('stopped-one');
});
# the syncs' slots
my $slots = q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'calabi\_push\_%'};
ok($node->poll_query_until('postgres', $slots, '2'), 'two CDC syncs, two slots');
$node->safe_psql('postgres', q{SELECT calabi_push.stop_sync('stopped-one')});
$node->safe_psql('postgres', 'DROP EXTENSION calabi_push CASCADE');
ok($node->poll_query_until('postgres', $slots, '0'),
	'DROP EXTENSION: the slots of a running and of a stopped sync are dropped');

$recv->stop;
$node->stop;
done_testing();
