# Slot creation blocked by a long-running transaction: a CDC sync's first
# start creates its replication slot, which (as every logical slot) waits
# for the transactions running at that moment to end.  While another
# session holds an old transaction with an xid: start_sync returns at once;
# the worker logs once that it waits, naming the oldest transaction; the
# sync shows the state 'waiting_for_transactions' and state_detail names
# the blocking session's pid, its transaction and its age, while the worker
# waits on that transaction's lock (pg_stat_activity: wait_event
# 'transactionid'), without a timeout; stop_sync then ends the wait and
# leaves nothing half-created (no slot, no checkpoint); once the transaction
# ends the sync starts and streams, the old transaction's own changes
# included.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'slotblock');
allow_output_plugin($node);

$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 10) g;
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[], method => 'cdc');
});

# the old transaction: it has written, so it has an xid
my ($in, $out, $err) = ('', '', '');
my $old = IPC::Run::start([ 'psql', '-X', '-q', '-A', '-t', '-d', $node->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err);
$in .= "BEGIN; INSERT INTO t VALUES (100, 'from the old transaction'); SELECT 'xid', txid_current();\n";
$old->pump until $out =~ /xid\|(\d+)/;
my $old_xid = $1;

my $started = time();
$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
ok(time() - $started < 10, 'start_sync returns at once');
my $pid;
ok(wait_until(sub {
	$pid = sync_status($node, 's', 'pid');
	return $pid =~ /^\d+$/ && $node->safe_psql('postgres', qq{
		SELECT wait_event_type = 'Lock' AND wait_event = 'transactionid'
		  FROM pg_stat_activity WHERE pid = $pid}) eq 't';
}), 'the worker waits on the old transaction\'s lock');
is(sync_status($node, 's', 'state'), 'waiting_for_transactions', 'sync_status shows the sync waiting for transactions');
my $old_pid = $node->safe_psql('postgres', qq{SELECT pid FROM pg_stat_activity WHERE backend_xid = '$old_xid'});
like(sync_status($node, 's', 'state_detail'),
	qr/^its new replication slot waits for these transactions to end: process $old_pid \(transaction $old_xid, open for \d\d:\d\d:\d\d\)$/,
	'... and state_detail names the blocking session, its transaction and its age');
like(slurp_file($node->logfile),
	qr/creating replication slot "calabi_push_\w+" waits for the transactions running now to end, the oldest of which is $old_xid \(process $old_pid\)[^\n]*\n(?:(?:[^\n]*(?:DETAIL|HINT):  |\t)[^\n]*\n)*[^\n]*CONTEXT:  (?:[^\n]*\n\t)*calabi_push sync "s"\n/,
	'the worker logged that it waits, naming the oldest transaction');
is(sync_status($node, 's', 'slot_name IS NOT NULL AND lsn_acknowledged IS NULL'), 't',
	'... with its slot name and no position yet');
is($node->safe_psql('postgres', qq{SELECT string_agg(active_pid::text, ',') FROM pg_replication_slots WHERE slot_name LIKE 'calabi\\_push\\_%'}),
	$pid, 'the slot being created is held by the worker (ephemeral: an error or a crash drops it)');

# stop_sync while it waits: nothing half-created
$node->safe_psql('postgres', q{SELECT calabi_push.stop_sync('s')});
ok($node->poll_query_until('postgres', qq{SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid}),
	'stop_sync ends the wait: the worker exits');
like(slurp_file($node->logfile), qr/the sync stopped before it began decoding[^\n]*\n(?:(?:[^\n]*(?:DETAIL|HINT):  |\t)[^\n]*\n)*[^\n]*CONTEXT:  (?:[^\n]*\n\t)*calabi_push sync "s"\n/,
	'the worker said it stopped, cancelling the wait');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'calabi\_push\_%'}),
	'0', 'stopped while waiting: no slot left behind');
is($node->safe_psql('postgres', q{SELECT cdc_lsn IS NULL FROM calabi_push.sync WHERE name = 's'}),
	't', 'stopped while waiting: no checkpoint either');
unlike(slurp_file($node->logfile), qr/terminated by signal/, 'nothing crashed');

# started again and the old transaction ends: the sync runs
$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
ok(wait_until(sub {
	my $p = sync_status($node, 's', 'pid');
	return $p =~ /^\d+$/ && $node->safe_psql('postgres', qq{
		SELECT wait_event = 'transactionid' FROM pg_stat_activity WHERE pid = $p}) eq 't';
}), 'started again: waiting again');
is(sync_status($node, 's', 'state'), 'waiting_for_transactions', 'started again: waiting_for_transactions again');
$in .= "COMMIT;\n\\q\n";
$old->finish;
ok($node->poll_query_until('postgres', q{
	SELECT state = 'running' AND lsn_acknowledged IS NOT NULL FROM calabi_push.sync_status WHERE name = 's'}),
	'the old transaction ended: the slot is created and the sync runs');
is(sync_status($node, 's', 'state_detail IS NULL'), 't', 'running: no state_detail');
$node->safe_psql('postgres', q{INSERT INTO t VALUES (101, 'after')});
my $lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok($node->poll_query_until('postgres', qq{
	SELECT lsn_acknowledged >= '$lsn' FROM calabi_push.sync_status WHERE name = 's'}), 'caught up');
assert_dest_equals_source($node, 'public', 't', 'the old transaction\'s row included');

$recv->stop;
$node->stop;
done_testing();
