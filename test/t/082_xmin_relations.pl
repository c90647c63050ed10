# The xmin method on a partitioned table (its leaf partitions, read through
# the partitioned table with its privileges: run_as may SELECT it, not its
# partitions; a partition attached since the previous run is read whole) and
# on a materialized view (REFRESH ... CONCURRENTLY changes rows: only those
# are sent; a plain REFRESH rewrites it: every row is new).
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;
use CalabiXminTest;

my ($node, $recv) = sync_setup(name => 'xminrels', receiver => { log_bodies => 1 });

$node->safe_psql('postgres', q{
	CREATE ROLE reader;
	CREATE TABLE m (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
	CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (1) TO (1000);
	CREATE TABLE m2 PARTITION OF m FOR VALUES FROM (1000) TO (2000);
	INSERT INTO m SELECT g, 'v' || g FROM generate_series(1, 1999, 7) g;
	GRANT SELECT ON m TO reader;
	SELECT calabi_push.create_sync('p', 'recv', ARRAY['m']::regclass[], method => 'xmin',
	  options => '{"run_as": "reader", "chunk_rows": 20}');
});
is($node->safe_psql('postgres', q{SELECT has_table_privilege('reader', 'm1', 'SELECT')}), 'f',
	'run_as may not SELECT the partitions themselves');

my $since = xmin_run($node, $recv, 'p');
my @all = split /\n/, $node->safe_psql('postgres', 'SELECT id FROM m ORDER BY id');
is_deeply(run_records($recv, 'p', $since), \@all, 'partitioned: the full read sent every row once');
assert_dest_equals_source($node, 'public', 'm', 'partitioned: full read');

$node->safe_psql('postgres', q{
	UPDATE m SET v = 'changed' WHERE id IN (8, 1002);
	INSERT INTO m VALUES (1500, 'new');
	CREATE TABLE m3 (id int PRIMARY KEY, v text);
	INSERT INTO m3 VALUES (2001, 'attached'), (2002, 'attached');
});
$since = xmin_run($node, $recv, 'p');
is_deeply(run_records($recv, 'p', $since), [ 8, 1002, 1500 ],
	'partitioned: an incremental run sent the rows changed in each partition');

# rows written before the previous run, in a partition attached after it
$node->safe_psql('postgres', q{ALTER TABLE m ATTACH PARTITION m3 FOR VALUES FROM (2000) TO (3000)});
$since = xmin_run($node, $recv, 'p');
is_deeply(run_records($recv, 'p', $since), [ 2001, 2002 ],
	'partitioned: a partition attached since the previous run is read whole');
assert_dest_equals_source($node, 'public', 'm', 'partitioned: after the attach');

# a materialized view
$node->safe_psql('postgres', q{
	CREATE TABLE base (id int PRIMARY KEY, v text);
	INSERT INTO base SELECT g, 'b' || g FROM generate_series(1, 50) g;
	CREATE MATERIALIZED VIEW mv AS SELECT id, v FROM base;
	CREATE UNIQUE INDEX ON mv (id);
	SELECT calabi_push.create_sync('mv', 'recv', ARRAY['mv']::regclass[], method => 'xmin');
});
is($node->safe_psql('postgres', q{
	SELECT destination_sync_mode FROM calabi_push.sync WHERE name = 'mv'}),
	'append', 'a materialized view (no primary key): append by default');
$since = xmin_run($node, $recv, 'mv');
is_deeply(run_records($recv, 'mv', $since), [ 1 .. 50 ], 'matview: the full read');

$node->safe_psql('postgres', q{
	UPDATE base SET v = 'changed' WHERE id IN (3, 33);
	REFRESH MATERIALIZED VIEW CONCURRENTLY mv;
});
$since = xmin_run($node, $recv, 'mv');
is_deeply(run_records($recv, 'mv', $since), [ 3, 33 ],
	'matview: after REFRESH CONCURRENTLY, only the changed rows');

$node->safe_psql('postgres', q{REFRESH MATERIALIZED VIEW mv});
$since = xmin_run($node, $recv, 'mv');
is_deeply(run_records($recv, 'mv', $since), [ 1 .. 50 ],
	'matview: after a plain REFRESH (a rewrite), every row');
is(xmin_checkpoint($node, 'mv', 'pages_skipped'), 0, 'matview: every page of the rewrite examined');

$recv->stop;
$node->stop;
done_testing();
