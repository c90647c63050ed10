# Nobody acts with more than the DBA granted: a role with the documented
# management grants plants code where a privileged process runs it -- a
# view's function and a row-level security policy run by a sync worker's
# read, an expression index's function run by autovacuum's ANALYZE -- and
# tries to create and start a sync that reads as the bootstrap superuser
# (whose read would run a second view that makes her a superuser).  Each
# route ends with her still unprivileged and no sync created on her behalf;
# the planted code sees the sync's role as session_user, never a superuser.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(
	name => 'identity',
	conf => "autovacuum_naptime = 1\nlog_line_prefix = '%m [%p] <%b> '\n");

sub sql { $node->safe_psql('postgres', shift) }

# mallory: a login role with the grants docs/syncs.md tells a DBA to give
sql(q{CREATE ROLE mallory LOGIN; CREATE SCHEMA mallory AUTHORIZATION mallory;});
grant_sync_management($node, 'mallory');

sub as_mallory
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', $sql, extra_params => [ '-U', 'mallory' ]);
}

# The planted code: try to create and start a sync that reads as the
# bootstrap superuser, then to become superuser directly; log what it saw
# and what happened, and never fail (so the read it is planted in goes on).
as_mallory(q{
	CREATE TABLE mallory.target (id int PRIMARY KEY);
	INSERT INTO mallory.target VALUES (1);
	-- what the superuser sync would read: its function makes mallory superuser
	CREATE FUNCTION mallory.escalate() RETURNS int LANGUAGE plpgsql VOLATILE AS $$
	BEGIN
		ALTER ROLE mallory SUPERUSER;
		RETURN 1;
	EXCEPTION WHEN OTHERS THEN
		RETURN 0;
	END $$;
	CREATE VIEW mallory.v2 AS SELECT id, mallory.escalate() AS e FROM mallory.target;

	CREATE FUNCTION mallory.pwn(route text) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
	DECLARE
		outcome text := 'created';
		su name := (SELECT rolname FROM pg_roles WHERE oid = 10);
	BEGIN
		BEGIN
			PERFORM calabi_push.create_sync('pwn_' || route, 'recv',
				ARRAY['mallory.v2']::regclass[],
				options => jsonb_build_object('run_as', su));
			PERFORM calabi_push.start_sync('pwn_' || route);
		EXCEPTION WHEN OTHERS THEN
			outcome := SQLERRM;
		END;
		BEGIN
			RESET ROLE;
			ALTER ROLE mallory SUPERUSER;
			outcome := outcome || ' | ALTER ROLE worked';
		EXCEPTION WHEN OTHERS THEN
			outcome := outcome || ' | ' || SQLERRM;
		END;
		RAISE LOG 'planted route=% session_user=% current_user=% outcome=%',
			route, session_user, current_user, outcome;
		RETURN true;
	END $$;
});

sub attempts
{
	my ($route) = @_;
	my @seen;
	# each with the process type that log_line_prefix puts before it
	for my $line (split /\n/, slurp_file($node->logfile))
	{
		push @seen, "backend=$1 $2"
		  if $line =~ /<([^>]*)> LOG:  planted route=$route (.*)$/;
	}
	return \@seen;
}

sub assert_unprivileged
{
	my ($what) = @_;
	is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}),
		'f', "$what: mallory is still not a superuser");
	is(sql(q{SELECT string_agg(name, ',') FROM calabi_push.sync WHERE name LIKE 'pwn%'}),
		'', "$what: no sync was created on her behalf");
}

# ---------------------------------------------------------------------------
# 1. A view's function, run by the worker's read of her own sync.
as_mallory(q{
	CREATE VIEW mallory.v AS SELECT id, mallory.pwn('view') AS p FROM mallory.target;
	SELECT calabi_push.create_sync('mine_view', 'recv', ARRAY['mallory.v']::regclass[]);
	SELECT calabi_push.start_sync('mine_view');
});
ok(wait_for_state($node, 'mine_view', 'idle'), 'view route: her own sync of the view ran');
ok(wait_until(sub { @{ attempts('view') } > 0 }), 'view route: the planted function ran in the read');
my $seen = attempts('view')->[0];
like($seen, qr/session_user=mallory current_user=mallory/,
	'view route: the read runs with her as session_user, not a superuser');
like($seen, qr/cannot be called (from a background process|within a security-restricted operation)/,
	'view route: create_sync refused inside the read');
like($seen, qr/permission denied to alter role|must be superuser|cannot set parameter "role"/,
	'view route: RESET ROLE and ALTER ROLE lead nowhere');
assert_unprivileged('view route');

# ---------------------------------------------------------------------------
# 2. A row-level security policy's function, run by the worker's read.
as_mallory(q{
	CREATE TABLE mallory.rls_t (id int PRIMARY KEY);
	INSERT INTO mallory.rls_t VALUES (1), (2);
	ALTER TABLE mallory.rls_t ENABLE ROW LEVEL SECURITY;
	ALTER TABLE mallory.rls_t FORCE ROW LEVEL SECURITY;
	CREATE POLICY p ON mallory.rls_t USING (mallory.pwn('policy'));
	SELECT calabi_push.create_sync('mine_policy', 'recv', ARRAY['mallory.rls_t']::regclass[]);
	SELECT calabi_push.start_sync('mine_policy');
});
ok(wait_for_state($node, 'mine_policy', 'idle'), 'policy route: her own sync ran');
ok(wait_until(sub { grep { /session_user=mallory/ } @{ attempts('policy') } }),
	'policy route: the policy function ran in the read, as her');
like(join("\n", @{ attempts('policy') }), qr/cannot be called (from a background process|within a security-restricted operation)/,
	'policy route: create_sync refused inside the read');
unlike(join("\n", @{ attempts('policy') }), qr/session_user=(?!mallory)/,
	'policy route: never a superuser session');
assert_unprivileged('policy route');

# ---------------------------------------------------------------------------
# 3. An expression index's function, run by autovacuum's ANALYZE (as the
# table's owner, in the autovacuum worker whose session is a superuser's).
as_mallory(q{
	CREATE FUNCTION mallory.idx_fn(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
	BEGIN
		PERFORM mallory.pwn('analyze');
		RETURN i;
	END $$;
	CREATE TABLE mallory.idx_t (i int)
		WITH (autovacuum_analyze_threshold = 1, autovacuum_analyze_scale_factor = 0);
	CREATE INDEX ON mallory.idx_t (mallory.idx_fn(i));
});
# her own session's INSERT runs the function too, as her: refused for lack of
# membership in the superuser role, as it should be
as_mallory(q{INSERT INTO mallory.idx_t SELECT generate_series(1, 50)});
ok( $node->poll_query_until('postgres', q{
		SELECT coalesce(autoanalyze_count, 0) > 0 FROM pg_stat_user_tables
		 WHERE relid = 'mallory.idx_t'::regclass}),
	'analyze route: autovacuum analyzed the table');
ok(wait_until(sub { grep { /backend=autovacuum worker/ } @{ attempts('analyze') } }),
	'analyze route: the index function ran in autovacuum');
my @auto = grep { /backend=autovacuum worker/ } @{ attempts('analyze') };
like($auto[0], qr/cannot be called from a background process/,
	'analyze route: create_sync refused in autovacuum');
assert_unprivileged('analyze route');

# The legitimate path still works: a superuser acting for herself.
sql(q{SELECT calabi_push.create_sync('su_own', 'recv', ARRAY['mallory.target']::regclass[])});
is(sql(q{SELECT run_as::text FROM calabi_push.sync WHERE name = 'su_own'}),
	sql(q{SELECT rolname FROM pg_roles WHERE oid = 10}),
	'a superuser calling directly creates syncs as herself');

done_testing();
