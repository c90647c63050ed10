# A change decoded from the WAL whose record is larger than the sync's
# batch_bytes cannot be sent (a record is never split across batches): the
# sync delivers and acknowledges every change before it, then stops in
# 'error' (SQLSTATE 54000) naming the table, the key, the change's LSN and
# its size -- never a record over the limit, never "Cannot enlarge string
# buffer" and a worker restarted forever.  The slot and the checkpoint stay
# before that change's transaction, so start_sync meets it again and stops
# the same way; resync (after making the value smaller) and a sync created
# again with a larger batch_bytes both get everything through.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'hugechange', receiver => { log_bodies => 1 });
allow_output_plugin($node);
# the log shows each error's SQLSTATE
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET log_error_verbosity = 'verbose';
	SELECT pg_reload_conf();
	CREATE TABLE big (id int PRIMARY KEY, v text);
	INSERT INTO big SELECT g, 'small ' || g FROM generate_series(1, 4) g;
});

# The RECORDs of table big the receiver accepted from a sync, in order, as
# "id:v" ("id:deleted" for a delete, the length for a long value).
sub big_records
{
	my ($sync) = @_;
	return [
		map {
			my $d = $_->{record}{data};
			defined $d->{_calabi_cdc_deleted_at} ? "$d->{id}:deleted"
			  : length($d->{v} // '') > 100 ? "$d->{id}:" . length($d->{v})
			  : "$d->{id}:" . ($d->{v} // 'null')
		  }
		  grep { $_->{type} eq 'RECORD' && $_->{record}{stream} eq 'big' }
		  @{ sent_messages($recv, $sync) } ];
}

sub lsn { return $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()') }

# How many times the log says a change was too large to send.
sub errors_logged
{
	my @hits = slurp_file($node->logfile) =~ /ERROR:\s+54000: change .* is too large to send/g;
	return scalar @hits;
}

# Waits until the sync stopped in error or acknowledged $lsn.
sub stopped_or_past
{
	my ($sync, $lsn) = @_;
	return $node->poll_query_until('postgres', qq{
		SELECT state = 'error' OR lsn_acknowledged >= '$lsn'
		  FROM calabi_push.sync_status WHERE name = '$sync'});
}

$node->safe_psql('postgres', q{
	SELECT calabi_push.create_sync('hc', 'recv', ARRAY['big']::regclass[],
	  method => 'cdc', options => '{"batch_bytes": "64kB"}');
	SELECT calabi_push.start_sync('hc');
});
ok(cdc_caught_up($node, 'hc'), 'backfilled and caught up');
my $backfilled = scalar @{ big_records('hc') };
is($backfilled, 4, 'the backfill sent the four rows');

# small changes, then one whose record escapes to 120 kB, then more small ones
$node->safe_psql('postgres', "INSERT INTO big VALUES (10, 'ten')");
$node->safe_psql('postgres', "UPDATE big SET v = 'one' WHERE id = 1");
$node->safe_psql('postgres', "DELETE FROM big WHERE id = 4");
my $before = lsn();
$node->safe_psql('postgres', "INSERT INTO big VALUES (21, repeat(chr(1), 20000))");
my $committed = lsn();
$node->safe_psql('postgres', "INSERT INTO big VALUES (30, 'thirty')");
$node->safe_psql('postgres', "UPDATE big SET v = 'two' WHERE id = 2");
my $after = lsn();

ok(stopped_or_past('hc', $after), 'the sync stops or gets past the change');
is(sync_status($node, 'hc', 'state'), 'error', 'stopped in error');
my $err = sync_status($node, 'hc', 'last_error');
like($err,
	qr/^change \(id\)=\(21\) of "public"\."big" at [0-9A-F]+\/[0-9A-F]+ is too large to send: its record would exceed batch_bytes \(65536 bytes\); its values take 2\d{4} bytes before encoding$/,
	'the error names the change, its table, key and LSN, the limit and the size');
my ($at) = $err =~ / at ([0-9A-F]+\/[0-9A-F]+) /;
ok($node->safe_psql('postgres', "SELECT '$at'::pg_lsn BETWEEN '$before' AND '$after'"),
	'the LSN is the change\'s');
my @changes = @{ big_records('hc') }[ $backfilled .. $#{ big_records('hc') } ];
is_deeply(\@changes, [ '10:ten', '1:one', '4:deleted' ],
	'the changes before it were delivered, none of it or after it');
my $sent = sync_status($node, 'hc', 'records_sent');
is($sent, 7, 'and acknowledged');
my $slot = sync_status($node, 'hc', 'slot_name');
ok($node->safe_psql('postgres', qq{
	SELECT s.lsn_acknowledged < '$committed' AND r.confirmed_flush_lsn < '$committed'
	  FROM calabi_push.sync_status s, pg_replication_slots r
	 WHERE s.name = 'hc' AND r.slot_name = '$slot'}),
	'the checkpoint and the slot stay before its transaction');

my $log = slurp_file($node->logfile);
like($log, qr/ERROR:\s+54000: change \(id\)=\(21\)/, 'SQLSTATE 54000');
like($log, qr/HINT:\s+Create the sync again with a larger batch_bytes .*make the value smaller.*resync\('hc'\)/,
	'the hint gives the ways out');
unlike($log, qr/Cannot enlarge string buffer/, 'never a failure to enlarge a buffer');

# stopped, not retried: one error, no restarted worker
sleep 2;
is(sync_status($node, 'hc', q{state || ' ' || retries}), 'error 0', 'not retried');
is(errors_logged(), 1, 'met once: no worker restarted in a loop');
is(sync_status($node, 'hc', 'records_sent'), $sent, 'records_sent stays');

# start_sync meets the same change again and stops the same way
$node->safe_psql('postgres', "SELECT calabi_push.start_sync('hc')");
ok(wait_until(sub { errors_logged() >= 2 }), 'start_sync: met again');
ok(wait_for_state($node, 'hc', 'error'), 'start_sync: stopped in error again');
is(sync_status($node, 'hc', 'last_error'), $err, 'start_sync: the same error');
sleep 2;
is(errors_logged(), 2, 'start_sync: once, no loop');
is(sync_status($node, 'hc', q{retries || ' ' || records_sent}), "0 $sent",
	'start_sync: nothing more sent');
is_deeply([ @{ big_records('hc') }[ $backfilled .. $#{ big_records('hc') } ] ], \@changes,
	'start_sync: nothing re-sent, nothing after it sent');

# the way out by the hint: the value made smaller, then resync (a new slot)
$node->safe_psql('postgres', q{
	UPDATE big SET v = 'shrunk' WHERE id = 21;
	SELECT calabi_push.resync('hc');
});
ok(cdc_caught_up($node, 'hc'), 'resync: backfilled again and caught up');
is(sync_status($node, 'hc', 'state'), 'running', 'resync: running');
assert_dest_equals_source($node, 'public', 'big', 'resync');

# an update making a value too large, inside a transaction: what precedes
# it in the transaction goes, nothing after it
my $mark = scalar @{ big_records('hc') };
$node->safe_psql('postgres', "INSERT INTO big VALUES (35, 'thirty-five')");
$node->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO big VALUES (40, 'forty');
	UPDATE big SET v = repeat(chr(2), 20000) WHERE id = 3;
	INSERT INTO big VALUES (41, 'forty-one');
	COMMIT;
});
$committed = lsn();
$node->safe_psql('postgres', "INSERT INTO big VALUES (50, 'fifty')");
$after = lsn();
ok(stopped_or_past('hc', $after), 'update: the sync stops or gets past the change');
like(sync_status($node, 'hc', q{state || ': ' || last_error}),
	qr/^error: change \(id\)=\(3\) of "public"\."big" at [0-9A-F]+\/[0-9A-F]+ is too large to send: its record would exceed batch_bytes \(65536 bytes\)/,
	'update: stopped in error, naming the updated row');
is_deeply([ @{ big_records('hc') }[ $mark .. $#{ big_records('hc') } ] ],
	[ '35:thirty-five', '40:forty' ],
	'update: delivered up to the change, none of it or after it');
ok($node->safe_psql('postgres', qq{
	SELECT lsn_acknowledged < '$committed' FROM calabi_push.sync_status WHERE name = 'hc'}),
	'update: the checkpoint stays before its transaction');

# the sync again with a batch_bytes its records fit in: everything arrives,
# large changes decoded from the WAL included
$node->safe_psql('postgres', q{
	UPDATE big SET v = repeat(chr(1), 20000) WHERE id = 21;
	SELECT calabi_push.drop_sync('hc');
	SELECT calabi_push.create_sync('hc', 'recv', ARRAY['big']::regclass[],
	  method => 'cdc', options => '{"batch_bytes": "1MB"}');
	SELECT calabi_push.start_sync('hc');
});
ok(cdc_caught_up($node, 'hc'), 'batch_bytes 1MB: backfilled and caught up');
$node->safe_psql('postgres', q{
	INSERT INTO big VALUES (60, repeat(chr(3), 20000));
	UPDATE big SET v = repeat(chr(4), 30000) WHERE id = 10;
});
ok(cdc_caught_up($node, 'hc'), 'batch_bytes 1MB: large changes acknowledged');
is(sync_status($node, 'hc', q{state || coalesce(last_error, '')}), 'running',
	'batch_bytes 1MB: no error');
assert_dest_equals_source($node, 'public', 'big', 'batch_bytes 1MB');

$recv->stop;
$node->stop;
done_testing();
