# A CDC sync with the option "failover" (PostgreSQL 17's failover slots):
# its slot is a failover slot, which a standby with sync_replication_slots
# copies; with synchronized_standby_slots on the primary, the destination
# never receives a change the standby lacks.  The primary is killed while a
# writer commits, the standby promoted, and the sync resumes there from its
# own checkpoint through the synced slot: no resync (no table read again,
# same slot), and the destination ends equal to the new primary, rows
# written before the kill and after the promotion included.  A slot whose
# failover flag differs from the option is aligned when the worker takes it.
#
# Before 17 there are no failover slots: create_sync refuses the option,
# naming it and the server's version, with a hint (pg_regress cannot hold
# that message: it differs between versions).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

# the destination database lives on a node of its own: it outlives the
# primary
my $dest = dest_node();
my ($primary, $recv) = sync_setup(name => 'primary', init => { allows_streaming => 1 },
	dest_node => $dest);
allow_output_plugin($primary);
$primary->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 2000) g;
});

my $create = q{SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[], method => 'cdc',
	options => '{"failover": true, "batch_rows": 200, "chunk_rows": 500}')};

if ($primary->safe_psql('postgres', 'SHOW server_version_num') < 170000)
{
	my $e = sql_error($primary, 'postgres', $create);
	ok($e, 'before 17: create_sync refuses "failover": true');
	is($e->{sqlstate}, '0A000', '... feature_not_supported');
	like($e->{message}, qr/sync option "failover" is not supported on PostgreSQL \d+/,
		'... naming the option and the version');
	like($e->{hint}, qr/Failover slots need PostgreSQL 17 or later; leave the option out/,
		'... with the way out');
	is($primary->safe_psql('postgres', 'SELECT count(*) FROM calabi_push.sync'), '0',
		'... and creates nothing');
	# false asks for nothing the server lacks
	$primary->safe_psql('postgres', q{
		SELECT calabi_push.create_sync('f', 'recv', ARRAY['t']::regclass[], method => 'cdc',
		  options => '{"failover": false}')});
	is($primary->safe_psql('postgres', q{SELECT options->'failover' FROM calabi_push.sync WHERE name = 'f'}),
		'false', 'before 17: "failover": false is accepted and stored');
	# one stored true (a dump of a 17 server): the sync runs, and says
	# once at its start that its slot does not fail over
	$primary->safe_psql('postgres', q{
		UPDATE calabi_push.sync SET options = options || '{"failover": true}' WHERE name = 'f';
		SELECT calabi_push.start_sync('f');});
	ok(wait_for_state($primary, 'f', 'running'), 'before 17: a sync stored with "failover": true runs');
	like(slurp_file($primary->logfile),
		qr/WARNING:  sync "f" asks for a failover slot, which PostgreSQL \d+ does not have/,
		'... and warns that its slot is not copied to standbys');
	$recv->stop;
	$primary->stop;
	done_testing();
	exit 0;
}

# the standby's physical slot, which the primary's failover slots wait for
$primary->safe_psql('postgres', q{
	SELECT pg_create_physical_replication_slot('sb');
	ALTER SYSTEM SET synchronized_standby_slots = 'sb';
	SELECT pg_reload_conf();
});
$primary->safe_psql('postgres', $create);
is($primary->safe_psql('postgres', q{SELECT options->'failover' FROM calabi_push.sync WHERE name = 's'}),
	'true', 'the option is stored');
$primary->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});

# the standby is not there yet: the sync decodes nothing and says why
ok(wait_for_state($primary, 's', 'waiting_for_standbys'),
	'the standby of synchronized_standby_slots is missing: the sync waits for it');
like(sync_status($primary, 's', 'state_detail'), qr/synchronized_standby_slots \(sb\)/,
	'... state_detail names the setting');
my $slot = sync_status($primary, 's', 'slot_name');
is($primary->safe_psql('postgres', "SELECT failover FROM pg_replication_slots WHERE slot_name = '$slot'"),
	't', 'the sync\'s slot is a failover slot');

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
# slot synchronization connects to a database of the primary: dbname
my ($host, $port) = ($primary->host, $primary->port);
$standby->append_conf('postgresql.conf', qq{
primary_slot_name = 'sb'
hot_standby_feedback = on
sync_replication_slots = on
primary_conninfo = 'host=$host port=$port dbname=postgres application_name=standby'
});
$standby->start;
# the backup brought the primary's synchronized_standby_slots along: once
# promoted, the standby has no standby of its own to wait for
$standby->safe_psql('postgres', q{
	ALTER SYSTEM RESET synchronized_standby_slots;
	SELECT pg_reload_conf();
});
ok(cdc_caught_up($primary, 's'), 'the standby is there: the sync backfills and catches up');
is(sync_status($primary, 's', 'state'), 'running', '... and runs');

# writes under way while the standby copies the slot
$primary->safe_psql('postgres', q{
	INSERT INTO t SELECT g, 'before sync ' || g FROM generate_series(2001, 2500) g;
	UPDATE t SET v = 'updated' WHERE id % 10 = 0;
	DELETE FROM t WHERE id % 13 = 0;
});
ok(cdc_caught_up($primary, 's'), 'the sync caught up with the writes');
ok( $standby->poll_query_until('postgres', qq{
		SELECT synced AND NOT temporary AND failover FROM pg_replication_slots
		 WHERE slot_name = '$slot'}),
	'the standby holds a synced copy of the slot');
# (the generation itself jumps at the failover, above any the old primary
# may have used after what was replicated: _identity_moved)
my $read = $primary->safe_psql('postgres',
	q{SELECT phase || ':' || rows_sent FROM calabi_push.stream_status WHERE sync = 's'});

# more writes, then the primary dies while a writer commits row after row
$primary->safe_psql('postgres', q{
	INSERT INTO t SELECT g, 'before kill ' || g FROM generate_series(3001, 3300) g;
	UPDATE t SET v = 'updated again' WHERE id % 7 = 0;
});
$primary->wait_for_replay_catchup($standby);
my ($wout, $werr) = ('', '');
my $writer = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $primary->connstr('postgres'), '-c', q{
		DO $$ BEGIN
		  FOR i IN 4001 .. 100000 LOOP
		    INSERT INTO t VALUES (i, 'writer ' || i);
		    COMMIT;
		  END LOOP;
		END $$} ],
	'>', \$wout, '2>', \$werr);
ok($primary->poll_query_until('postgres', 'SELECT count(*) > 200 FROM t WHERE id > 4000'),
	'a writer commits row after row');
$primary->stop('immediate');
$writer->finish;

$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the standby was not promoted';
ok(wait_for_state($standby, 's', 'running'), 'promoted: the sync runs on the new primary');
$standby->safe_psql('postgres', q{
	INSERT INTO t SELECT g, 'after promotion ' || g FROM generate_series(200001, 200300) g;
	DELETE FROM t WHERE id BETWEEN 3001 AND 3050;
});
ok(cdc_caught_up($standby, 's'), 'promoted: the sync caught up');
is(sync_status($standby, 's', "state || ':' || coalesce(last_error, '') || ':' || slot_name"),
	"running::$slot", 'promoted: running through the same slot, no error');
is($standby->safe_psql('postgres',
		q{SELECT phase || ':' || rows_sent FROM calabi_push.stream_status WHERE sync = 's'}),
	$read, 'promoted: no resync (the table was not read again)');
ok( $dest->safe_psql('calabi_dest', q{SELECT count(*) FROM public.t WHERE v LIKE 'after promotion %'}) == 300,
	'promoted: rows written after the promotion arrived');
ok( $dest->safe_psql('calabi_dest', q{SELECT count(*) FROM public.t WHERE v LIKE 'before kill %'}) > 0,
	'rows written before the kill arrived');
# every change the destination received is on the new primary, and the
# other way round: none of the writer's rows the standby lacked was sent
assert_dest_equals_source_in($standby, 'postgres', 'calabi_dest', 'public', 't',
	'promoted: destination equals the new primary', $dest);
unlike(slurp_file($standby->logfile), qr/read every table again|is ahead of the sync's checkpoint/,
	'promoted: no error about the slot');

# a slot whose flag differs from the option is aligned when the worker
# takes it
$standby->safe_psql('postgres', q{SELECT calabi_push.stop_sync('s')});
ok(wait_for_state($standby, 's', 'stopped'), 'stopped');
$standby->poll_query_until('postgres',
	"SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = '$slot'")
  or die 'the worker did not release the slot';
$standby->safe_psql('postgres', "ALTER_REPLICATION_SLOT $slot (FAILOVER false)",
	replication => 'database');
is($standby->safe_psql('postgres', "SELECT failover FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'f', 'the slot\'s failover flag was turned off behind the sync\'s back');
$standby->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
ok( $standby->poll_query_until('postgres',
		"SELECT failover FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'the worker sets it again, as the option says');
like(slurp_file($standby->logfile), qr/replication slot "$slot" is now a failover slot/,
	'... and logs it');
$standby->safe_psql('postgres', q{INSERT INTO t VALUES (300001, 'after the restart')});
ok(cdc_caught_up($standby, 's'), 'and goes on');
assert_dest_equals_source_in($standby, 'postgres', 'calabi_dest', 'public', 't',
	'after the restart', $dest);

$recv->stop;
$standby->stop;
$dest->stop;
done_testing();
