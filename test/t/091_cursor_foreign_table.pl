# The cursor method on a foreign table (postgres_fdw, to another database
# of the same server): its rows are stored by another server, so no xmin;
# the first run reads every row in cursor order, later runs the rows at or
# past the previous largest value, the comparison and the order pushed to
# the foreign server or applied here, whichever the planner chooses.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;
use CalabiXminTest;

my ($node, $recv) = sync_setup(name => 'cursorfdw', receiver => { log_bodies => 1 });
my ($host, $port) = ($node->host, $node->port);

$node->safe_psql('postgres', q{CREATE DATABASE remote});
$node->safe_psql('remote', q{
	CREATE TABLE events (id int PRIMARY KEY, seq bigint, v text);
	INSERT INTO events SELECT g, g / 3, 'v' || g FROM generate_series(1, 30) g;
});
$node->safe_psql('postgres', qq{
	CREATE EXTENSION postgres_fdw;
	CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw
	  OPTIONS (host '$host', port '$port', dbname 'remote');
	CREATE USER MAPPING FOR CURRENT_USER SERVER remote;
	CREATE FOREIGN TABLE events (id int, seq bigint, v text) SERVER remote;
	SELECT calabi_push.create_sync('f', 'recv', ARRAY['events']::regclass[], method => 'cursor',
	  options => '{"cursor": "seq", "chunk_rows": 4, "batch_rows": 6}');
});
is($node->safe_psql('postgres', q{
	SELECT destination_sync_mode FROM calabi_push.sync WHERE name = 'f'}),
	'append', 'a foreign table has no key: append by default');

my $since = method_run($node, $recv, 'f');
is(xmin_checkpoint($node, 'f', 'read'), 'full', 'run 1 is a full read');
is_deeply(run_records($recv, 'f', $since), [ 1 .. 30 ], 'run 1 sent every row once');
is(xmin_checkpoint($node, 'f', 'since'), '10', 'the position is the largest seq sent');

$node->safe_psql('remote', q{
	INSERT INTO events VALUES (31, 10, 'at the largest value'), (32, 12, 'past it'), (33, 4, 'below it');
	UPDATE events SET seq = 11 WHERE id = 5;
});
$since = method_run($node, $recv, 'f');
is(xmin_checkpoint($node, 'f', 'read'), 'incremental', 'run 2 is incremental');
is_deeply(run_records($recv, 'f', $since), [ 5, 30, 31, 32 ],
	'run 2 sent the rows at or past the largest value, not the one below it');
is(xmin_checkpoint($node, 'f', 'since'), '12', 'the position moved');

$recv->stop;
$node->stop;
done_testing();
