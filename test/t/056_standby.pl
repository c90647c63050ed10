# On a hot standby sync_status answers (it used pg_current_wal_lsn(), which
# fails during recovery) and says that each enabled sync runs on the
# primary; the standby starts no sync worker.  Promoted once its primary is
# gone, it runs its enabled syncs.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

# (max_wal_senders: for the base backup and the standby's streaming)
my ($primary, $recv) = sync_setup(name => 'primary', conf => 'max_wal_senders = 10');
allow_output_plugin($primary);

$primary->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g;
	SELECT calabi_push.create_sync('fr', 'recv', ARRAY['t']::regclass[],
	         options => '{"schedule": "1 hour"}');
	SELECT calabi_push.create_sync('cdc', 'recv', ARRAY['t']::regclass[], method => 'cdc');
	SELECT calabi_push.create_sync('off', 'recv', ARRAY['t']::regclass[]);
	SELECT calabi_push.start_sync('fr');
	SELECT calabi_push.start_sync('cdc');
});
ok(wait_for_state($primary, 'fr', 'idle'), 'primary: the full refresh sync ran');
ok(wait_for_state($primary, 'cdc', 'running'), 'primary: the CDC sync streams');

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

my ($ret, $out, $err) = $standby->psql('postgres',
	q{SELECT name || ':' || state || ':' || coalesce(lag_bytes::text, '-')
	    FROM calabi_push.sync_status ORDER BY name});
is($ret, 0, 'standby: sync_status answers') or diag($err);
my %state = map { (split /:/)[0, 1] } split /\n/, $out;
is($state{fr}, 'standby', 'standby: an enabled full refresh sync runs on the primary');
is($state{cdc}, 'standby', 'standby: an enabled CDC sync runs on the primary');
is($state{off}, 'stopped', 'standby: a stopped sync is stopped');
like($out, qr/^cdc:standby:\d+$/m, 'standby: lag_bytes counts from the replayed WAL');
is($standby->safe_psql('postgres', q{SELECT count(*) FROM calabi_push.stream_status}),
	'3', 'standby: stream_status answers');
sleep 2;
is($standby->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'calabi_push sync %'}),
	'0', 'standby: no sync worker runs');

# the primary is gone: the promoted server runs the enabled full refresh sync
$primary->stop('immediate');
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the standby was not promoted';
ok( $standby->poll_query_until('postgres', q{
		SELECT state IN ('running', 'idle') FROM calabi_push.sync_status WHERE name = 'fr'}),
	'promoted: the full refresh sync runs again');
ok( $standby->poll_query_until('postgres', q{
		SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'calabi_push sync fr'}),
	'promoted: its worker runs');

$recv->stop;
$standby->stop;
done_testing();
