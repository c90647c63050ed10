# A full refresh of a view read through a held cursor runs as the sync's
# run_as role, not as the worker's superuser: current_user and the view's
# filter on it are alice's.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'runas');

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

$recv->stop;
$node->stop;
done_testing();
