# A failover never reuses a batch number.  The standby's copy of the
# catalog can be behind what the primary recorded (here: the standby was
# down while the primary ran the sync again), so its next_batch_seq is a
# number the old primary already sent with another body.  Reused, the
# endpoint would drop the new body as a repeat (409) or refuse it (the
# reference receiver answers 400): the promoted server must start above
# every number sent before, and its reads in generations above every one
# completed before (sql/install/22_home.sql, _identity_moved).
# adopt_sync(keep_identity => true) after a restore from an older dump is
# the same case.  The receiver stores into a third server, so that it
# outlives the primary.
use strict;
use warnings;

use List::Util qw(max min);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiReceiver;
use CalabiSyncTest;

my $dest = dest_node();

my $primary = calabi_node('primary', init => { allows_streaming => 1 });
$primary->safe_psql('postgres', 'CREATE EXTENSION calabi_push');
my $token = 'tok-' . int(rand(1e9)) . '-secret';
my $recv = CalabiReceiver->start(node => $dest, dbname => 'calabi_dest', token => $token);
$primary->safe_psql('postgres', sprintf(q{
	SELECT calabi_push.create_destination('recv', '%s', token => '%s',
	         options => jsonb_build_object('ca_file', '%s'));
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 1000) g;
	SELECT calabi_push.create_sync('fr', 'recv', ARRAY['t']::regclass[],
	         options => '{"batch_rows": 100}');
	SELECT calabi_push.start_sync('fr');}, $recv->url, $token, $recv->ca_file));

# the seqs of the batches the receiver accepted from sync fr, and whether
# it refused any
sub accepted
{
	my @reqs = @{ ingest_requests($recv, 'fr') };
	return ([ map { $_->{batch_seq} } grep { ($_->{status} // 0) == 200 } @reqs ],
		scalar(grep { ($_->{status} // 0) >= 400 } @reqs));
}

# the destination holds exactly the source's rows of t on $node
sub dest_equals_source
{
	my ($node, $name) = @_;
	my $src = stream_rows_source($node, 'public.t');
	my $dst = stream_rows_dest_in($dest, 'calabi_dest', 'public', 't', [ 'id', 'v' ]);
	is_deeply($dst, $src, "$name: destination equals source");
}

ok(wait_for_state($primary, 'fr', 'idle'), 'primary: the first run completed');

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);
my $replicated_next = $standby->safe_psql('postgres',
	q{SELECT next_batch_seq FROM calabi_push.sync WHERE name = 'fr'});
$standby->stop;

# the primary runs the sync again while the standby is down: numbers the
# standby's catalog does not know were used
$primary->safe_psql('postgres', q{
	UPDATE t SET v = 'changed while the standby was down' WHERE id % 3 = 0;
	SELECT calabi_push.resync('fr');});
ok( $primary->poll_query_until('postgres', q{
		SELECT state = 'idle' AND completed_at IS NOT NULL FROM calabi_push.sync_status WHERE name = 'fr'}),
	'primary: the second run completed');
my ($before, $refused_before) = accepted();
my $max_before = max(@$before);
cmp_ok($max_before, '>=', $replicated_next,
	"the old primary sent numbers ($max_before) at or past the standby's next_batch_seq ($replicated_next)");
is($refused_before, 0, 'nothing refused so far');

# failover: the primary is gone, the standby promoted; its probe finds
# nothing at primary_conninfo and keeps the syncs
$primary->stop('immediate');
$standby->start;
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the standby was not promoted';
ok( $standby->poll_query_until('postgres', q{
		SELECT home_timeline = 2 FROM calabi_push.sync WHERE name = 'fr'}),
	'promoted: the sync is bound to the new timeline (a failover)');
my $next = $standby->safe_psql('postgres',
	q{SELECT next_batch_seq FROM calabi_push.sync WHERE name = 'fr'});
cmp_ok($next, '>', $max_before, 'promoted: next_batch_seq is above every number sent before');

$standby->safe_psql('postgres', q{SELECT calabi_push.resync('fr')});
run_completes($standby, 'fr', 'promoted');
my ($after, $refused) = accepted();
is($refused, 0, 'the receiver refused no batch');
my @new = @$after[ scalar(@$before) .. $#$after ];
ok(@new >= 10, 'promoted: its batches were accepted');
cmp_ok(min(@new), '>', $max_before, 'promoted: every new number is above the old primary\'s');
dest_equals_source($standby, 'after the failover');

# an xmin sync, run once: its position is a snapshot of this cluster's
# transaction ids
$standby->safe_psql('postgres', q{
	SELECT calabi_push.create_sync('xs', 'recv', ARRAY['t']::regclass[], method => 'xmin');
	SELECT calabi_push.start_sync('xs');});
ok( $standby->poll_query_until('postgres', q{
		SELECT state = 'idle' AND completed_at IS NOT NULL FROM calabi_push.sync_status WHERE name = 'xs'}),
	'an xmin sync ran');
isnt($standby->safe_psql('postgres', q{SELECT checkpoint->>'since' FROM calabi_push.stream_status WHERE sync = 'xs'}),
	'', 'the xmin sync has a position');

# adopt_sync(keep_identity => true) of a restored dump from another cluster
# whose catalog is older than what was sent: also above every number sent
# before; the xmin position, another cluster's transaction ids, is dropped
$standby->safe_psql('postgres', q{
	SELECT calabi_push.stop_sync('fr');
	SELECT calabi_push.stop_sync('xs');
	UPDATE calabi_push.sync SET next_batch_seq = 1, home_system = 1 WHERE name = 'fr';
	UPDATE calabi_push.sync SET home_system = 1 WHERE name = 'xs';});
is(sync_status($standby, 'fr', 'state'), 'copied', 'a sync from elsewhere is copied');
$standby->safe_psql('postgres', q{SELECT calabi_push.adopt_sync('fr', keep_identity => true)});
$standby->safe_psql('postgres', q{SELECT calabi_push.adopt_sync('xs', keep_identity => true)});
is($standby->safe_psql('postgres', q{
		SELECT phase || ':' || coalesce(checkpoint::text, 'none') FROM calabi_push.stream_status WHERE sync = 'xs'}),
	'pending:none', 'adopt_sync keep_identity from another cluster: the xmin stream reads again from the start');
cmp_ok($standby->safe_psql('postgres', q{SELECT next_batch_seq FROM calabi_push.sync WHERE name = 'fr'}),
	'>', max(@$after), 'adopt_sync keep_identity: next_batch_seq above every number sent');
$standby->safe_psql('postgres', q{
	UPDATE t SET v = 'after adopting' WHERE id % 7 = 0;
	SELECT calabi_push.resync('fr');
	SELECT calabi_push.start_sync('fr');});
run_completes($standby, 'fr', 'adopted');
dest_equals_source($standby, 'after adopting');

$recv->stop;
$standby->stop;
$dest->stop;
done_testing();
