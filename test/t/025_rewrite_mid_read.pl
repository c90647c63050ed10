# A table rewritten in the middle of its read (VACUUM FULL, CLUSTER,
# TRUNCATE give it a new relfilenode), or whose columns change, is read
# again from the start under a new generation, announced with refresh_start
# (and a new STREAM); the destination ends equal to the source.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'rewrite');
$node->safe_psql('postgres', q{
	CREATE TABLE r (id int PRIMARY KEY, v text);
	INSERT INTO r SELECT g, md5(g::text) FROM generate_series(1, 1000) g;
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['r']::regclass[],
	  options => '{"batch_rows": 50, "chunk_rows": 50}');
});

# Slow the receiver so the read is in progress, rewrite the table under it,
# let it finish; returns the generation it ended with.
sub rewrite_mid_read
{
	my ($what, $sql, $noticed) = @_;
	$noticed //= qr/"public"."r" was rewritten during its read; reading it again/;
	my $generation = $node->safe_psql('postgres',
		q{SELECT generation FROM calabi_push.stream_status WHERE sync = 's'});
	start_slowed_read($node, $recv, 's', 100, "$what: the read is under way");
	$node->safe_psql('postgres', $sql);
	$recv->clear_faults;
	ok( $node->poll_query_until('postgres', q{
			SELECT state = 'idle' AND completed_at IS NOT NULL
			  FROM calabi_push.sync_status WHERE name = 's'}),
		"$what: the run completes");
	like(slurp_file($node->logfile), $noticed, "$what: the change was noticed");
	is($node->safe_psql('postgres',
		q{SELECT generation FROM calabi_push.stream_status WHERE sync = 's'}),
		$generation + 2, "$what: the read started again under a new generation");
	assert_dest_equals_source($node, 'public', 'r', $what);
}

$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
ok(wait_for_state($node, 's', 'idle'), 'a first complete run');

rewrite_mid_read('VACUUM FULL', q{
	DELETE FROM r WHERE id % 10 = 0;
	VACUUM FULL r;
});
rewrite_mid_read('TRUNCATE', q{
	BEGIN;
	TRUNCATE r;
	INSERT INTO r SELECT g, 'after truncate ' || g FROM generate_series(1, 700) g;
	COMMIT;
});

# columns added or dropped mid-read (no rewrite): the rows change shape
rewrite_mid_read('ADD COLUMN', q{ALTER TABLE r ADD COLUMN extra int DEFAULT 7},
	qr/the columns of "public"."r" changed during its read; reading it again/);
rewrite_mid_read('DROP COLUMN', q{ALTER TABLE r DROP COLUMN v},
	qr/the columns of "public"."r" changed during its read; reading it again/);

# the receiver saw a refresh_start for the abandoned and for the new read
my @starts = grep { ($_->{types}{CONTROL} // 0) > 0 } @{ $recv->requests };
ok(scalar(@starts) >= 5, 'refresh_start announced every read, the restarted ones included');

$recv->stop;
$node->stop;
done_testing();
