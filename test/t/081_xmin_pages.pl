# An incremental xmin run looks only into the pages changed since the
# previous run (their LSN says so): the run reports how many pages it
# examined and skipped.  An unlogged table's pages carry no LSN: every page
# is examined, and still only the changed rows are sent.  A table rewritten
# between runs (VACUUM FULL keeps each row's xmin) is examined whole, and
# sends only what changed.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;
use CalabiXminTest;

# nothing but the test writes: page LSNs move only by its own changes
my ($node, $recv) = sync_setup(name => 'xminpages', receiver => { log_bodies => 1 },
	conf => 'autovacuum = off');

$node->safe_psql('postgres', q{
	CREATE TABLE big (id int PRIMARY KEY, v text) WITH (fillfactor = 50);
	INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g;
	CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, v text);
	INSERT INTO scratch SELECT g, repeat('y', 200) FROM generate_series(1, 2000) g;
	VACUUM big, scratch;
	SELECT calabi_push.create_sync('pages', 'recv', ARRAY['big']::regclass[], method => 'xmin');
	SELECT calabi_push.create_sync('unlogged', 'recv', ARRAY['scratch']::regclass[], method => 'xmin');
});
my $pages = $node->safe_psql('postgres', q{SELECT pg_relation_size('big') / 8192});
cmp_ok($pages, '>', 1000, "the table has $pages pages");

xmin_run($node, $recv, 'pages');
xmin_run($node, $recv, 'unlogged');
assert_dest_equals_source($node, 'public', 'big', 'full read');

# three rows on three pages far apart change (HOT: on their own pages)
$node->safe_psql('postgres', q{UPDATE big SET v = 'changed' WHERE id IN (7, 10007, 19007)});
my $since = xmin_run($node, $recv, 'pages');
is_deeply(run_records($recv, 'pages', $since), [ 7, 10007, 19007 ], 'the changed rows were sent');
my $examined = xmin_checkpoint($node, 'pages', 'pages_examined');
my $skipped = xmin_checkpoint($node, 'pages', 'pages_skipped');
cmp_ok($examined, '<=', 3, "the run examined only the changed pages ($examined)");
is($examined + $skipped, $pages, "every other page was skipped ($skipped)");
assert_dest_equals_source($node, 'public', 'big', 'incremental run');

# unlogged: every page examined, still only the changed rows sent
$node->safe_psql('postgres', q{UPDATE scratch SET v = 'changed' WHERE id IN (3, 1500)});
$since = xmin_run($node, $recv, 'unlogged');
is_deeply(run_records($recv, 'unlogged', $since), [ 3, 1500 ], 'unlogged: the changed rows were sent');
my $scratch_pages = $node->safe_psql('postgres', q{SELECT pg_relation_size('scratch') / 8192});
is(xmin_checkpoint($node, 'unlogged', 'pages_examined'), $scratch_pages,
	'unlogged: every page was examined');
is(xmin_checkpoint($node, 'unlogged', 'pages_skipped'), 0, 'unlogged: none skipped');

# a rewrite between runs: every page examined, only the change sent
$node->safe_psql('postgres', q{
	VACUUM FULL big;
	UPDATE big SET v = 'after rewrite' WHERE id = 42;
});
$since = xmin_run($node, $recv, 'pages');
is_deeply(run_records($recv, 'pages', $since), [ 42 ], 'after VACUUM FULL: only the changed row');
is(xmin_checkpoint($node, 'pages', 'pages_skipped'), 0, 'after VACUUM FULL: every page examined');
assert_dest_equals_source($node, 'public', 'big', 'after the rewrite');

# and the run after it skips again
$node->safe_psql('postgres', q{UPDATE big SET v = 'again' WHERE id = 43});
$since = xmin_run($node, $recv, 'pages');
is_deeply(run_records($recv, 'pages', $since), [ 43 ], 'next run: the changed row');
cmp_ok(xmin_checkpoint($node, 'pages', 'pages_examined'), '<=', 2, 'next run: pages skipped again');

$recv->stop;
$node->stop;
done_testing();
