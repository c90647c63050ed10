# Keyset reading follows the key index's own order: keys whose type brings
# its own operators (citext, ltree), text under a non-C collation (the
# column's, or the index's own), a varchar key indexed with
# text_pattern_ops, multi-column keys mixing types, and keys with DESC
# index columns all arrive whole, for the full refresh and the CDC
# backfill, read one row per chunk and at the default chunk size.
#
# A bare "(key) > ($1)" with the worker's search_path (pg_catalog) compared
# a citext key as text while ORDER BY used citext's order, and silently
# skipped rows; an ltree key found no ">" and retried forever.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'keyset');
allow_output_plugin($node);

my $coll = 'de_DE.utf8';
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_collation WHERE collname = '$coll'"), '1',
	"the $coll collation exists (the test runner generates the locale)");

$node->safe_psql('postgres', q{
	CREATE EXTENSION citext;
	CREATE EXTENSION ltree;
});

# The same tables in one schema per sync, so that their destinations are
# apart.  Keys mix case so that C, citext and de_DE orders all differ.
my @tables = qw(ci lt tx tx_index vc mixed builtin desc1 desc2);
sub make_tables
{
	my ($s) = @_;
	$node->safe_psql('postgres', qq{
	CREATE SCHEMA $s;
	CREATE TABLE $s.ci (k citext PRIMARY KEY, v int);
	INSERT INTO $s.ci VALUES ('a', 1), ('B', 2), ('c', 3), ('D', 4), ('e', 5), ('F', 6);

	CREATE TABLE $s.lt (k ltree PRIMARY KEY, v int);
	INSERT INTO $s.lt VALUES ('a', 1), ('a.b', 2), ('B', 3), ('B.c.d', 4), ('c', 5), ('D', 6);

	-- text under the column's de_DE collation: a B c D e F (C: B D F a c e)
	CREATE TABLE $s.tx (k text COLLATE "$coll" PRIMARY KEY, v int);
	INSERT INTO $s.tx VALUES ('a', 1), ('B', 2), ('c', 3), ('D', 4), ('e', 5), ('F', 6);

	-- a C column whose key index (the replica identity) sorts by de_DE
	CREATE TABLE $s.tx_index (k text COLLATE "C" NOT NULL, v int);
	CREATE UNIQUE INDEX ON $s.tx_index (k COLLATE "$coll");
	ALTER TABLE $s.tx_index REPLICA IDENTITY USING INDEX tx_index_k_idx;
	INSERT INTO $s.tx_index VALUES ('a', 1), ('B', 2), ('c', 3), ('D', 4), ('e', 5), ('F', 6);

	-- varchar under text_pattern_ops (its opclass's type is text)
	CREATE TABLE $s.vc (k varchar(10) NOT NULL, v int);
	CREATE UNIQUE INDEX ON $s.vc (k text_pattern_ops);
	ALTER TABLE $s.vc REPLICA IDENTITY USING INDEX vc_k_idx;
	INSERT INTO $s.vc VALUES ('a', 1), ('B', 2), ('c', 3), ('D', 4), ('e', 5), ('F', 6);

	-- operators of three schemas and types in one key
	CREATE TABLE $s.mixed (a citext, b int, c ltree, v int, PRIMARY KEY (a, b, c));
	INSERT INTO $s.mixed
	  SELECT a, b, c::ltree, row_number() OVER ()
	    FROM unnest(ARRAY['a', 'B', 'c']) a, generate_series(1, 2) b,
	         unnest(ARRAY['x', 'Y.z']) c;

	-- built-in operators only, one text column under de_DE
	CREATE TABLE $s.builtin (a text COLLATE "$coll", b int, v int, PRIMARY KEY (a, b));
	INSERT INTO $s.builtin
	  SELECT a, b, row_number() OVER ()
	    FROM unnest(ARRAY['a', 'B', 'c', 'D']) a, generate_series(1, 3) b;

	-- a key index read backwards, alone and after an ascending column
	CREATE TABLE $s.desc1 (k int NOT NULL, v int);
	CREATE UNIQUE INDEX ON $s.desc1 (k DESC);
	ALTER TABLE $s.desc1 REPLICA IDENTITY USING INDEX desc1_k_idx;
	INSERT INTO $s.desc1 SELECT g, g FROM generate_series(1, 7) g;
	CREATE TABLE $s.desc2 (a text NOT NULL, b int NOT NULL, v int);
	CREATE UNIQUE INDEX ON $s.desc2 (a COLLATE "$coll", b DESC NULLS LAST);
	ALTER TABLE $s.desc2 REPLICA IDENTITY USING INDEX desc2_a_b_idx;
	INSERT INTO $s.desc2
	  SELECT a, b, row_number() OVER ()
	    FROM unnest(ARRAY['a', 'B', 'c']) a, generate_series(1, 3) b;
	});
}

my %syncs = (
	fr1 => q{options => '{"chunk_rows": 1, "batch_rows": 2}'},
	fr => q{options => '{"batch_rows": 5}'},
	cdc1 => q{method => 'cdc', options => '{"chunk_rows": 1, "batch_rows": 2}'},
	cdc => q{method => 'cdc', options => '{"batch_rows": 5}'},
);
for my $s (sort keys %syncs)
{
	make_tables($s);
	my $rels = join(', ', map { "'$s.$_'" } @tables);
	$node->safe_psql('postgres', qq{
		SELECT calabi_push.create_sync('$s', 'recv', ARRAY[$rels]::regclass[], $syncs{$s});
		SELECT calabi_push.start_sync('$s');
	});
}

my $ntables = scalar(@tables);
for my $s (sort keys %syncs)
{
	if ($s =~ /^fr/)
	{
		ok(wait_for_state($node, $s, 'idle', 'error'), "$s: the run completes");
	}
	else
	{
		ok($node->poll_query_until('postgres', qq{
			SELECT count(*) = $ntables OR bool_or(y.state = 'error')
			  FROM calabi_push.stream_status t JOIN calabi_push.sync_status y ON y.name = t.sync
			 WHERE t.sync = '$s' AND (t.phase = 'done' OR y.state = 'error')}),
			"$s: every table is backfilled");
		my $lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
		ok($node->poll_query_until('postgres', qq{
			SELECT lsn_acknowledged >= '$lsn' OR state = 'error'
			  FROM calabi_push.sync_status WHERE name = '$s'}),
			"$s: caught up");
	}
	like(sync_status($node, $s, q{state || ':' || coalesce(last_error, '')}),
		qr/^(idle|running):$/, "$s: no error");
	is($node->safe_psql('postgres', qq{
		SELECT string_agg(phase, ',') FROM calabi_push.stream_status WHERE sync = '$s'}),
		join(',', ('done') x $ntables), "$s: every stream done");
	for my $t (@tables)
	{
		assert_dest_equals_source($node, $s, $t, "$s.$t");
	}
}

$recv->stop;
$node->stop;
done_testing();
