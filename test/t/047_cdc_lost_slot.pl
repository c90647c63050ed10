# A CDC sync whose slot is no longer what it left: dropped behind its back,
# invalidated (max_slot_wal_keep_size; on 18 idle_replication_slot_timeout), or advanced by something else.
# Each stops the sync in error naming the slot and the cause, and resync
# recovers: the destination equals the source.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = cdc_running_sync('CREATE TABLE busy (id bigserial PRIMARY KEY, pad text);', name => 'cdcslot');

# resync reads the table again through a new slot: caught up, and the
# destination equals the source
sub resync_recovers
{
	my ($what) = @_;
	$node->safe_psql('postgres', q{SELECT calabi_push.resync('s')});
	ok(cdc_caught_up($node, 's'), "$what: resync recovers");
	assert_dest_equals_source($node, 'public', 't', "$what, then resync");
}

# the slot was invalidated: with the setting that did it undone, the sync
# started again stops in error, saying so
sub start_invalidated
{
	my ($slot, $undo, $what) = @_;
	$node->append_conf('postgresql.conf', $undo);
	$node->reload;
	$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
	ok(wait_for_state($node, 's', 'error'), "$what: the sync stops in error");
	like(sync_status($node, 's', 'last_error'), qr/replication slot "\Q$slot\E" of sync "s" was invalidated/,
		"$what: the error says so");
}

# --- the slot dropped behind the sync's back ---
{
	my $slot = sync_status($node, 's', 'slot_name');
	$node->safe_psql('postgres', q{SELECT calabi_push.stop_sync('s')});
	ok($node->poll_query_until('postgres', "SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = '$slot'"),
		'stopped: the slot is released');
	$node->safe_psql('postgres', "SELECT pg_drop_replication_slot('$slot')");
	$node->safe_psql('postgres', q{
		UPDATE t SET v = 'while the slot was gone' WHERE id <= 10;
		SELECT calabi_push.start_sync('s');
	});
	ok(wait_for_state($node, 's', 'error'), 'slot dropped: the sync stops in error (no retries: only resync can help)');
	like(sync_status($node, 's', 'last_error'), qr/replication slot "\Q$slot\E" of sync "s" no longer exists/,
		'slot dropped: the error names the slot and the cause');
	like(slurp_file($node->logfile), qr/HINT:  Run SELECT calabi_push.resync\('s'\); to read every table again through a new slot/,
		'slot dropped: the hint names the way out');
	resync_recovers('slot dropped');
	isnt(sync_status($node, 's', 'slot_name'), '', 'a new slot');
}

# --- the slot invalidated by max_slot_wal_keep_size ---
{
	my $slot = sync_status($node, 's', 'slot_name');
	$node->safe_psql('postgres', q{SELECT calabi_push.stop_sync('s')});
	$node->poll_query_until('postgres', "SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = '$slot'");
	$node->append_conf('postgresql.conf', 'max_slot_wal_keep_size = 1MB');
	$node->reload;
	$node->safe_psql('postgres', q{UPDATE t SET v = 'lost with the WAL' WHERE id <= 20});
	for (1 .. 4)
	{
		$node->safe_psql('postgres', q{INSERT INTO busy (pad) SELECT repeat('y', 500) FROM generate_series(1, 5000); SELECT pg_switch_wal();});
	}
	$node->safe_psql('postgres', 'CHECKPOINT');
	ok($node->poll_query_until('postgres', "SELECT wal_status = 'lost' FROM pg_replication_slots WHERE slot_name = '$slot'"),
		'the slot is invalidated');
	start_invalidated($slot, 'max_slot_wal_keep_size = -1', 'slot invalidated');
	like(slurp_file($node->logfile),
		qr/DETAIL:  The server removed WAL the slot still needed \(max_slot_wal_keep_size\)/,
		'slot invalidated: the detail names the cause');
	resync_recovers('slot invalidated');
}

# --- 18: the slot of a sync left stopped, invalidated by
# idle_replication_slot_timeout at a checkpoint ---
if ($node->safe_psql('postgres', 'SHOW server_version_num') >= 180000)
{
	my $slot = sync_status($node, 's', 'slot_name');
	$node->safe_psql('postgres', q{SELECT calabi_push.stop_sync('s')});
	$node->poll_query_until('postgres', "SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = '$slot'");
	$node->append_conf('postgresql.conf', 'idle_replication_slot_timeout = 1');
	$node->reload;
	sleep 2;
	$node->safe_psql('postgres', 'CHECKPOINT');
	ok($node->poll_query_until('postgres',
			"SELECT invalidation_reason = 'idle_timeout' FROM pg_replication_slots WHERE slot_name = '$slot'"),
		'18: the stopped sync\'s slot is invalidated by idle_replication_slot_timeout');
	start_invalidated($slot, 'idle_replication_slot_timeout = 0', 'idle timeout');
	my $log = slurp_file($node->logfile);
	like($log, qr/DETAIL:  The slot was unused \(the sync stopped\) for longer than idle_replication_slot_timeout/,
		'idle timeout: the detail names the cause, not max_slot_wal_keep_size');
	like($log, qr/HINT:  Run SELECT calabi_push.resync\('s'\); to read every table again through a new slot, and raise idle_replication_slot_timeout/,
		'idle timeout: the hint names the setting');
	resync_recovers('idle timeout');
}

# --- the slot consumed by something else: ahead of the sync's checkpoint ---
{
	my $slot = sync_status($node, 's', 'slot_name');
	$node->safe_psql('postgres', q{SELECT calabi_push.stop_sync('s')});
	$node->poll_query_until('postgres', "SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = '$slot'");
	$node->safe_psql('postgres', qq{
		UPDATE t SET v = 'consumed elsewhere' WHERE id <= 30;
		SELECT pg_replication_slot_advance('$slot', pg_current_wal_lsn());
		SELECT calabi_push.start_sync('s');
	});
	ok(wait_for_state($node, 's', 'error'), 'slot advanced behind the sync: it stops in error');
	like(sync_status($node, 's', 'last_error'), qr/replication slot "\Q$slot\E" of sync "s" is ahead of the sync's checkpoint/,
		'slot advanced: the error says the changes in between were never sent');
	resync_recovers('slot advanced');
}

$recv->stop;
$node->stop;
done_testing();
