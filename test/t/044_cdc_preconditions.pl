# CDC preconditions re-checked mid-stream: what a CDC sync sends is only
# ever what run_as may see, and what its destination can apply.  Row-level
# security enabled with a policy, REPLICA IDENTITY NOTHING under
# append_dedup, SET UNLOGGED, DROP OWNED BY the run_as role, the primary key
# dropped: each stops the sync in error naming the table, the cause and the
# way out, before anything of the violating change is sent (SET UNLOGGED
# and DROP OWNED with no later change of the table); start_sync refuses
# while the cause stands; after the fix, start_sync recovers: the table is
# read again and the destination equals the source.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'cdcpre', receiver => { log_bodies => 1 });
allow_output_plugin($node);

# Running, every table backfilled, everything committed so far acknowledged.
sub caught_up
{
	my ($sync) = @_;
	my $lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	return $node->poll_query_until('postgres', qq{
		SELECT state = 'running' AND lsn_acknowledged >= '$lsn'
		   AND (SELECT bool_and(phase = 'done') FROM calabi_push.stream_status WHERE sync = '$sync')
		  FROM calabi_push.sync_status WHERE name = '$sync'});
}

# After the fix: start_sync, the table read again (generation 2), caught up.
sub recovers
{
	my ($sync, $table, $name) = @_;
	$node->safe_psql('postgres', "SELECT calabi_push.start_sync('$sync')");
	ok($node->poll_query_until('postgres', qq{
		SELECT phase = 'done' AND generation = 2 FROM calabi_push.stream_status
		 WHERE sync = '$sync'}), "$name: after the fix, start_sync reads the table again");
	ok(caught_up($sync), "$name: running and caught up");
	assert_dest_equals_source($node, 'public', $table, "$name: recovered");
	$node->safe_psql('postgres', "SELECT calabi_push.drop_sync('$sync')");
}

# The RECORDs sent for a stream.
sub records
{
	my ($sync, $stream) = @_;
	return [ grep { ($_->{type} // '') eq 'RECORD' && $_->{record}{stream} eq $stream }
		  @{ sent_messages($recv, $sync) } ];
}

sub start_cdc
{
	my ($sync, $table, $options) = @_;
	$options //= '{}';
	$node->safe_psql('postgres', qq{
		SELECT calabi_push.create_sync('$sync', 'recv', ARRAY['$table']::regclass[],
		  method => 'cdc', options => '$options');
		SELECT calabi_push.start_sync('$sync');
	});
	ok(caught_up($sync), "$sync: backfilled and caught up");
}

$node->safe_psql('postgres', q{CREATE ROLE reader LOGIN; CREATE ROLE owned_reader LOGIN});

# --- row-level security enabled, with a policy, mid-stream ---
$node->safe_psql('postgres', q{
	CREATE TABLE rls_t (id int PRIMARY KEY, owner text, v text);
	INSERT INTO rls_t VALUES (1, 'reader', 'seen');
	GRANT SELECT ON rls_t TO reader;
});
start_cdc('rls', 'rls_t', '{"run_as": "reader"}');
$node->safe_psql('postgres', q{
	ALTER TABLE rls_t ENABLE ROW LEVEL SECURITY;
	CREATE POLICY own_rows ON rls_t FOR SELECT TO reader USING (owner = 'reader');
	INSERT INTO rls_t VALUES (2, 'bob', 'hidden');
});
is($node->safe_psql('postgres', q{SET ROLE reader; SELECT count(*) FROM rls_t WHERE v = 'hidden'}),
	'0', 'rls: reader cannot see the new row');
ok(wait_for_state($node, 'rls', 'error'), 'rls: the sync stops in error');
like(sync_status($node, 'rls', 'last_error'),
	qr/table public\.rls_t has row-level security that role reader is subject to: .*ALTER TABLE public\.rls_t DISABLE ROW LEVEL SECURITY or run_as a role with BYPASSRLS, then start_sync/,
	'rls: the error names the table, the cause and the fix');
ok(!(grep { ($_->{record}{data}{v} // '') eq 'hidden' } @{ records('rls', 'rls_t') }),
	'rls: the hidden row was never sent');
is($node->safe_psql('calabi_dest', q{SELECT count(*) FROM public.rls_t WHERE v = 'hidden'}), '0',
	'rls: ... and is not at the destination');
my $e = sql_error($node, 'postgres', q{SELECT calabi_push.start_sync('rls')});
like($e->{message} // '', qr/table "public.rls_t" has row-level security/, 'rls: start_sync refuses while it stays on');
like($e->{hint} // '', qr/ALTER TABLE public.rls_t DISABLE ROW LEVEL SECURITY/, '... with a hint');
is(sync_status($node, 'rls', 'state'), 'error', 'rls: still in error');
$node->safe_psql('postgres', q{
	ALTER TABLE rls_t DISABLE ROW LEVEL SECURITY;
	INSERT INTO rls_t VALUES (3, 'reader', 'after the fix');
});
recovers('rls', 'rls_t', 'rls');

# --- REPLICA IDENTITY NOTHING under append_dedup ---
$node->safe_psql('postgres', q{
	CREATE TABLE ri_t (id int PRIMARY KEY, v text);
	INSERT INTO ri_t SELECT g, 'v' || g FROM generate_series(1, 5) g;
});
start_cdc('ri', 'ri_t');
$node->safe_psql('postgres', q{
	ALTER TABLE ri_t REPLICA IDENTITY NOTHING;
	DELETE FROM ri_t WHERE id = 1;
});
ok(wait_for_state($node, 'ri', 'error'), 'replica identity nothing: the sync stops in error');
like(sync_status($node, 'ri', 'last_error'),
	qr/table public\.ri_t has REPLICA IDENTITY NOTHING: .*ALTER TABLE public\.ri_t REPLICA IDENTITY DEFAULT, then start_sync/,
	'replica identity nothing: the error names the table, the cause and the fix');
ok(!(grep { !defined $_->{record}{data}{id} || defined $_->{record}{data}{_calabi_cdc_deleted_at} }
	  @{ records('ri', 'ri_t') }), 'replica identity nothing: no delete (and no null key) was sent');
$e = sql_error($node, 'postgres', q{SELECT calabi_push.start_sync('ri')});
like($e->{message} // '', qr/REPLICA IDENTITY NOTHING/, 'replica identity nothing: start_sync refuses');
$node->safe_psql('postgres', q{ALTER TABLE ri_t REPLICA IDENTITY DEFAULT});
recovers('ri', 'ri_t', 'replica identity nothing');

# --- SET UNLOGGED, and no later change of the table ---
$node->safe_psql('postgres', q{
	CREATE TABLE ul_t (id int PRIMARY KEY, v text);
	INSERT INTO ul_t SELECT g, 'v' || g FROM generate_series(1, 5) g;
});
start_cdc('ul', 'ul_t');
$node->safe_psql('postgres', q{ALTER TABLE ul_t SET UNLOGGED});
ok(wait_for_state($node, 'ul', 'error'), 'unlogged: the sync stops in error with no later change of the table');
like(sync_status($node, 'ul', 'last_error'),
	qr/table public\.ul_t is no longer WAL-logged: .*ALTER TABLE public\.ul_t SET LOGGED, then start_sync/,
	'unlogged: the error names the table, the cause and the fix');
# not in the WAL: only the read after the fix can bring it
$node->safe_psql('postgres', q{INSERT INTO ul_t VALUES (10, 'while unlogged')});
$e = sql_error($node, 'postgres', q{SELECT calabi_push.start_sync('ul')});
like($e->{message} // '', qr/it is an unlogged table/, 'unlogged: start_sync refuses');
$node->safe_psql('postgres', q{ALTER TABLE ul_t SET LOGGED});
recovers('ul', 'ul_t', 'unlogged');

# --- DROP OWNED BY the run_as role, and no later change of the table ---
$node->safe_psql('postgres', q{
	CREATE TABLE own_t (id int PRIMARY KEY, v text);
	INSERT INTO own_t VALUES (1, 'a');
	GRANT SELECT ON own_t TO owned_reader;
});
start_cdc('own', 'own_t', '{"run_as": "owned_reader"}');
$node->safe_psql('postgres', q{DROP OWNED BY owned_reader});
ok(wait_for_state($node, 'own', 'error'), 'drop owned: the sync stops in error');
like(sync_status($node, 'own', 'last_error'),
	qr/role owned_reader may no longer SELECT table public\.own_t: .*GRANT SELECT ON public\.own_t TO owned_reader, then start_sync/,
	'drop owned: the error names the table, the cause and the fix');
$node->safe_psql('postgres', q{INSERT INTO own_t VALUES (2, 'while revoked')});
$e = sql_error($node, 'postgres', q{SELECT calabi_push.start_sync('own')});
like($e->{message} // '', qr/permission denied for relation "public.own_t"/, 'drop owned: start_sync refuses');
is(scalar(grep { ($_->{record}{data}{v} // '') eq 'while revoked' } @{ records('own', 'own_t') }), 0,
	'drop owned: nothing made while revoked was sent');
$node->safe_psql('postgres', q{GRANT SELECT ON own_t TO owned_reader});
recovers('own', 'own_t', 'drop owned');

# --- the primary key dropped ---
$node->safe_psql('postgres', q{
	CREATE TABLE pk_t (id int CONSTRAINT pk_t_pkey PRIMARY KEY, v text);
	INSERT INTO pk_t SELECT g, 'v' || g FROM generate_series(1, 5) g;
});
start_cdc('pk', 'pk_t');
$node->safe_psql('postgres', q{
	ALTER TABLE pk_t DROP CONSTRAINT pk_t_pkey;
	INSERT INTO pk_t VALUES (100, 'keyless');
});
ok(wait_for_state($node, 'pk', 'error'), 'key dropped: the sync stops in error');
like(sync_status($node, 'pk', 'last_error'),
	qr/table public\.pk_t has no primary key any more: .*ADD PRIMARY KEY .*resync\('pk', 'public\.pk_t'\)/,
	'key dropped: the error names the table, the cause, the fix and resync');
ok(!(grep { ($_->{type} // '') eq 'STREAM' && $_->{stream}{name} eq 'pk_t' && !@{ $_->{stream}{primary_key} } }
	  @{ sent_messages($recv, 'pk') }), 'key dropped: no keyless STREAM was sent');
ok(!(grep { ($_->{record}{data}{v} // '') eq 'keyless' } @{ records('pk', 'pk_t') }),
	'key dropped: the change made without the key was not sent');
$e = sql_error($node, 'postgres', q{SELECT calabi_push.start_sync('pk')});
like($e->{message} // '', qr/has no primary key/, 'key dropped: start_sync refuses');
$node->safe_psql('postgres', q{ALTER TABLE pk_t ADD PRIMARY KEY (id)});
recovers('pk', 'pk_t', 'key dropped');

$recv->stop;
$node->stop;
done_testing();
