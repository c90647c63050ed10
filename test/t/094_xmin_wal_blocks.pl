# An incremental xmin run finds the pages to look into from the WAL
# written since the previous run (the blocks its records reference), not
# by reading every page's header: it reports pages_found_by 'wal', the
# bytes of WAL read, and examines about the changed pages.  When the WAL
# cannot tell it falls back to the page LSNs ('page_lsn') and sends the
# same rows: the WAL from the position removed (CHECKPOINT after WAL
# switches, wal_keep_size 0), or more WAL to read than the table's size.
# An unlogged table has no WAL: 'every_page'.  The cursor method on a
# table reads the same way.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;
use CalabiXminTest;

# nothing but the test writes; a CHECKPOINT removes the WAL before it,
# and only a CHECKPOINT
my ($node, $recv) = sync_setup(name => 'xminwal', receiver => { log_bodies => 1 },
	conf => "autovacuum = off\nwal_keep_size = 0\nmax_wal_size = 1GB");

$node->safe_psql('postgres', q{
	CREATE TABLE big (id int PRIMARY KEY, v text, updated_at timestamptz NOT NULL DEFAULT now())
	  WITH (fillfactor = 50);
	INSERT INTO big SELECT g, repeat('x', 200), '2026-01-01'::timestamptz + g * interval '1 second'
	  FROM generate_series(1, 20000) g;
	CREATE TABLE other (id int PRIMARY KEY, v text);
	CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, v text);
	INSERT INTO scratch SELECT g, repeat('y', 200) FROM generate_series(1, 2000) g;
	CREATE TABLE curt (id int PRIMARY KEY, v text, updated_at timestamptz NOT NULL DEFAULT now())
	  WITH (fillfactor = 50);
	INSERT INTO curt SELECT g, repeat('z', 200), '2026-01-01'::timestamptz + g * interval '1 second'
	  FROM generate_series(1, 20000) g;
	VACUUM big, scratch, curt;
	SELECT calabi_push.create_sync('pages', 'recv', ARRAY['big']::regclass[], method => 'xmin');
	SELECT calabi_push.create_sync('unlogged', 'recv', ARRAY['scratch']::regclass[], method => 'xmin');
	SELECT calabi_push.create_sync('cur', 'recv', ARRAY['curt']::regclass[], method => 'cursor',
	  options => '{"cursor": "updated_at"}');
});
my $pages = $node->safe_psql('postgres', q{SELECT pg_relation_size('big') / 8192});
cmp_ok($pages, '>', 1000, "the table has $pages pages");

sub found_by
{
	my ($sync) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT pages_found_by || ' ' || wal_bytes_read || ' ' || pages_examined || ' ' || pages_skipped
		  FROM calabi_push.stream_status WHERE sync = '$sync'});
}

xmin_run($node, $recv, $_) for qw(pages unlogged cur);
like(found_by('pages'), qr/^every_page /, 'a full read: every page');
assert_dest_equals_source($node, 'public', 'big', 'full read');

# The receiver's destination is a database of the same cluster: the WAL
# since the full reads holds its inserts of every row, more than the
# table.  A run with nothing to send moves the position past them.
for my $sync (qw(pages cur))
{
	my $since = method_run($node, $recv, $sync);
	is_deeply(run_records($recv, $sync, $since), [], "$sync: nothing changed, nothing sent");
}

# --- a few changed pages: found from the WAL ------------------------------
$node->safe_psql('postgres', q{UPDATE big SET v = 'changed' WHERE id IN (7, 10007, 19007)});
my $since = xmin_run($node, $recv, 'pages');
is_deeply(run_records($recv, 'pages', $since), [ 7, 10007, 19007 ], 'the changed rows were sent');
my ($by, $wal, $examined, $skipped) = split / /, found_by('pages');
is($by, 'wal', 'the pages were found from the WAL');
cmp_ok($wal, '>', 0, "WAL was read ($wal bytes)");
cmp_ok($wal, '<', $pages * 8192, 'less WAL than the table');
cmp_ok($examined, '<=', 3, "only the changed pages were examined ($examined)");
cmp_ok($examined, '>=', 1, 'the changed pages were examined');
is($examined + $skipped, $pages, "every other page was skipped unread ($skipped)");
assert_dest_equals_source($node, 'public', 'big', 'incremental run by the WAL');

# rows inserted at the end (pages added since the run began) and a row
# grown out of its page
$node->safe_psql('postgres', q{
	INSERT INTO big SELECT g, 'appended' FROM generate_series(20001, 20500) g;
	UPDATE big SET v = repeat('m', 3000) WHERE id = 5000;
});
$since = xmin_run($node, $recv, 'pages');
my $sent = run_records($recv, 'pages', $since);
is_deeply($sent, [ 5000, 20001 .. 20500 ], 'appended and moved rows were sent');
is((split / /, found_by('pages'))[0], 'wal', 'again by the WAL');
assert_dest_equals_source($node, 'public', 'big', 'after appending');

# a run with nothing changed reads a little WAL and examines no page
$since = xmin_run($node, $recv, 'pages');
is_deeply(run_records($recv, 'pages', $since), [], 'nothing changed: nothing sent');
($by, $wal, $examined) = split / /, found_by('pages');
is($by, 'wal', 'nothing changed: by the WAL');
# (a page the previous run pruned has a record of it)
cmp_ok($examined, '<=', 3, "nothing changed: at most the pages pruned since examined ($examined)");

# --- the cursor method on a table ----------------------------------------
$node->safe_psql('postgres', q{
	UPDATE curt SET v = 'changed', updated_at = now() WHERE id IN (5, 15005);
	UPDATE curt SET v = 'cursor not moved' WHERE id = 9009;
});
$since = method_run($node, $recv, 'cur');
is_deeply(run_records($recv, 'cur', $since), [ 5, 9009, 15005 ], 'cursor: the changed rows were sent');
($by, $wal, $examined) = split / /, found_by('cur');
is($by, 'wal', 'cursor on a table: found from the WAL');
cmp_ok($examined, '<=', 3, "cursor: only the changed pages examined ($examined)");
assert_dest_equals_source($node, 'public', 'curt', 'cursor');

# --- the WAL from the position removed: page LSNs, same rows -------------
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{UPDATE big SET v = 'before removal' WHERE id IN (11, 12000)});
$node->safe_psql('postgres', q{SELECT pg_switch_wal(); CHECKPOINT;}) for 1 .. 4;
$since = xmin_run($node, $recv, 'pages');
is_deeply(run_records($recv, 'pages', $since), [ 11, 12000 ], 'WAL removed: the changed rows were sent');
($by, $wal, $examined, $skipped) = split / /, found_by('pages');
is($by, 'page_lsn', 'WAL removed: the pages were found by their LSN');
is($examined + $skipped, $node->safe_psql('postgres', q{SELECT pg_relation_size('big') / 8192}),
	'WAL removed: every page looked at');
cmp_ok($examined, '<=', 10, "WAL removed: the changed pages examined by their LSN ($examined)");
ok($node->log_contains(qr/by their LSN, not from the WAL: the WAL from \S+ has been removed/,
		$log_offset), 'the log says why');
assert_dest_equals_source($node, 'public', 'big', 'WAL removed');

# and the run after it reads the WAL again
$node->safe_psql('postgres', q{UPDATE big SET v = 'after removal' WHERE id = 13});
$since = xmin_run($node, $recv, 'pages');
is_deeply(run_records($recv, 'pages', $since), [ 13 ], 'next run: the changed row');
is((split / /, found_by('pages'))[0], 'wal', 'next run: by the WAL again');

# --- more WAL than the table: page LSNs ----------------------------------
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{
	UPDATE big SET v = 'among much WAL' WHERE id = 14;
	INSERT INTO other SELECT g, repeat('w', 500) FROM generate_series(1, 30000) g;
});
$since = xmin_run($node, $recv, 'pages');
is_deeply(run_records($recv, 'pages', $since), [ 14 ], 'much WAL: the changed row was sent');
is((split / /, found_by('pages'))[0], 'page_lsn', 'much WAL: found by their LSN');
ok($node->log_contains(qr/by their LSN, not from the WAL: the WAL to read \(\d+ bytes from \S+\) is larger than calabi_push.xmin_wal_ratio \(1\) times the relations/,
		$log_offset), 'the log says why');
assert_dest_equals_source($node, 'public', 'big', 'much WAL');

# calabi_push.xmin_wal_ratio = 0: never the WAL
$node->safe_psql('postgres', q{ALTER SYSTEM SET calabi_push.xmin_wal_ratio = 0; SELECT pg_reload_conf();});
$node->safe_psql('postgres', q{UPDATE big SET v = 'ratio 0' WHERE id = 15});
$since = xmin_run($node, $recv, 'pages');
is_deeply(run_records($recv, 'pages', $since), [ 15 ], 'ratio 0: the changed row was sent');
is((split / /, found_by('pages'))[0], 'page_lsn', 'ratio 0: found by their LSN');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET calabi_push.xmin_wal_ratio; SELECT pg_reload_conf();});

# --- unlogged: no WAL, every page ----------------------------------------
$node->safe_psql('postgres', q{UPDATE scratch SET v = 'changed' WHERE id IN (3, 1500)});
$since = xmin_run($node, $recv, 'unlogged');
is_deeply(run_records($recv, 'unlogged', $since), [ 3, 1500 ], 'unlogged: the changed rows were sent');
($by, $wal, $examined) = split / /, found_by('unlogged');
is($by, 'every_page', 'unlogged: every page');
is($wal, 0, 'unlogged: no WAL read');
is($examined, $node->safe_psql('postgres', q{SELECT pg_relation_size('scratch') / 8192}),
	'unlogged: every page examined');
assert_dest_equals_source($node, 'public', 'scratch', 'unlogged');

$recv->stop;
$node->stop;
done_testing();
