# A copy of a database does not run the original's syncs under their
# identity (docs/operations.md, "Copies of a database"): restored into
# another database of the same cluster, into another cluster, or a physical
# clone promoted while its primary still runs, the syncs come up 'copied',
# send nothing, and leave the original's replication slot alone;
# adopt_sync() gives one an identity of its own (a new slot, batch numbers
# from 1) and start_sync runs it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

# (max_wal_senders: for the base backup and the clone's streaming)
my ($node, $recv, $token) = sync_setup(name => 'orig', conf => 'max_wal_senders = 10');
allow_output_plugin($node);

$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 50) g;
	SELECT calabi_push.create_sync('fr', 'recv', ARRAY['t']::regclass[],
	         options => '{"schedule": "1 hour"}');
	SELECT calabi_push.create_sync('cdc', 'recv', ARRAY['t']::regclass[], method => 'cdc');
	SELECT calabi_push.start_sync('fr');
	SELECT calabi_push.start_sync('cdc');
});
ok(wait_for_state($node, 'fr', 'idle'), 'original: the full refresh sync ran');
ok(wait_for_state($node, 'cdc', 'running'), 'original: the CDC sync streams');

my %orig_id = map { split /\|/ } split /\n/,
  $node->safe_psql('postgres', q{SELECT name, id FROM calabi_push.sync});
my $orig_slot = $node->safe_psql('postgres',
	q{SELECT slot_name FROM calabi_push.sync_status WHERE name = 'cdc'});

# the original's slot: in database postgres, held by its worker
sub orig_slot_ok
{
	my ($what) = @_;
	ok( $node->poll_query_until('postgres', qq{
			SELECT database = 'postgres' AND active_pid IS NOT NULL
			  FROM pg_replication_slots WHERE slot_name = '$orig_slot'}),
		"$what: the original's slot is still there, in its database, in use");
}

my $dump = $node->basedir . '/orig.sql';
command_ok([ 'pg_dump', '-d', $node->connstr('postgres'), '-f', $dump ],
	'pg_dump of the database with the running syncs');

# A restored copy: states, refusals, what the probe does at a restart, and
# adoption.  $n is the node, $db the database restored into, $where the
# words of the message.
sub check_copy
{
	my ($n, $db, $label, $where) = @_;

	is( $n->safe_psql($db,
			q{SELECT string_agg(name || ':' || enabled, ',' ORDER BY name) FROM calabi_push.sync}),
		'cdc:true,fr:true',
		"$label: the dump restored the syncs enabled, under the original's ids");
	is( $n->safe_psql($db,
			q{SELECT string_agg(name || ':' || state, ',' ORDER BY name) FROM calabi_push.sync_status}),
		'cdc:copied,fr:copied', "$label: both syncs show as copied");
	like(
		$n->safe_psql($db, q{SELECT last_error FROM calabi_push.sync_status WHERE name = 'fr'}),
		qr/is a copy made in $where.*calabi_push\.adopt_sync\('fr'\)/,
		"$label: last_error says why and names adopt_sync");

	for my $call ("start_sync('fr')", "resync('cdc')")
	{
		my $e = sql_error($n, $db, "SELECT calabi_push.$call");
		is($e->{sqlstate}, '55000', "$label: $call is refused");
		like($e->{hint}, qr/calabi_push\.adopt_sync/, "$label: $call: the hint names adopt_sync");
	}

	# a restart: the probe stops the copies instead of starting them
	$n->restart;
	ok( $n->poll_query_until($db, q{
			SELECT bool_and(NOT enabled) FROM calabi_push.sync}),
		"$label: after a restart the probe stopped the copies");
	sleep 2;
	is( $n->safe_psql($db, qq{
			SELECT count(*) FROM pg_stat_activity
			 WHERE datname = '$db' AND application_name LIKE 'calabi_push sync %'}),
		'0', "$label: no worker runs for a copy");
	is( $n->safe_psql($db,
			q{SELECT string_agg(name || ':' || state, ',' ORDER BY name) FROM calabi_push.sync_status}),
		'cdc:copied,fr:copied', "$label: still copied after the restart");
	is($n->safe_psql($db, q{SELECT count(*) FROM pg_replication_slots WHERE database = current_database()}),
		'0', "$label: the copy created no slot");
}

sub adopt_and_run
{
	my ($n, $db, $label) = @_;
	my $new_id = $n->safe_psql($db, q{SELECT calabi_push.adopt_sync('fr')});
	isnt($new_id, $orig_id{fr}, "$label: adopt_sync gave fr a new id");
	my $cdc_id = $n->safe_psql($db, q{SELECT calabi_push.adopt_sync('cdc')});
	is( $n->safe_psql($db, q{
			SELECT string_agg(s.name || ':' || v.state || ':' || s.next_batch_seq || ':' || s.batches_sent
			                  || ':' || (s.cdc_lsn IS NULL), ',' ORDER BY s.name)
			  FROM calabi_push.sync_status v JOIN calabi_push.sync s USING (name)}),
		'cdc:stopped:1:0:true,fr:stopped:1:0:true',
		"$label: adopted: stopped, a fresh start");
	is( $n->safe_psql($db, q{
			SELECT count(*) FROM calabi_push.sync_stream WHERE phase <> 'pending' OR checkpoint IS NOT NULL}),
		'0', "$label: adopted: every table is read again");
	my $e = sql_error($n, $db, q{SELECT calabi_push.adopt_sync('fr')});
	like($e->{message}, qr/is not a copy/, "$label: adopting twice is refused");

	# secrets are not dumped
	$n->safe_psql($db, qq{SELECT calabi_push.alter_destination('recv', token => '$token')});
	$n->safe_psql($db, q{SELECT calabi_push.start_sync('fr'); SELECT calabi_push.start_sync('cdc');});
	ok(wait_for_state_in($n, $db, 'fr', 'idle'), "$label: the adopted full refresh sync ran");
	ok(wait_for_state_in($n, $db, 'cdc', 'running'), "$label: the adopted CDC sync streams");
	my @mine = grep { ($_->{headers}{'Calabi-Sync-Id'} // '') eq $new_id } @{ $recv->requests };
	# (a 503 may precede: the receiver's own database restarted with the node)
	ok(grep({ ($_->{status} // 0) == 200 } @mine) && !grep({ ($_->{status} // 0) >= 400 && $_->{status} < 500 } @mine),
		"$label: the adopted sync sent under its new id, accepted");
	my $slot = 'calabi_push_' . ($cdc_id =~ s/-//gr);
	is( $n->safe_psql($db, qq{
			SELECT database FROM pg_replication_slots WHERE slot_name = '$slot'}),
		$db, "$label: the adopted CDC sync has a slot of its own in its database");
}

##############################################################################
# (a) restored into a second database of the same cluster
$node->safe_psql('postgres', 'CREATE DATABASE copy');
$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('copy'), '-f', $dump ],
	'restored into database copy');
check_copy($node, 'copy', 'same cluster', 'another database of this cluster');
ok(wait_for_state($node, 'fr', 'idle', 'running'), 'same cluster: the original full refresh sync runs');
ok(wait_for_state($node, 'cdc', 'running'), 'same cluster: the original CDC sync runs');
orig_slot_ok('same cluster');

# A copy that got past the checks (forged here by rebinding it by hand)
# meets the original's slot: it refuses to take it over, and stops.
$node->safe_psql('copy', q{
	UPDATE calabi_push.sync
	   SET home_database = (SELECT oid FROM pg_database WHERE datname = current_database())
	 WHERE name = 'cdc'});
$node->safe_psql('copy', qq{SELECT calabi_push.alter_destination('recv', token => '$token')});
$node->safe_psql('copy', q{SELECT calabi_push.resync('cdc')});  # stopped by the probe: resync starts it again
ok( $node->poll_query_until('copy', q{
		SELECT state = 'error' AND last_error LIKE '%belongs to another database%'
		  FROM calabi_push.sync_status WHERE name = 'cdc'}),
	'forged copy: stopped in error on meeting a slot of another database')
  or diag($node->safe_psql('copy', q{SELECT state, last_error FROM calabi_push.sync_status}));
orig_slot_ok('forged copy');
$node->safe_psql('copy', q{SELECT calabi_push.drop_sync('cdc')});
sleep 2;
orig_slot_ok('forged copy dropped (its probe drops slots of its own database only)');

# and the copy's full refresh sync: adopted, it runs under its own id
$node->safe_psql('copy', q{SELECT calabi_push.drop_sync('fr')});
$node->safe_psql('copy', 'DROP EXTENSION calabi_push CASCADE');
$node->safe_psql('postgres', 'DROP DATABASE copy');
$node->safe_psql('postgres', 'CREATE DATABASE copy2');
$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('copy2'), '-f', $dump ],
	'restored into database copy2');
is($node->safe_psql('copy2', q{SELECT count(*) FROM calabi_push.sync_status WHERE state = 'copied'}),
	'2', 'copy2: both copied');

# privileges: adopting is managing the sync (run_as member or superuser);
# keeping the identity is a superuser's call
$node->safe_psql('copy2', q{
	CREATE ROLE cp_copy_nobody LOGIN;
	CREATE ROLE cp_copy_owner LOGIN;
	GRANT USAGE ON SCHEMA calabi_push TO cp_copy_nobody, cp_copy_owner;
	GRANT EXECUTE ON FUNCTION calabi_push.adopt_sync(text, boolean) TO cp_copy_nobody, cp_copy_owner;
});
my $e = sql_error($node, 'copy2', q{SET ROLE cp_copy_nobody; SELECT calabi_push.adopt_sync('fr')});
is($e->{sqlstate}, '42501', 'a role that is not a member of run_as cannot adopt');
$e = sql_error($node, 'copy2', q{SET ROLE cp_copy_nobody; SELECT calabi_push.adopt_sync('fr', keep_identity => true)});
is($e->{sqlstate}, '42501', 'nor keep its identity');
# a member of run_as (here the superuser who made the syncs) that is no
# superuser itself may not declare the original gone
my $run_as = $node->safe_psql('copy2', q{SELECT run_as FROM calabi_push.sync WHERE name = 'fr'});
$node->safe_psql('copy2', qq{GRANT "$run_as" TO cp_copy_owner});
$e = sql_error($node, 'copy2', q{SET ROLE cp_copy_owner; SELECT calabi_push.adopt_sync('fr', keep_identity => true)});
is($e->{sqlstate}, '42501', 'a member of run_as cannot keep the identity');
like($e->{hint}, qr/adopt_sync\('fr'\)/, 'the hint gives the call that gives it its own');
$e = sql_error($node, 'copy2', q{SELECT calabi_push._adopt_sync('fr', false)});
ok(defined $e, 'the implementation cannot be called directly');
$e = sql_error($node, 'copy2', q{SELECT calabi_push._copied('fr', 1, 1, 1, false)});
ok(!defined $e, 'a superuser may call _copied');
$e = sql_error($node, 'copy2', q{SET ROLE cp_copy_nobody; SELECT calabi_push._copied('fr', 1, 1, 1, false)});
is($e->{sqlstate}, '42501', '_copied refuses roles that may not read sync_status');
is($node->safe_psql('copy2', q{SELECT count(*) FROM calabi_push.sync_status WHERE state = 'copied'}),
	'2', 'copy2: still both copied');
adopt_and_run($node, 'copy2', 'same cluster');
orig_slot_ok('same cluster, adopted copy running');

##############################################################################
# (b) restored into a second cluster
my $other = calabi_node('other');
allow_output_plugin($other);
$other->safe_psql('postgres', 'CREATE DATABASE restored');
$other->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $other->connstr('restored'), '-f', $dump ],
	'restored into another cluster');
check_copy($other, 'restored', 'other cluster', 'another cluster');
adopt_and_run($other, 'restored', 'other cluster');
orig_slot_ok('other cluster');

##############################################################################
# (c) a physical clone promoted while its primary still runs: the promoted
# server asks primary_conninfo, finds the primary alive, and marks the
# syncs copies
$node->backup('b');
my $clone = PostgreSQL::Test::Cluster->new('clone');
$clone->init_from_backup($node, 'b', has_streaming => 1);
$clone->start;
$node->wait_for_catchup($clone);
$clone->promote;
$clone->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the clone was not promoted';
ok( $clone->poll_query_until('postgres', q{
		SELECT bool_and(NOT enabled) FROM calabi_push.sync WHERE name IN ('fr', 'cdc')}),
	'promoted clone: the probe stopped the syncs');
is( $clone->safe_psql('postgres', q{
		SELECT string_agg(name || ':' || state, ',' ORDER BY name) FROM calabi_push.sync_status}),
	'cdc:copied,fr:copied', 'promoted clone: both syncs show as copied');
like($clone->safe_psql('postgres', q{SELECT last_error FROM calabi_push.sync_status WHERE name = 'fr'}),
	qr/copy on a promoted server.*primary_conninfo/, 'promoted clone: last_error says why');
sleep 2;
is( $clone->safe_psql('postgres', q{
		SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'calabi_push sync %'}),
	'0', 'promoted clone: no sync worker runs');
$e = sql_error($clone, 'postgres', q{SELECT calabi_push.start_sync('fr')});
is($e->{sqlstate}, '55000', 'promoted clone: start_sync is refused');
# the primary goes on, undisturbed
ok(wait_for_state($node, 'cdc', 'running'), 'primary: the CDC sync still streams');
$node->safe_psql('postgres', q{SELECT calabi_push.resync('fr')});
ok(wait_for_state($node, 'fr', 'idle'), 'primary: a new full refresh run completes');
is($node->safe_psql('postgres', q{SELECT coalesce(last_error, '') FROM calabi_push.sync WHERE name = 'fr'}),
	'', 'primary: nothing was refused');
orig_slot_ok('primary after the clone');
# a restart of the clone does not make them the clone's
$clone->restart;
sleep 2;
is( $clone->safe_psql('postgres', q{
		SELECT string_agg(name || ':' || state, ',' ORDER BY name) FROM calabi_push.sync_status}),
	'cdc:copied,fr:copied', 'promoted clone: still copied after its restart');

# the original's requests were all accepted: no batch number was taken twice
my @orig = grep { ($_->{headers}{'Calabi-Sync-Id'} // '') =~ /^($orig_id{fr}|$orig_id{cdc})$/ } @{ $recv->requests };
ok(@orig > 0 && !grep({ ($_->{status} // 0) >= 400 && $_->{status} < 500 } @orig),
	'the original syncs\' batches were never refused');

$clone->stop;
$other->stop;
$recv->stop;
$node->stop;
done_testing();
