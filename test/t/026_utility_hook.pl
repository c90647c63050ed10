# The ProcessUtility hook, as an attacker and as a DBA see it.
#
# DROP DATABASE, ALTER DATABASE ... RENAME and ... SET TABLESPACE stop the
# target database's sync workers before they run (test 023 covers the
# owner's commands): a role that may not run the command must not be able to
# interrupt them.  An unprivileged login role runs each against database
# postgres from template1: each fails with PostgreSQL's own permission error,
# and the running worker is the same process, with no batch numbers
# reserved anew (a restarted worker reserves a new block).
#
# DROP ROLE of a role that a sync of this database reads as (run_as) is
# refused, naming the syncs, with a hint; alone or among several roles, by a
# superuser or a CREATEROLE role; a role without the privilege to drop gets
# PostgreSQL's own error (no sync names); once the sync is dropped, the role
# can be.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use CalabiReceiver;
use CalabiSyncTest;

# requests may wait at the receiver longer than this test takes
my ($node, $recv) = sync_setup(name => 'hook', dest_options => '{"request_timeout": "1 hour"}');

sub sql { $node->safe_psql('postgres', shift) }

# psql as $role in $db: ($ret, $stdout, $stderr)
sub psql_as
{
	my ($role, $db, $sql) = @_;
	my ($ret, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\n$sql",
		extra_params => [ '-U', $role ]);
	return ($ret, $out, $err);
}

# ---------------------------------------------------------------------------
# (a) DROP / RENAME / SET TABLESPACE by a role that may not run them
# ---------------------------------------------------------------------------
sql(q{
	CREATE TABLE t (id int PRIMARY KEY, label text);
	INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 50) g;
	CREATE ROLE mallory LOGIN;
	CREATE ROLE creator LOGIN CREATEDB;
});
sql(q{SELECT calabi_push.create_sync('held', 'recv', ARRAY['t']::regclass[],
        options => '{"batch_rows": 10}')});
# every request is held 300 s at the receiver: the worker stays in its
# first request, the same process, unless something stops it
$recv->fault({ kind => 'stall', seconds => 300, apply => JSON::PP::false, count => 1000 });
sql(q{SELECT calabi_push.start_sync('held')});
ok(wait_until(sub { ($recv->faults->{queue}[0]{count} // 1000) < 1000 }, 60),
	'sync held: its first request is held at the receiver');

# what identifies the worker and its run: its pid, and the batch numbers
# reserved in the catalog (a new worker reserves a new block)
sub worker_identity
{
	return sql(q{
		SELECT st.pid || ' ' || s.next_batch_seq || ' ' || st.state
		  FROM calabi_push.sync s JOIN calabi_push.sync_status st ON st.name = s.name
		 WHERE s.name = 'held'});
}
my $identity = worker_identity();
like($identity, qr/^\d+ \d+ running$/, "the worker runs: pid, next_batch_seq, state ($identity)");
my ($pid) = split / /, $identity;

for my $case (
	[ 'DROP DATABASE postgres', qr/must be owner of database postgres/ ],
	[ 'ALTER DATABASE postgres RENAME TO stolen', qr/must be owner of database postgres/ ],
	[ 'ALTER DATABASE postgres SET TABLESPACE pg_default', qr/must be owner of database postgres/ ],
	# a role with CREATEDB that does not own the database
	[ 'ALTER DATABASE postgres RENAME TO stolen', qr/must be owner of database postgres/, 'creator' ])
{
	my ($cmd, $expected, $role) = @$case;
	$role //= 'mallory';
	my ($ret, $out, $err) = psql_as($role, 'template1', $cmd);
	isnt($ret, 0, "$role: $cmd fails");
	like($err, qr/42501/, "$role: $cmd: insufficient_privilege");
	like($err, $expected, "$role: $cmd: PostgreSQL's own permission error");
	is(worker_identity(), $identity, "$role: $cmd: the same worker runs on, no batch numbers reserved anew");
	is(sql("SELECT count(*) FROM pg_stat_activity WHERE pid = $pid"), '1',
		"$role: $cmd: the worker process is alive");
}

# looped, as the report of the issue did it
my ($ret, $out, $err) = psql_as('mallory', 'template1',
	join("\n", map { "DROP DATABASE postgres;" } 1 .. 5));
is(worker_identity(), $identity, 'five DROP DATABASE attempts in a row: still the same worker');

# the owner of a database without CREATEDB cannot rename it: the worker
# of its sync is not stopped for that either
sql(q{CREATE DATABASE owned OWNER mallory});
($ret, $out, $err) = psql_as('mallory', 'template1', 'ALTER DATABASE owned RENAME TO owned2');
like($err, qr/permission denied to rename database/,
	'an owner without CREATEDB: RENAME refused by PostgreSQL');
is(sql(q{SELECT count(*) FROM pg_database WHERE datname = 'owned'}), '1', 'database owned keeps its name');

sql(q{SELECT calabi_push.stop_sync('held')});
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid"),
	'stop_sync still stops the worker');
$recv->clear_faults;

# ---------------------------------------------------------------------------
# (b) DROP ROLE of a run_as role
# ---------------------------------------------------------------------------
sql(q{
	CREATE ROLE readers NOLOGIN;
	GRANT SELECT ON t TO readers;
	-- reader gets its privileges through readers: it owns nothing and is
	-- granted nothing itself, so that DROP ROLE reader has nothing of
	-- PostgreSQL's own to object to
	CREATE ROLE reader NOLOGIN IN ROLE readers;
	CREATE ROLE bystander NOLOGIN;
	CREATE ROLE role_admin LOGIN CREATEROLE;
});
# PostgreSQL 16 and later: CREATEROLE alone no longer lets a role drop any
# other role, only those it has the ADMIN option on (it has it on the roles
# it creates); without it, PostgreSQL's own check refuses before ours.
sql(q{GRANT reader TO role_admin WITH ADMIN OPTION, INHERIT FALSE, SET FALSE})
	if $node->pg_version >= 16;
sql(q{SELECT calabi_push.create_sync('as_reader', 'recv', ARRAY['t']::regclass[],
        options => '{"run_as": "reader"}');
      SELECT calabi_push.create_sync('as_reader_2', 'recv', ARRAY['t']::regclass[],
        options => '{"run_as": "reader"}');});

my $e = sql_error($node, 'postgres', 'DROP ROLE reader');
is($e && $e->{sqlstate}, '2BP01', 'DROP ROLE of a run_as role: refused (dependent_objects_still_exist)');
like($e && $e->{message}, qr/role "reader" cannot be dropped because calabi_push syncs of database "postgres" read as it/,
	'the message names the role and the database');
like($e && $e->{detail}, qr/Syncs reading as role "reader": as_reader, as_reader_2\./, 'the detail names the syncs');
like($e && $e->{hint}, qr/drop_sync\(\).*run_as/, 'the hint: drop the syncs, or recreate them with another run_as');
is(sql(q{SELECT count(*) FROM pg_roles WHERE rolname = 'reader'}), '1', 'the role is still there');

$e = sql_error($node, 'postgres', 'DROP ROLE bystander, reader');
is($e && $e->{sqlstate}, '2BP01', 'DROP ROLE of several roles, one of them a run_as role: refused');
is(sql(q{SELECT count(*) FROM pg_roles WHERE rolname IN ('bystander', 'reader')}), '2',
	'neither role was dropped (one statement)');

$e = sql_error($node, 'postgres', 'DROP ROLE IF EXISTS no_such_role, reader');
is($e && $e->{sqlstate}, '2BP01', 'DROP ROLE IF EXISTS with a run_as role among them: refused');

($ret, $out, $err) = psql_as('role_admin', 'postgres', 'DROP ROLE reader');
like($err, qr/2BP01.*cannot be dropped because calabi_push syncs/,
	'a CREATEROLE role (which cannot read the catalog): refused as well');
unlike($err, qr/permission denied for (table|relation) sync/, 'the check does not need its privileges');

($ret, $out, $err) = psql_as('mallory', 'postgres', 'DROP ROLE reader');
like($err, qr/permission denied to drop role/, 'a role that may not drop roles: PostgreSQL\'s own error');
unlike($err, qr/as_reader/, 'which names no sync');

($ret, $out, $err) = $node->psql('postgres', 'BEGIN; DROP ROLE bystander; DROP ROLE reader; COMMIT;');
is(sql(q{SELECT count(*) FROM pg_roles WHERE rolname IN ('bystander', 'reader')}), '2',
	'in a transaction: the refusal rolls the whole transaction back');

sql(q{SELECT calabi_push.drop_sync('as_reader')});
$e = sql_error($node, 'postgres', 'DROP ROLE reader');
like($e && $e->{detail}, qr/Syncs reading as role "reader": as_reader_2\.$/, 'one sync left: it alone is named');
sql(q{SELECT calabi_push.drop_sync('as_reader_2')});
is(sql_error($node, 'postgres', 'DROP ROLE bystander, reader'), undef, 'no sync reads as it any more: DROP ROLE succeeds');
is(sql(q{SELECT count(*) FROM pg_roles WHERE rolname IN ('bystander', 'reader')}), '0', 'both roles are gone');

# a destination belongs to the role named in created_by: a later role of
# the same name would inherit it, so its owner cannot be dropped either
sql(q{
	CREATE ROLE dest_owner NOLOGIN;
	GRANT USAGE ON SCHEMA calabi_push TO dest_owner;
	GRANT EXECUTE ON FUNCTION calabi_push.create_destination(text, text, text, jsonb) TO dest_owner;
});
$node->safe_psql('postgres', q{SET ROLE dest_owner;
	SELECT calabi_push.create_destination('owned_dest', 'https://ingest.example.com/v1');});
sql(q{REVOKE ALL ON SCHEMA calabi_push FROM dest_owner;
	REVOKE ALL ON FUNCTION calabi_push.create_destination(text, text, text, jsonb) FROM dest_owner;});
$e = sql_error($node, 'postgres', 'DROP ROLE dest_owner');
is($e && $e->{sqlstate}, '2BP01', 'DROP ROLE of a destination owner: refused');
like($e && $e->{message}, qr/role "dest_owner" cannot be dropped because it owns calabi_push destinations/,
	'the message says it owns destinations');
like($e && $e->{detail}, qr/Destinations owned by role "dest_owner": owned_dest\./, 'the detail names them');
sql(q{SELECT calabi_push.drop_destination('owned_dest')});
is(sql_error($node, 'postgres', 'DROP ROLE dest_owner'), undef, 'without its destinations it can be dropped');

# a database without calabi_push: DROP ROLE is not looked at
sql('CREATE ROLE plain NOLOGIN');
is(sql_error($node, 'template1', 'DROP ROLE plain'), undef, 'DROP ROLE from a database without calabi_push');

# the owner's own commands still work (023 covers a running sync)
($ret, $out, $err) = $node->psql('template1', 'DROP DATABASE owned');
is($ret, 0, 'a superuser drops database owned');

$recv->stop;
$node->stop;
done_testing();
