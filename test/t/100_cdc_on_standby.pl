# A CDC sync that runs on a hot standby (option "run_on" naming the
# standby's cluster_name; logical decoding on a standby, PostgreSQL 16 and
# later): the standby's worker makes the sync's slot there (waiting for the
# primary to record its running transactions), backfills the table with
# chunks placed by replay position instead of a logical message (a
# standby writes no WAL), and streams what the primary writes as the
# standby replays it.  A write load runs on the primary through the
# backfill and the streaming, and the standby is restarted in the middle:
# the destination ends equal to the source, and nothing is decoded on the
# primary (it has no slot of the sync).  Promoted, the standby carries the
# sync on through the same slot.
#
# Before 16 create_sync refuses a CDC sync that runs on a standby, naming
# the version, with a hint; the standby's worker refuses one stored anyway.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use CalabiPushTest;
use CalabiSyncTest;

my $rows = 6000;

# the destination lives on a node of its own: the standby's worker sends
# there, and the primary's WAL holds only the source's writes
my $dest = dest_node();
my ($primary, $recv) = sync_setup(name => 'primary', init => { allows_streaming => 1 },
	dest_node => $dest);
allow_output_plugin($primary);
$primary->safe_psql('postgres', qq{
	CREATE TABLE t (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
	INSERT INTO t SELECT g, md5(g::text), 0 FROM generate_series(1, $rows) g;
});

my $create = q{SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[], method => 'cdc',
	options => '{"run_on": "standby1", "batch_rows": 200, "chunk_rows": 250}')};

# the standby: its own physical slot on the primary, and feedback, so that
# the primary keeps the catalog rows the standby's logical slot needs
$primary->safe_psql('postgres', q{SELECT pg_create_physical_replication_slot('sb')});
$primary->backup('b');
# (PostgreSQL::Test::Cluster starts each server with its node's name as
# cluster_name)
my $standby = PostgreSQL::Test::Cluster->new('standby1');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->append_conf('postgresql.conf', q{
primary_slot_name = 'sb'
hot_standby_feedback = on
});
$standby->start;
$primary->wait_for_catchup($standby);

if ($primary->safe_psql('postgres', 'SHOW server_version_num') < 160000)
{
	my $e = sql_error($primary, 'postgres', $create);
	ok($e, 'before 16: create_sync refuses a CDC sync that runs on another server');
	is($e->{sqlstate}, '0A000', '... feature_not_supported');
	like($e->{message}, qr/a CDC sync cannot run on a standby of PostgreSQL \d+/,
		'... naming the version');
	like($e->{hint}, qr/Logical decoding on a standby needs PostgreSQL 16 or later/,
		'... with the way out');
	is($primary->safe_psql('postgres', 'SELECT count(*) FROM calabi_push.sync'), '0',
		'... and creates nothing');

	# one stored all the same (a dump of a newer server): the standby's
	# worker refuses it as loudly, before anything is made
	$primary->safe_psql('postgres', q{
		SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[], method => 'cdc');
		UPDATE calabi_push.sync SET options = options || '{"run_on": "standby1"}' WHERE name = 's';
		SELECT calabi_push.start_sync('s');});
	ok( wait_until(sub { slurp_file($standby->logfile) =~
				/ERROR:  change data capture cannot decode on a standby of PostgreSQL \d+\n(?:[^\n]*\n)*?[^\n]*HINT:  Run the sync on the primary/ }),
		'before 16: the standby\'s worker refuses to decode, with a hint');
	ok( $standby->poll_query_until('postgres', q{
			SELECT last_error LIKE '%cannot decode on a standby of PostgreSQL%'
			  FROM calabi_push.sync_status WHERE name = 's'}),
		'... and sync_status on the standby says why');
	is($standby->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical'}),
		'0', '... having made no slot');
	$recv->stop;
	$standby->stop;
	$primary->stop;
	$dest->stop;
	done_testing();
	exit 0;
}

# a transaction with an xid stays open on the primary: the standby's new
# slot waits for it to end (as a slot on the primary would), once the
# primary has recorded it as running
my ($in, $out, $err) = ('', '', '');
my $old = IPC::Run::start([ 'psql', '-X', '-q', '-A', '-t', '-d', $primary->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err);
$in .= "BEGIN; INSERT INTO t VALUES (-1, 'from the old transaction'); SELECT 'xid', txid_current();\n";
$old->pump until $out =~ /xid\|(\d+)/;

$primary->safe_psql('postgres', $create);
$primary->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
my $slot = sync_status($primary, 's', 'slot_name');
is(sync_status($primary, 's', 'state'), 'on_standby', 'the primary shows that the sync runs on a standby');

# the standby's probe finds the sync and starts its worker, which makes the
# slot: it waits for a record of the primary's running transactions (the
# bgwriter writes one every 15 s while the primary writes;
# pg_log_standby_snapshot() at once), then for those to end
ok( wait_until(sub { slurp_file($standby->logfile) =~
			/creating replication slot "$slot" on a standby waits for the primary to record its running transactions/ }),
	'the standby\'s worker makes the slot and says what it waits for');
$primary->safe_psql('postgres', 'SELECT pg_log_standby_snapshot()');
ok($standby->poll_query_until('postgres', q{
		SELECT state = 'waiting_for_transactions' FROM calabi_push.sync_status WHERE name = 's'}),
	'sync_status on the standby: waiting_for_transactions');
like(sync_status($standby, 's', 'state_detail'),
	qr/waits for the primary to record the transactions running there, and for those to end.*pg_log_standby_snapshot\(\)/,
	'... state_detail says what ends the wait');
sleep 1;
unlike(slurp_file($standby->logfile), qr/replication slot "$slot" created at/,
	'the slot is not made while the primary\'s transaction runs');
$in .= "COMMIT;\n";
$old->finish;
ok( wait_until(sub {
			$primary->safe_psql('postgres', 'SELECT pg_log_standby_snapshot()');
			slurp_file($standby->logfile) =~ /replication slot "$slot" created at/ }),
	'the slot is made on the standby once that transaction ended');
is($standby->safe_psql('postgres',
		"SELECT slot_type || ':' || NOT temporary FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'logical:true', 'the standby holds the sync\'s persistent logical slot');
is($primary->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'0', 'the primary has no slot of the sync');

# a write load on the primary while the standby backfills and streams
my $dir = PostgreSQL::Test::Utils::tempdir;
PostgreSQL::Test::Utils::append_to_file("$dir/small.sql", <<"SQL");
\\set a random(1, $rows + 2000)
\\set b random(1, $rows + 2000)
INSERT INTO t VALUES (:a, 'ins ' || :a) ON CONFLICT (id) DO UPDATE SET n = t.n + 1, v = 'ups ' || :b;
UPDATE t SET n = n + 1, v = 'upd ' || :a WHERE id = :b;
DELETE FROM t WHERE id = (:a * 7) % ($rows + 2000) + 1;
SQL
PostgreSQL::Test::Utils::append_to_file("$dir/large.sql", <<"SQL");
\\set a random(1, $rows)
BEGIN;
INSERT INTO t SELECT g, 'big ' || g FROM generate_series(:a, :a + 199) g
  ON CONFLICT (id) DO UPDATE SET n = t.n + 1, v = 'bigup';
DELETE FROM t WHERE id BETWEEN :a + 50 AND :a + 120;
COMMIT;
SQL

sub start_workload
{
	my ($seconds) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'pgbench', '-n', '-c', '4', '-j', '2', '-T', $seconds, '-R', '100',
		  '-f', "$dir/small.sql\@30", '-f', "$dir/large.sql\@1",
		  '-h', $primary->host, '-p', $primary->port, 'postgres' ],
		'>', \$out, '2>', \$err);
	return $h;
}

sub sync_diag
{
	my ($what) = @_;
	diag("$what: " . $standby->safe_psql('postgres', q{
		SELECT row_to_json(s) FROM calabi_push.sync_status s WHERE name = 's'}));
	diag($standby->safe_psql('postgres', q{
		SELECT row_to_json(s) FROM calabi_push.stream_status s WHERE sync = 's'}));
	diag($standby->safe_psql('postgres', q{SELECT row_to_json(r) FROM pg_replication_slots r}));
}

# Waits until the standby has replayed everything the primary wrote and the
# destination holds exactly the source's rows (the sync acknowledges what
# it decoded at its own pace: it is the destination that tells).
sub wait_dest_equals_source
{
	my ($what) = @_;
	$primary->wait_for_catchup($standby);
	my $src = join("\n", @{ stream_rows_source($primary, 'public.t') });
	my $ok = wait_until(sub {
			join("\n", @{ stream_rows_dest_in($dest, 'calabi_dest', 'public', 't') }) eq $src });
	ok($ok, "$what: the destination caught up with the source") or sync_diag($what);
	assert_dest_equals_source_in($primary, 'postgres', 'calabi_dest', 'public', 't', $what, $dest);
}

my $load = start_workload(25);
ok( $standby->poll_query_until('postgres', q{
		SELECT rows_sent > 0 FROM calabi_push.stream_status WHERE sync = 's'}),
	'the standby backfills while the primary writes') or sync_diag('backfill');
is(sync_status($standby, 's', 'state'), 'running', 'sync_status on the standby: running');

# restarts of the standby in the middle: the worker stops cleanly with the
# standby, and goes on from its checkpoint when it is back; once while it
# backfills (most likely: the backfill takes seconds), once while it streams
$standby->restart;
ok( $standby->poll_query_until('postgres', q{
		SELECT bool_and(phase = 'done') FROM calabi_push.stream_status WHERE sync = 's'}),
	'the backfill completed under the load') or sync_diag('backfill');
sleep 3;
$standby->restart;
my $stops = () = slurp_file($standby->logfile) =~ /the sync stopped (?:cleanly|without the acknowledgement)/g;
is($stops, 2, 'each restart of the standby stopped the worker');
$load->finish;
wait_dest_equals_source('after the load and the restarts');
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't',
	'all along on a standby');

# and it keeps streaming
$primary->safe_psql('postgres', q{
	INSERT INTO t SELECT g, 'late ' || g FROM generate_series(100001, 100300) g;
	UPDATE t SET v = 'late update' WHERE id % 11 = 0;
	DELETE FROM t WHERE id % 17 = 0;
});
wait_dest_equals_source('later writes');
is($primary->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'0', 'still no slot of the sync on the primary');
unlike(slurp_file($standby->logfile), qr/cannot execute .* during recovery|read-only transaction|PANIC/,
	'the standby\'s worker wrote nothing the standby refuses');

# --- drop_sync on the primary: the standby's probe drops the slot the
# standby made for the sync (left, it would hold WAL there, and the
# primary's vacuum through hot_standby_feedback)
$primary->safe_psql('postgres', q{
	CREATE TABLE u (id int PRIMARY KEY);
	INSERT INTO u VALUES (1), (2);
	SELECT calabi_push.create_sync('s2', 'recv', ARRAY['u']::regclass[], method => 'cdc',
	         options => '{"run_on": "standby1"}');
	SELECT calabi_push.start_sync('s2');});
my $slot2 = sync_status($primary, 's2', 'slot_name');
ok( wait_until(sub {
			$primary->safe_psql('postgres', 'SELECT pg_log_standby_snapshot()');
			$standby->safe_psql('postgres', q{
				SELECT state = 'running' FROM calabi_push.sync_status WHERE name = 's2'}) eq 't' }),
	'a second sync runs on the standby');
$primary->safe_psql('postgres', q{SELECT calabi_push.drop_sync('s2')});
ok( $standby->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name = '$slot2'"),
	'dropped on the primary: its slot on the standby is dropped too');
like(slurp_file($standby->logfile), qr/calabi_push dropped replication slot "$slot2": its sync no longer exists/,
	'... and the standby\'s log says so');

# --- promotion (beside the live old primary, as the sync runs on the
# standby): the sync carries on there through the slot the standby made,
# across the new timeline; a table read again on the promoted server
# places its chunks by logical message, as on any primary
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the standby was not promoted';
# (until the promoted server has taken the sync's state file into its
# catalog, the sync is bound to the old timeline: resync would refuse)
ok( $standby->poll_query_until('postgres', q{
		SELECT standby_import > 0 FROM calabi_push.sync WHERE name = 's'}),
	'promoted: the sync\'s state was taken into the catalog');
$standby->safe_psql('postgres', q{
	INSERT INTO t SELECT g, 'promoted ' || g FROM generate_series(200001, 200200) g;
	UPDATE t SET v = 'promoted update' WHERE id % 13 = 0;
	SELECT calabi_push.resync('s', 't');
	DELETE FROM t WHERE id % 19 = 0;
});
ok( $standby->poll_query_until('postgres', q{
		SELECT bool_and(phase = 'done') FROM calabi_push.stream_status WHERE sync = 's'}),
	'promoted: the table was read again') or sync_diag('promoted');
my $src = join("\n", @{ stream_rows_source($standby, 'public.t') });
ok( wait_until(sub {
			join("\n", @{ stream_rows_dest_in($dest, 'calabi_dest', 'public', 't') }) eq $src }),
	'promoted: the destination caught up with the new primary') or sync_diag('promoted');
assert_dest_equals_source_in($standby, 'postgres', 'calabi_dest', 'public', 't', 'promoted', $dest);
is(sync_status($standby, 's', "state || ':' || coalesce(last_error, '') || ':' || slot_name"),
	"running::$slot", 'promoted: running through the same slot, no error');

$recv->stop;
$standby->stop;
$primary->stop;
$dest->stop;
done_testing();
