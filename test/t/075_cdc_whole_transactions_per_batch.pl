# Smaller transactions are never split across batches: 60 transactions of
# 300 rows, spilled to disk (logical_decoding_work_mem = 64kB), decoded by a
# sync whose batches hold at most 1,000 rows, arrive in batches of whole
# transactions.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = cdc_sync_setup(
	setup => { name => 'cdcwhole', conf => 'logical_decoding_work_mem = 64kB' },
	sql => 'CREATE TABLE small (id int PRIMARY KEY, v text)',
	sync => 'big', relations => ['small'], options => '{"batch_rows": 1000}');
$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('big')});
ok(cdc_backfilled($node, 'big'), 'backfilled (empty)');

# transactions are not split across batches unless one alone exceeds the
# limits: 60 transactions of 300 rows, batches of at most 1,000 rows
my $seen = scalar(@{ ingest_requests($recv, 'big') });
$node->safe_psql('postgres', q{
	SELECT calabi_push.stop_sync('big');
	CREATE PROCEDURE txns() LANGUAGE plpgsql AS $$
	BEGIN
	  FOR i IN 1 .. 60 LOOP
	    INSERT INTO small SELECT i * 1000 + g, 'txn ' || i FROM generate_series(1, 300) g;
	    COMMIT;
	  END LOOP;
	END $$;
	CALL txns();
});
$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('big')});
my $lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok($node->poll_query_until('postgres', qq{
	SELECT lsn_acknowledged >= '$lsn' FROM calabi_push.sync_status WHERE name = 'big'}),
	'60 transactions of 300 rows delivered');
my @after = grep { ($_->{status} // 0) == 200 && ($_->{types}{RECORD} // 0) > 0 }
  @{ ingest_requests($recv, 'big', $seen) };
my @counts = map { $_->{types}{RECORD} } @after;
my $sum = 0;
$sum += $_ for @counts;
is($sum, 18000, 'every row once');
is(scalar(grep { $_ % 300 != 0 || $_ > 1000 } @counts), 0,
	'each batch holds whole transactions, at most 1,000 rows: ' . join(',', @counts));

$recv->stop;
$node->stop;
done_testing();
