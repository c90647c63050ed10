# CDC through crashes and lost slots: kill -9 of the worker and of the
# postmaster mid-backfill and mid-stream, and a crash between the endpoint's
# 2xx and the checkpoint's commit: the destination equals the source
# afterwards and the records sent twice stay within the batches in flight.
# The slot dropped behind the sync's back, or invalidated by
# max_slot_wal_keep_size: a loud error naming the way out, and resync
# recovers.  An idle sync beside a busy table holds no WAL.  The
# output_plugin_libraries allow-list: a clear error with the fix.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my $batch_rows = 100;

# restart_after_crash as in production (the test framework turns it off)
my ($node, $recv) = sync_setup(name => 'cdcrec', conf => 'restart_after_crash = on',
	receiver => { log_bodies => 1 });

# --- the allow-list ---
SKIP:
{
	skip 'this server has no output_plugin_libraries', 3
	  unless $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_settings WHERE name = 'output_plugin_libraries'});
	$node->safe_psql('postgres', 'CREATE TABLE early (id int PRIMARY KEY)');
	my $e = sql_error($node, 'postgres', q{
		SELECT calabi_push.create_sync('early', 'recv', ARRAY['early']::regclass[], method => 'cdc')});
	is($e->{sqlstate}, '55000', 'not allowed: create_sync refuses');
	like($e->{message}, qr/output plugin "calabi_push" is not allowed by output_plugin_libraries/,
		'... saying why');
	like($e->{hint}, qr/ALTER SYSTEM SET output_plugin_libraries = pgoutput, test_decoding, calabi_push; then SELECT pg_reload_conf\(\);/,
		'... and how to fix it');
}
allow_output_plugin($node);

$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
	INSERT INTO t SELECT g, md5(g::text), 0 FROM generate_series(1, 3000) g;
	CREATE PROCEDURE churn(first int, last int) LANGUAGE plpgsql AS $$
	BEGIN
	  FOR i IN first .. last LOOP
	    INSERT INTO t VALUES (100000 + i, 'new ' || i) ON CONFLICT (id) DO UPDATE SET n = t.n + 1;
	    UPDATE t SET n = n + 1, v = 'upd ' || i WHERE id = 1 + (i * 7) % 3000;
	    DELETE FROM t WHERE id = 1 + (i * 13) % 3000;
	    COMMIT;
	  END LOOP;
	END $$;
});
$node->safe_psql('postgres', qq{
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[], method => 'cdc',
	  options => '{"batch_rows": $batch_rows, "chunk_rows": $batch_rows}');
});

# Every committed change acknowledged?
sub caught_up { return cdc_caught_up($node, 's') }

# Records sent more than once: the same row version (key, position, kind).
sub repeats
{
	my %seen;
	my $n = 0;
	for my $m (@{ sent_messages($recv, 's') })
	{
		next unless ($m->{type} // '') eq 'RECORD';
		my $d = $m->{record}{data};
		my $k = join('|', $d->{id}, $d->{_calabi_cdc_lsn}, defined $d->{_calabi_cdc_deleted_at} ? 'd' : 'u');
		$n++ if $seen{$k}++;
	}
	return $n;
}

sub kill_worker
{
	my $pid = $node->safe_psql('postgres', q{SELECT pid FROM calabi_push.sync_status WHERE name = 's'});
	ok($pid =~ /^\d+$/, 'the worker runs');
	kill 'KILL', $pid;
	$node->poll_query_until('postgres', 'SELECT true');
}

sub restart_postmaster
{
	$node->stop('immediate');
	$node->start;
}

# Records the receiver accepted from the sync.
sub records_received
{
	my $n = 0;
	$n += ($_->{status} // 0) == 200 ? ($_->{records} // 0) : 0 for @{ ingest_requests($recv, 's') };
	return $n;
}

# --- mid-backfill (nothing else changes: every record beyond the table's
# 3000 rows was sent twice) ---
my $repeats = 0;
for my $crash ([ 'kill -9 of the worker', \&kill_worker ], [ 'kill -9 of the postmaster', \&restart_postmaster ])
{
	my ($what, $do) = @$crash;
	my $received = records_received();
	$recv->fault({ kind => 'stall', seconds => 0.3, count => -1 });
	if ($what =~ /worker/)
	{
		$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
	}
	else
	{
		$node->safe_psql('postgres', q{SELECT calabi_push.resync('s', 't')});
	}
	ok($node->poll_query_until('postgres', q{
		SELECT phase = 'reading' AND rows_sent >= 500 FROM calabi_push.stream_status WHERE sync = 's'}),
		"$what mid-backfill: part of the table acknowledged");
	$do->();
	$recv->clear_faults;
	ok(caught_up(), "$what mid-backfill: the backfill completes");
	like(slurp_file($node->logfile), qr/resumes the backfill of "public"."t" after \d+ rows/,
		"$what mid-backfill: resumed from its checkpoint");
	assert_dest_equals_source($node, 'public', 't', "$what mid-backfill");
	my $twice = records_received() - $received - 3000;
	ok($twice >= 0 && $twice <= 2 * $batch_rows, "$what mid-backfill: $twice records sent twice, within the batches in flight");
	$repeats = repeats();
}

# --- mid-stream ---
for my $crash ([ 'kill -9 of the worker', \&kill_worker ], [ 'kill -9 of the postmaster', \&restart_postmaster ])
{
	my ($what, $do) = @$crash;
	my $acked = sync_status($node, 's', 'records_sent');
	$recv->fault({ kind => 'stall', seconds => 0.2, count => -1 });
	$node->safe_psql('postgres', 'CALL churn(1, 400)');
	ok($node->poll_query_until('postgres', qq{
		SELECT records_sent >= $acked + 150 FROM calabi_push.sync_status WHERE name = 's'}),
		"$what mid-stream: part of the changes acknowledged");
	$do->();
	$recv->clear_faults;
	ok(caught_up(), "$what mid-stream: caught up after recovery");
	assert_dest_equals_source($node, 'public', 't', "$what mid-stream");
	my $r = repeats();
	ok($r - $repeats <= 2 * $batch_rows, "$what mid-stream: " . ($r - $repeats) . ' records sent twice, within the batches in flight');
	$repeats = $r;
}

# --- the crash between the endpoint's 2xx and the checkpoint's commit ---
{
	# the changes of the stalled batch are all after this position; an idle
	# sync may still record its position up to here meanwhile
	my $before = $node->safe_psql('postgres', q{SELECT pg_current_wal_lsn()});
	my $nreq = scalar(@{ ingest_requests($recv, 's') });
	# the endpoint commits the batch, then takes 4 s to say so
	$recv->fault({ kind => 'stall', seconds => 4, count => 1 });
	$node->safe_psql('postgres', 'CALL churn(401, 420)');
	ok(wait_until(sub {
		$node->safe_psql('calabi_dest', q{SELECT count(*) FROM public.t WHERE v = 'upd 401'}) eq '1' }),
		'2xx lost: the endpoint applied the batch');
	is($node->safe_psql('postgres', qq{SELECT cdc_lsn <= '$before' FROM calabi_push.sync WHERE name = 's'}), 't',
		'2xx lost: the checkpoint did not move past the unacknowledged batch');
	kill_worker();
	$recv->clear_faults;
	ok(caught_up(), '2xx lost: caught up after recovery');
	assert_dest_equals_source($node, 'public', 't', '2xx lost');
	# the receiver logs the stalled request once it has slept
	ok(wait_until(sub { grep { ($_->{duration_ms} // 0) >= 4000 } @{ ingest_requests($recv, 's', $nreq) } }),
		'2xx lost: the stalled request is logged');
	my $r = repeats();
	ok($r - $repeats > 0 && $r - $repeats <= 2 * $batch_rows,
		'2xx lost: the unacknowledged batch was sent again (' . ($r - $repeats) . ' records), nothing else');
	$repeats = $r;
}

# --- an idle sync beside a busy table holds no WAL ---
{
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
	$node->safe_psql('postgres', q{SELECT calabi_push.resync('s')});
	ok(caught_up(), 'slot dropped: resync recovers');
	assert_dest_equals_source($node, 'public', 't', 'slot dropped, then resync');
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
	$node->append_conf('postgresql.conf', 'max_slot_wal_keep_size = -1');
	$node->reload;
	$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
	ok(wait_for_state($node, 's', 'error'), 'slot invalidated: the sync stops in error');
	like(sync_status($node, 's', 'last_error'), qr/replication slot "\Q$slot\E" of sync "s" was invalidated/,
		'slot invalidated: the error says so');
	$node->safe_psql('postgres', q{SELECT calabi_push.resync('s')});
	ok(caught_up(), 'slot invalidated: resync recovers');
	assert_dest_equals_source($node, 'public', 't', 'slot invalidated, then resync');
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
	$node->safe_psql('postgres', q{SELECT calabi_push.resync('s')});
	ok(caught_up(), 'slot advanced: resync recovers');
	assert_dest_equals_source($node, 'public', 't', 'slot advanced, then resync');
}

# --- a refusal met while a transaction is being replayed ---
{
	# the batch fills (batch_rows 100) inside the replay of a 1,000-row
	# transaction: the refused POST is sent from the output plugin's callback
	$recv->fault({ kind => 'refuse', status => 400, error => 'no thanks', count => 1 });
	$node->safe_psql('postgres', q{INSERT INTO t SELECT 200000 + g, 'refused?' FROM generate_series(1, 1000) g});
	ok(wait_for_state($node, 's', 'error'), 'a refusal inside a replayed transaction stops the sync in error');
	like(sync_status($node, 's', 'last_error'), qr/HTTP 400.*no thanks/, '... showing the status and the body');
	like(slurp_file($node->logfile), qr/ERROR:  calabi_push sync "s" stopped, no retry can help: HTTP 400: \{"error": "no thanks"\}\n[^\n]*HINT:  [^\n]*\n[^\n]*CONTEXT:  slot "calabi_push_\w+", output plugin "calabi_push", in the change callback/,
		'... raised from the output plugin\'s change callback');
	$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
	ok(caught_up(), 'start_sync resumes after the refusal');
	assert_dest_equals_source($node, 'public', 't', 'after a refusal mid-transaction');
}

# --- DROP EXTENSION: the syncs' slots go with it ---
$node->safe_psql('postgres', q{
	CREATE TABLE other (id int PRIMARY KEY);
	SELECT calabi_push.create_sync('stopped-one', 'recv', ARRAY['other']::regclass[], method => 'cdc');
	SELECT calabi_push.start_sync('stopped-one');
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM pg_replication_slots WHERE slot_name LIKE 'calabi\_push\_%'}),
	'two CDC syncs, two slots');
$node->safe_psql('postgres', q{SELECT calabi_push.stop_sync('stopped-one')});
$node->safe_psql('postgres', 'DROP EXTENSION calabi_push CASCADE');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name LIKE 'calabi\_push\_%'}),
	'DROP EXTENSION: the slots of a running and of a stopped sync are dropped');

$recv->stop;
$node->stop;
done_testing();
