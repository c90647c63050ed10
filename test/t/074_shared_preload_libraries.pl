# shared_preload_libraries: with it, CREATE EXTENSION is silent; without
# it, CREATE EXTENSION warns at once (with how to fix it) and leaves no
# helper behind, preview works, and starting a sync says what to change and
# leaves nothing half-started.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;

my $node = calabi_node('preloaded');

# a preloaded library: CREATE EXTENSION is silent
$node->safe_psql('postgres', 'CREATE DATABASE preloaded');
my ($pret, $pout, $perr) = $node->psql('preloaded', q{CREATE EXTENSION calabi_push});
is($pret, 0, 'with shared_preload_libraries, CREATE EXTENSION succeeds');
unlike($perr, qr/WARNING/, 'with shared_preload_libraries, CREATE EXTENSION does not warn');

$node->stop;

# without shared_preload_libraries
my $plain = PostgreSQL::Test::Cluster->new('no_preload');
$plain->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$plain->start;
# CREATE EXTENSION says at once that syncs cannot run, and how to fix it
my ($cret, $cout, $cerr) = $plain->psql('postgres', q{CREATE EXTENSION calabi_push},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
is($cret, 0, 'without shared_preload_libraries, CREATE EXTENSION succeeds');
like($cerr, qr/WARNING:  55000: calabi_push is not loaded at server start/,
	'CREATE EXTENSION without shared_preload_libraries warns at once');
like($cerr, qr/HINT:  Add "calabi_push" to shared_preload_libraries/,
	'the warning says how to fix it');
is($plain->safe_psql('postgres', q{SELECT count(*) FROM pg_proc WHERE proname = '_warn_unless_preloaded'}),
	'0', 'the check leaves no function behind');
$plain->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY);
	INSERT INTO t VALUES (1);
});
is($plain->safe_psql('postgres', q{SELECT calabi_push.preview('t')::text}), '{"id":1}',
	'without shared_preload_libraries, preview works');
$plain->safe_psql('postgres', q{
	SELECT calabi_push.create_destination('d', 'https://ingest.example.com/i');
	SELECT calabi_push.create_sync('s', 'd', ARRAY['t']::regclass[]);
});
my ($ret, $out, $err) = $plain->psql('postgres', q{SELECT calabi_push.start_sync('s')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($ret, 0, 'start_sync fails without shared_preload_libraries');
like($err, qr/55000: calabi_push is not loaded at server start/, 'the error says what is wrong');
like($err, qr/HINT:  Add "calabi_push" to shared_preload_libraries/, 'and how to fix it');
is($plain->safe_psql('postgres', q{SELECT enabled FROM calabi_push.sync}), 'f',
	'nothing was left half-started');
$plain->stop;

done_testing();
