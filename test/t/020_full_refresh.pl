# Full refresh end to end: a table holding every type family, a view, a
# materialized view, a keyless table and a partitioned table land in the
# reference receiver's database equal to the source, value for value, over
# HTTPS with a bearer token; the wire follows the protocol; a second run
# replaces the copy (overwrite); append adds; secrets never reach the log.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

# log_statement as in production: with 'all', PostgreSQL itself logs every
# statement's text, secrets included (see docs/destinations.md)
my ($node, $recv, $token) = sync_setup(name => 'full', conf => "log_statement = 'none'");

$node->safe_psql('postgres', everything_sql('schema') . everything_sql('rows'));
$node->safe_psql('postgres', <<'SQL');
CREATE VIEW happy_things AS SELECT id, tx, e FROM everything WHERE id % 3 = 0;
CREATE MATERIALIZED VIEW totals AS SELECT b, count(*) AS n, sum(i8) AS s FROM everything GROUP BY b;
CREATE TABLE keyless (x int, y text);
INSERT INTO keyless SELECT g, 'row ' || g FROM generate_series(1, 57) g;
CREATE TABLE events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO events SELECT g, '2024-01-01'::date + g FROM generate_series(1, 600) g;
SQL

$node->safe_psql('postgres', q{
	SELECT calabi_push.create_sync('full', 'recv',
	  ARRAY['everything', 'happy_things', 'totals', 'keyless', 'events']::regclass[],
	  options => '{"batch_rows": 25, "chunk_rows": 10}');
	SELECT calabi_push.start_sync('full');
});
ok(wait_for_state($node, 'full', 'idle', 'error'), 'the run completes');
is(sync_status($node, 'full', 'state || coalesce(last_error, \'\')'), 'idle', 'no error');

assert_dest_equals_source($node, 'public', 'everything', 'every type family');
assert_dest_equals_source($node, 'public', 'happy_things', 'a view');
assert_dest_equals_source($node, 'public', 'totals', 'a materialized view');
assert_dest_equals_source($node, 'public', 'keyless', 'a keyless table');
assert_dest_equals_source($node, 'public', 'events', 'a partitioned table');

# the wire: numbers strictly increasing, idempotency keys, gzip, one sync
my @reqs = grep { ($_->{path} // '') eq '/ingest' } @{ $recv->requests };
my @seqs = map { $_->{batch_seq} } @reqs;
is_deeply([ sort { $a <=> $b } @seqs ], \@seqs, 'batch numbers in sending order');
my %seen;
ok(!(grep { $seen{$_}++ } @seqs), 'no batch number used twice');
is(scalar(grep { ($_->{status} // 0) == 200 } @reqs), scalar(@reqs), 'every request accepted');

my $status = sync_status($node, 'full', 'batches_sent, records_sent, bytes_sent > 0');
my $records = $node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM everything) + (SELECT count(*) FROM happy_things)
	     + (SELECT count(*) FROM totals) + (SELECT count(*) FROM keyless)
	     + (SELECT count(*) FROM events)});
ok(scalar(@seqs) >= int(($records + 24) / 25),
	"batches of at most 25 records: $records records in " . scalar(@seqs) . ' requests');
is($status, scalar(@seqs) . "|$records|t", 'sync_status counts batches, records and bytes');
is($node->safe_psql('postgres', q{
	SELECT string_agg(phase || ':' || percent_done, ',' ORDER BY ordinal)
	  FROM calabi_push.stream_status WHERE sync = 'full'}),
	'done:100.0,done:100.0,done:100.0,done:100.0,done:100.0', 'stream_status: all done');

# a second run replaces the destination's copy: deleted rows disappear
$node->safe_psql('postgres', q{
	DELETE FROM keyless WHERE x > 10;
	UPDATE events SET id = id + 10000 WHERE id <= 5;
	SELECT calabi_push.start_sync('full');
});
ok($node->poll_query_until('postgres', q{
	SELECT state = 'idle' AND completed_at IS NOT NULL FROM calabi_push.sync_status WHERE name = 'full'}),
	'second run completes');
assert_dest_equals_source($node, 'public', 'keyless', 'overwrite: rows deleted at the source are gone');
assert_dest_equals_source($node, 'public', 'events', 'overwrite: updated keys replaced');
is($node->safe_psql('postgres',
	q{SELECT string_agg(generation::text, ',' ORDER BY ordinal) FROM calabi_push.stream_status WHERE sync = 'full'}),
	'2,2,2,2,2', 'each stream read under a new generation');

# resync of one table of an idle sync reads that table now, and only it
$node->safe_psql('postgres', q{
	INSERT INTO keyless VALUES (500, 'after resync');
	SELECT calabi_push.resync('full', 'keyless');
});
ok($node->poll_query_until('postgres', q{
	SELECT phase = 'done' AND generation = 3 FROM calabi_push.stream_status
	 WHERE sync = 'full' AND relation = 'keyless'::regclass}),
	'resync: the table is read again at once, under a new generation');
is($node->safe_psql('postgres',
	q{SELECT string_agg(generation::text, ',' ORDER BY ordinal) FROM calabi_push.stream_status WHERE sync = 'full'}),
	'2,2,2,3,2', 'resync: the other tables were not read again');
assert_dest_equals_source($node, 'public', 'keyless', 'resync');

# append: every run adds a copy
$node->safe_psql('postgres', q{
	CREATE SCHEMA app;
	CREATE TABLE app.log (id int PRIMARY KEY, msg text);
	INSERT INTO app.log SELECT g, 'm' || g FROM generate_series(1, 40) g;
	SELECT calabi_push.create_sync('app', 'recv', ARRAY['app.log']::regclass[],
	  destination_sync_mode => 'append');
	SELECT calabi_push.start_sync('app');
});
ok(wait_for_state($node, 'app', 'idle'), 'append run completes');
$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('app')});
ok($node->poll_query_until('calabi_dest', q{SELECT count(*) = 80 FROM app.log}),
	'append: a second run adds a second copy');

# keys whose names need quoting, read in several chunks (a key looked up
# by its quoted name once lost rows, or crashed the worker)
$node->safe_psql('postgres', q{
	CREATE SCHEMA "Odd Schema";
	CREATE TABLE "Odd Schema"."Int Keyed" ("Id" int PRIMARY KEY, v text);
	INSERT INTO "Odd Schema"."Int Keyed" SELECT g, 'v' || g FROM generate_series(1, 55) g;
	CREATE TABLE "Odd Schema"."Text Keyed" ("Key" text, "Part" int, v text, PRIMARY KEY ("Key", "Part"));
	INSERT INTO "Odd Schema"."Text Keyed" SELECT 'k' || (g % 7), g, 'v' || g FROM generate_series(1, 55) g;
	SELECT calabi_push.create_sync('quoted', 'recv',
	  ARRAY['"Odd Schema"."Int Keyed"', '"Odd Schema"."Text Keyed"']::regclass[],
	  options => '{"batch_rows": 20, "chunk_rows": 10}');
	SELECT calabi_push.start_sync('quoted');
});
ok(wait_for_state($node, 'quoted', 'idle', 'error'), 'quoted keys: the run completes');
is(sync_status($node, 'quoted', 'state || coalesce(last_error, \'\')'), 'idle', 'quoted keys: no error');
assert_dest_equals_source($node, 'Odd Schema', 'Int Keyed', 'a quoted integer key');
assert_dest_equals_source($node, 'Odd Schema', 'Text Keyed', 'a quoted composite text key');

# secrets: never in the server log, never in a view
my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$token\E/, 'the token never appears in the server log');
my $views = $node->safe_psql('postgres', q{
	SELECT (SELECT string_agg(d::text, ' ') FROM calabi_push.destinations d)
	    || (SELECT string_agg(s::text, ' ') FROM calabi_push.sync_status s)});
unlike($views, qr/\Q$token\E/, 'no view shows the token');

$recv->stop;
$node->stop;
done_testing();
