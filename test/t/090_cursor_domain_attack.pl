# An attacker's cursor column of a domain type whose CHECK constraint
# calls the attacker's function (which tries to make the attacker a
# superuser).  The worker reads the stream's position back at each run (a
# table's largest value sent, a view's position): as the domain's base
# type, so the domain's check, and the attacker's code, never run in the
# worker (a domain's CHECK has no say in where a read goes, and one added
# or changed since must not stop the sync).  The runs complete, and the
# attacker stays what it was.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;
use CalabiXminTest;

my ($node, $recv) = sync_setup(name => 'cursordomain', receiver => { log_bodies => 1 });

$node->safe_psql('postgres', q{
	CREATE ROLE mallory LOGIN;
	GRANT CREATE ON SCHEMA public TO mallory;
	CREATE TABLE public.seen (who name, super boolean, backend text);
	GRANT INSERT ON public.seen TO mallory;
});
grant_sync_management($node, 'mallory');
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.evil(v timestamptz) RETURNS boolean
	LANGUAGE plpgsql AS $$
	BEGIN
	    INSERT INTO public.seen
	    SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
	           (SELECT backend_type FROM pg_stat_activity WHERE pid = pg_backend_pid());
	    BEGIN
	        EXECUTE 'ALTER ROLE mallory SUPERUSER';
	    EXCEPTION WHEN OTHERS THEN NULL;
	    END;
	    RETURN true;
	END $$;
	CREATE DOMAIN public.stamp AS timestamptz CHECK (public.evil(VALUE));
	CREATE TABLE public.events (id int PRIMARY KEY, at public.stamp);
	INSERT INTO public.events SELECT g, '2026-01-01'::timestamptz + g * interval '1 hour'
	  FROM generate_series(1, 5) g;
	CREATE VIEW public.events_v AS SELECT * FROM public.events;
	SELECT calabi_push.create_sync('t', 'recv', ARRAY['public.events']::regclass[],
	  method => 'cursor', options => '{"cursor": "at"}');
	SELECT calabi_push.create_sync('v', 'recv', ARRAY['public.events_v']::regclass[],
	  method => 'cursor', options => '{"cursor": "at"}');
}, extra_params => [ '-U', 'mallory' ]);
$node->safe_psql('postgres', q{TRUNCATE public.seen});

# two runs each: the second reads the first's position back
for my $sync (qw(t v))
{
	method_run($node, $recv, $sync);
	$node->safe_psql('postgres', q{INSERT INTO public.events VALUES (100, '2027-01-01')},
		extra_params => [ '-U', 'mallory' ])
	  if $sync eq 't';
	method_run($node, $recv, $sync);
}

is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}),
	'f', 'the attacker is not a superuser');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM public.seen WHERE backend IS DISTINCT FROM 'client backend'}), '0',
	'the domain\'s check never ran in the worker');
is($node->safe_psql('postgres', q{
	SELECT coalesce(string_agg(DISTINCT who || ':' || super, ','), '') FROM public.seen}),
	'mallory:false', 'it ran only in the attacker\'s own session, as the attacker');

$recv->stop;
$node->stop;
done_testing();
