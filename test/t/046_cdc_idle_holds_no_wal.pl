# An idle CDC sync beside a busy table holds no WAL: its slot moves on and
# its lag stays small.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = cdc_running_sync(undef, name => 'cdcidle');

my $slot = sync_status($node, 's', 'slot_name');
$node->safe_psql('postgres', q{
	CREATE TABLE busy (id bigserial PRIMARY KEY, pad text);
	INSERT INTO busy (pad) SELECT repeat('x', 500) FROM generate_series(1, 120000);
	CHECKPOINT;
});
my $written = $node->safe_psql('postgres', q{SELECT pg_current_wal_lsn()});
ok($node->poll_query_until('postgres', qq{
	SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) < 16 * 1024 * 1024
	   AND confirmed_flush_lsn >= '$written'
	  FROM pg_replication_slots WHERE slot_name = '$slot'}),
	'idle beside a busy table: the slot moves on, retaining less than 16 MB of WAL');
my $lag = sync_status($node, 's', 'lag_bytes');
ok($lag < 16 * 1024 * 1024, "sync_status lag_bytes is small: $lag");

$recv->stop;
$node->stop;
done_testing();
