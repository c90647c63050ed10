# The orderings of a cursor sync.  A view is read in the order of its
# cursor column's type's default btree class, in the column's collation,
# and each later run reads from the previous largest value in that same
# order: a text cursor under a linguistic collation (ICU preferred), where
# 'a' < 'B' < 'c' although byte order has 'B' < 'a' < 'c'; a numeric
# cursor (10 < 9.5 as text; 10 and 10.00 are one value); a uuid cursor.
# Ties at one value longer than a chunk are sent whole, once in the read
# that reaches them, again in the next run when the value is the largest;
# each chunk's STATE names the largest value sent so far.  A materialized
# view, stored by heap, is read as the xmin method reads it: after REFRESH
# MATERIALIZED VIEW CONCURRENTLY only the rows it changed arrive (one whose
# cursor did not move too), after a plain REFRESH every row.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP ();
use CalabiPushTest;
use CalabiSyncTest;
use CalabiXminTest;

my ($node, $recv) = sync_setup(name => 'cursororder', receiver => { log_bodies => 1 });

# The ids of the data of run_data, in the order received.
sub ids { return [ map { $_->{id} } @{ $_[0] } ] }

# The ids of a query's rows, in its order.
sub query_ids { return [ split /\n/, $node->safe_psql('postgres', $_[0]) ] }

# --- a text cursor under a linguistic collation -----------------------------

# ICU first (the same order on every platform), else a glibc locale
my $coll = $node->safe_psql('postgres', q{
	SELECT quote_ident(collname) FROM pg_collation
	 WHERE collname IN ('en-x-icu', 'und-x-icu', 'de-x-icu', 'en_US.utf8', 'de_DE.utf8', 'de_DE')
	   AND collencoding IN (-1, pg_char_to_encoding('UTF8'))
	 ORDER BY collprovider = 'i' DESC, collname = 'en-x-icu' DESC, collname = 'und-x-icu' DESC, collname
	 LIMIT 1});
isnt($coll, '', "a linguistic collation exists: $coll");
note("collation: $coll");
is($node->safe_psql('postgres', qq{
	SELECT 'a' < 'B' COLLATE $coll AND 'B' < 'c' COLLATE $coll AND 'B' < 'a' COLLATE "C"}), 't',
	"$coll orders a < B < c, byte order B < a < c");

# the same rows through two views: the column in the collation, and as it
# is in the table (the database's, C: byte order)
$node->safe_psql('postgres', qq{
	CREATE TABLE words (id int PRIMARY KEY, w text);
	INSERT INTO words VALUES (1, 'a'), (2, 'B'), (3, 'c'), (4, 'D');
	CREATE VIEW wv AS SELECT id, w COLLATE $coll AS w FROM words;
	CREATE VIEW wcv AS SELECT id, w FROM words;
	SELECT calabi_push.create_sync('w', 'recv', ARRAY['wv']::regclass[], method => 'cursor',
	  options => '{"cursor": "w", "chunk_rows": 2}');
	SELECT calabi_push.create_sync('wc', 'recv', ARRAY['wcv']::regclass[], method => 'cursor',
	  options => '{"cursor": "w", "chunk_rows": 2}');
});
my $since = method_run($node, $recv, 'w');
is_deeply(ids(run_data($recv, 'w', $since)), [ 1, 2, 3, 4 ],
	"text: run 1 sent a, B, c, D in the collation's order");
is(xmin_checkpoint($node, 'w', 'since'), 'D', "text: the largest value is D");
$since = method_run($node, $recv, 'wc');
is_deeply(ids(run_data($recv, 'wc', $since)), [ 2, 4, 1, 3 ],
	'text, byte order: run 1 sent B, D, a, c');
is(xmin_checkpoint($node, 'wc', 'since'), 'c', "text, byte order: the largest value is c");

# below D in the collation: A, d (d < D: lower case first), c moved to cc;
# at or past it: E, e (D < e < E).  In byte order at or past c: cc, d, e.
$node->safe_psql('postgres', q{
	INSERT INTO words VALUES (5, 'A'), (6, 'd'), (7, 'E'), (8, 'e');
	UPDATE words SET w = 'cc' WHERE id = 3;
});
is_deeply(query_ids(qq{SELECT id FROM words WHERE w >= 'D' COLLATE $coll ORDER BY w COLLATE $coll}),
	[ 4, 8, 7 ], 'text: D, e, E lie at or past D in the collation, in that order');
$since = method_run($node, $recv, 'w');
is_deeply(ids(run_data($recv, 'w', $since)), [ 4, 8, 7 ],
	'text: run 2 sent D, e, E: from D on in the collation\'s order');
is(xmin_checkpoint($node, 'w', 'since'), 'E', 'text: the largest value is E');
$since = method_run($node, $recv, 'wc');
is_deeply(ids(run_data($recv, 'wc', $since)), [ 3, 6, 8 ],
	'text, byte order: run 2 sent cc, d, e: from c on in byte order');
is(xmin_checkpoint($node, 'wc', 'since'), 'e', 'text, byte order: the largest value is e');

# --- a numeric cursor -------------------------------------------------------

$node->safe_psql('postgres', q{
	CREATE TABLE nums (id int PRIMARY KEY, n numeric);
	INSERT INTO nums VALUES (1, -1), (2, 2), (3, 9.5), (4, 10), (5, 10.00), (6, 100), (7, NULL), (8, 0.001);
	CREATE VIEW nv AS SELECT id, n FROM nums;
	SELECT calabi_push.create_sync('n', 'recv', ARRAY['nv']::regclass[], method => 'cursor',
	  options => '{"cursor": "n", "chunk_rows": 3}');
});
$since = method_run($node, $recv, 'n');
my $sent = ids(run_data($recv, 'n', $since));
is(scalar @$sent, 8, 'numeric: run 1 sent every row once');
is_deeply([ @$sent[ 0 .. 4 ] ], [ 7, 1, 8, 2, 3 ], 'numeric: NULL first, then -1, 0.001, 2, 9.5');
is_deeply([ sort { $a <=> $b } @$sent[ 5, 6 ] ], [ 4, 5 ], 'numeric: then 10 and 10.00 (one value)');
is($sent->[7], 6, 'numeric: 100 last');
is(xmin_checkpoint($node, 'n', 'since'), '100', 'numeric: the largest value is 100 (as text: 9.5)');
$node->safe_psql('postgres', q{
	INSERT INTO nums VALUES (9, 99.999), (10, 100.0), (11, 1000), (12, 100.0001);
	UPDATE nums SET n = 10.000 WHERE id = 4;
});
$since = method_run($node, $recv, 'n');
$sent = ids(run_data($recv, 'n', $since));
is_deeply([ sort { $a <=> $b } @$sent[ 0, 1 ] ], [ 6, 10 ], 'numeric: run 2 sent 100 and 100.0 (one value) first');
is_deeply([ @$sent[ 2 .. $#$sent ] ], [ 12, 11 ], 'numeric: then 100.0001 and 1000, not 99.999 nor 10.000');
is(xmin_checkpoint($node, 'n', 'since'), '1000', 'numeric: the largest value is 1000');

# --- a uuid cursor ----------------------------------------------------------

$node->safe_psql('postgres', q{
	CREATE TABLE ids (id int PRIMARY KEY, u uuid);
	INSERT INTO ids SELECT g, md5(g::text)::uuid FROM generate_series(1, 40) g;
	CREATE VIEW uv AS SELECT id, u FROM ids;
	SELECT calabi_push.create_sync('u', 'recv', ARRAY['uv']::regclass[], method => 'cursor',
	  options => '{"cursor": "u", "chunk_rows": 7, "batch_rows": 10}');
});
$since = method_run($node, $recv, 'u');
is_deeply(ids(run_data($recv, 'u', $since)), query_ids('SELECT id FROM ids ORDER BY u'),
	'uuid: run 1 sent every row once, in uuid order');
my $max = $node->safe_psql('postgres', 'SELECT u FROM ids ORDER BY u DESC LIMIT 1');
is(xmin_checkpoint($node, 'u', 'since'), $max, 'uuid: the largest value is the largest uuid');
# 41 above it (unless it is the largest uuid), 42 below it
$node->safe_psql('postgres', q{
	INSERT INTO ids VALUES (41, 'ffffffff-ffff-ffff-ffff-ffffffffffff'),
	  (42, '00000000-0000-0000-0000-000000000001');
});
my $at = $node->safe_psql('postgres', qq{SELECT id FROM ids WHERE u = '$max' AND id <= 40});
$since = method_run($node, $recv, 'u');
is_deeply(ids(run_data($recv, 'u', $since)), [ $at, 41 ],
	'uuid: run 2 sent the largest again, then the one past it; not the one below');
is(xmin_checkpoint($node, 'u', 'since'), 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'uuid: the position moved');

# --- ties longer than a chunk -----------------------------------------------

# 10 rows at 1, 10 at 2, 11 at 3: chunks of 3, batches of 4
$node->safe_psql('postgres', q{
	CREATE TABLE tied (id int PRIMARY KEY, k int);
	INSERT INTO tied SELECT g, 1 FROM generate_series(1, 10) g;
	INSERT INTO tied SELECT g, 2 FROM generate_series(11, 20) g;
	INSERT INTO tied SELECT g, 3 FROM generate_series(21, 31) g;
	CREATE VIEW tiedv AS SELECT id, k FROM tied;
	SELECT calabi_push.create_sync('t', 'recv', ARRAY['tiedv']::regclass[], method => 'cursor',
	  options => '{"cursor": "k", "chunk_rows": 3, "batch_rows": 4}');
});

# The RECORDs of sync t since request $since, in order, and checks (as
# $what) that each STATE names as its position the largest cursor value of
# the records before it in the run, and as its cursor the same.
sub tied_run
{
	my ($what) = @_;
	my $since = method_run($node, $recv, 't');
	my (@k, $largest, @bad);
	for my $req (@{ ingest_requests($recv, 't', $since) })
	{
		next unless ($req->{status} // 0) == 200 && defined $req->{body};
		for my $m (map { JSON::PP::decode_json($_) } split /\n/, $req->{body})
		{
			if ($m->{type} eq 'RECORD')
			{
				push @k, $m->{record}{data};
				$largest = $m->{record}{data}{k}
				  if !defined $largest || $m->{record}{data}{k} > $largest;
			}
			elsif ($m->{type} eq 'STATE')
			{
				my $st = $m->{state}{streams}[0]{state};
				next unless $st->{phase} eq 'reading';
				push @bad, "after " . scalar(@k) . " rows: " . JSON::PP::encode_json($st)
				  unless defined $largest && ($st->{after}[0] // '') eq $largest
				  && ($st->{cursor} // '') eq $largest;
			}
		}
	}
	is(scalar @bad, 0, "$what: each chunk's STATE names the largest value sent so far")
	  or diag(join("\n", @bad));
	return \@k;
}

my $rows = tied_run('ties, run 1');
is_deeply([ map { $_->{k} } @$rows ], [ (1) x 10, (2) x 10, (3) x 11 ], 'ties, run 1: every row in cursor order');
is_deeply([ sort { $a <=> $b } map { $_->{id} } @$rows ], [ 1 .. 31 ], 'ties, run 1: each row once');
is(xmin_checkpoint($node, 't', 'since'), '3', 'ties: the largest value is 3');

$rows = tied_run('ties, run 2');
is_deeply([ sort { $a <=> $b } map { $_->{id} } @$rows ], [ 21 .. 31 ],
	'ties, run 2 (nothing changed): the 11 rows at 3, each once');

$node->safe_psql('postgres', q{
	INSERT INTO tied SELECT g, 3 FROM generate_series(32, 36) g;
	INSERT INTO tied VALUES (37, 4), (38, 4), (39, 2);
});
$rows = tied_run('ties, run 3');
is_deeply([ map { $_->{k} } @$rows ], [ (3) x 16, 4, 4 ], 'ties, run 3: the 16 rows at 3, then the 2 at 4');
is_deeply([ sort { $a <=> $b } map { $_->{id} } @$rows ], [ 21 .. 38 ], 'ties, run 3: each once, not 39 (at 2)');
$rows = tied_run('ties, run 4');
is_deeply([ sort { $a <=> $b } map { $_->{id} } @$rows ], [ 37, 38 ], 'ties, run 4: the 2 rows at 4');

# --- a materialized view ----------------------------------------------------

$node->safe_psql('postgres', q{
	CREATE TABLE src (id int PRIMARY KEY, k int, v text);
	INSERT INTO src SELECT g, g % 7, 'v' || g FROM generate_series(1, 60) g;
	CREATE MATERIALIZED VIEW mv AS SELECT id, k, v FROM src;
	CREATE UNIQUE INDEX ON mv (id);
	SELECT calabi_push.create_sync('mv', 'recv', ARRAY['mv']::regclass[], method => 'cursor',
	  options => '{"cursor": "k", "chunk_rows": 8}');
});
$since = method_run($node, $recv, 'mv');
is_deeply(run_records($recv, 'mv', $since), [ 1 .. 60 ], 'matview: run 1 sent every row once');
is(xmin_checkpoint($node, 'mv', 'cursor'), '6', 'matview: the largest cursor value is kept');

# changed rows: one whose cursor moves past the largest, one whose cursor
# moves back, one whose cursor does not move; a new row; a deleted one
$node->safe_psql('postgres', q{
	UPDATE src SET k = 9 WHERE id = 3;
	UPDATE src SET k = 0, v = 'back' WHERE id = 33;
	UPDATE src SET v = 'cursor not moved' WHERE id = 40;
	INSERT INTO src VALUES (61, 1, 'new');
	DELETE FROM src WHERE id = 50;
	REFRESH MATERIALIZED VIEW CONCURRENTLY mv;
});
$since = method_run($node, $recv, 'mv');
is(xmin_checkpoint($node, 'mv', 'read'), 'incremental', 'matview: run 2 is incremental');
is_deeply(run_records($recv, 'mv', $since), [ 3, 33, 40, 61 ],
	'matview: after REFRESH CONCURRENTLY, only the rows it changed');
is(xmin_checkpoint($node, 'mv', 'cursor'), '9', 'matview: the largest cursor value moved');

$since = method_run($node, $recv, 'mv');
is_deeply(run_records($recv, 'mv', $since), [], 'matview: run 3 (nothing refreshed) sent nothing');

$node->safe_psql('postgres', q{REFRESH MATERIALIZED VIEW mv});
$since = method_run($node, $recv, 'mv');
is_deeply(run_records($recv, 'mv', $since), query_ids('SELECT id FROM mv ORDER BY id'),
	'matview: after a plain REFRESH (a rewrite), every row again');

$recv->stop;
$node->stop;
done_testing();
