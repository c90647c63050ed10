# CDC end to end: a sync owns a slot, backfills its tables in chunks, then
# streams every committed change (inserts, updates, deletes, a key moved,
# TRUNCATE, a column added, dropped and retyped, TOAST under both replica
# identities, subtransactions rolled back, an aborted transaction) into the
# reference receiver, which ends equal to the source; the wire carries what
# the protocol says of CDC records; drop_sync drops the slot.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'cdc', receiver => { log_bodies => 1 });
allow_output_plugin($node);

# Waits until the sync acknowledged everything committed so far.
sub caught_up
{
	my ($sync) = @_;
	my $lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	return $node->poll_query_until('postgres', qq{
		SELECT lsn_acknowledged >= '$lsn' OR state = 'error'
		  FROM calabi_push.sync_status WHERE name = '$sync'});
}

$node->safe_psql('postgres', everything_sql('schema') . everything_sql('rows') . q{
	CREATE TABLE orders (id int PRIMARY KEY, status text, note text, amount numeric);
	INSERT INTO orders SELECT g, 'new', 'note ' || g, g * 1.5 FROM generate_series(1, 2345) g;
	CREATE TABLE wide (id int PRIMARY KEY, small text, big text);
	ALTER TABLE wide ALTER COLUMN big SET STORAGE EXTERNAL;
	INSERT INTO wide SELECT g, 's' || g, repeat(md5(g::text), 400) FROM generate_series(1, 20) g;
	CREATE TABLE wide_full (id int PRIMARY KEY, small text, big text);
	ALTER TABLE wide_full REPLICA IDENTITY FULL;
	ALTER TABLE wide_full ALTER COLUMN big SET STORAGE EXTERNAL;
	INSERT INTO wide_full SELECT g, 's' || g, repeat(md5(g::text), 400) FROM generate_series(1, 20) g;
});

$node->safe_psql('postgres', q{
	SELECT calabi_push.create_sync('cdc', 'recv',
	  ARRAY['everything', 'orders', 'wide', 'wide_full']::regclass[], method => 'cdc',
	  options => '{"batch_rows": 500, "chunk_rows": 300}');
	SELECT calabi_push.start_sync('cdc');
});

my $slot = sync_status($node, 'cdc', 'slot_name');
like($slot, qr/^calabi_push_[0-9a-f]{32}$/, 'the slot is named for the sync');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 4 FROM calabi_push.stream_status WHERE sync = 'cdc' AND phase = 'done'}),
	'every table is backfilled');
is($node->safe_psql('postgres', "SELECT plugin || ':' || slot_type FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'calabi_push:logical', 'the sync owns a logical slot with its own plugin');
ok(caught_up('cdc'), 'caught up after the backfill');
is(sync_status($node, 'cdc', "state || coalesce(last_error, '')"), 'running', 'running, no error');
assert_dest_equals_source($node, 'public', 'orders', 'backfill: orders');
assert_dest_equals_source($node, 'public', 'everything', 'backfill: every type family');

# changes of every kind
$node->safe_psql('postgres', q{
	INSERT INTO orders SELECT g, 'new', NULL, g FROM generate_series(3000, 3100) g;
	UPDATE orders SET status = 'paid', amount = amount + 1 WHERE id % 7 = 0;
	DELETE FROM orders WHERE id % 11 = 0;
	UPDATE orders SET id = id + 100000 WHERE id BETWEEN 5 AND 9;
	BEGIN;
	INSERT INTO orders VALUES (90001, 'kept', NULL, 1);
	SAVEPOINT a;
	INSERT INTO orders VALUES (90002, 'rolled back', NULL, 2);
	UPDATE orders SET status = 'rolled back' WHERE id = 1;
	ROLLBACK TO SAVEPOINT a;
	INSERT INTO orders VALUES (90003, 'kept too', NULL, 3);
	COMMIT;
	BEGIN;
	INSERT INTO orders VALUES (90004, 'aborted', NULL, 4);
	DELETE FROM orders WHERE id = 2;
	ROLLBACK;
	UPDATE wide SET small = 'changed' WHERE id <= 10;
	UPDATE wide_full SET small = 'changed' WHERE id <= 10;
	DELETE FROM wide WHERE id = 20;
	DELETE FROM wide_full WHERE id = 20;
	UPDATE everything SET tx = 'cdc ' || id WHERE id % 2 = 0;
});
ok(caught_up('cdc'), 'caught up after the changes');
assert_dest_equals_source($node, 'public', 'orders', 'changes: orders');
assert_dest_equals_source($node, 'public', 'wide', 'unchanged TOAST, replica identity default');
assert_dest_equals_source($node, 'public', 'wide_full', 'unchanged TOAST, replica identity full');
assert_dest_equals_source($node, 'public', 'everything', 'changes: every type family');
is($node->safe_psql('calabi_dest', q{SELECT count(*) FROM public.orders WHERE status IN ('rolled back', 'aborted')}),
	'0', 'rolled-back subtransactions and aborted transactions never appear');

# the records on the wire
my @lines = @{ sent_messages($recv, 'cdc') };
my @unch = grep { ($_->{type} // '') eq 'RECORD' && $_->{record}{stream} eq 'wide' && $_->{record}{unchanged} } @lines;
ok(scalar(@unch) >= 10, 'unchanged TOASTed values are listed in "unchanged"');
ok(!(grep { exists $_->{record}{data}{big} } @unch), '... and absent from data');
my @full = grep { ($_->{type} // '') eq 'RECORD' && $_->{record}{stream} eq 'wide_full'
	  && ($_->{record}{data}{small} // '') eq 'changed' } @lines;
ok(@full && !(grep { $_->{record}{unchanged} } @full), 'replica identity full: the whole row, nothing unchanged');
my @del = grep { ($_->{type} // '') eq 'RECORD' && $_->{record}{stream} eq 'orders'
	  && defined $_->{record}{data}{_calabi_cdc_deleted_at} } @lines;
ok(scalar(@del) >= 200, 'deletes carry _calabi_cdc_deleted_at: ' . scalar(@del));
ok(!(grep { !defined $_->{record}{data}{id} } @del), '... and the key');
my @stream = grep { ($_->{type} // '') eq 'STREAM' && $_->{stream}{name} eq 'orders' } @lines;
ok(@stream && $stream[0]{stream}{method} eq 'cdc'
	  && join(',', @{ $stream[0]{stream}{cursor_field} }) eq '_calabi_cdc_lsn'
	  && $stream[0]{stream}{destination_sync_mode} eq 'append_dedup',
	'STREAM: method cdc, cursor _calabi_cdc_lsn, append_dedup');

# TRUNCATE, then rows again
$node->safe_psql('postgres', q{
	TRUNCATE wide;
	INSERT INTO wide VALUES (1, 'after truncate', 'x');
});
ok(caught_up('cdc'), 'caught up after TRUNCATE');
assert_dest_equals_source($node, 'public', 'wide', 'TRUNCATE');

# DDL mid-stream: a column added (never written), one dropped, one retyped
$node->safe_psql('postgres', q{
	ALTER TABLE orders ADD COLUMN never_written int;
	UPDATE orders SET status = 'after add' WHERE id = 1;
	ALTER TABLE orders DROP COLUMN note;
	UPDATE orders SET status = 'after drop' WHERE id = 3;
	ALTER TABLE orders ALTER COLUMN amount TYPE text USING amount::text;
	UPDATE orders SET status = 'after retype' WHERE id = 4;
	INSERT INTO orders VALUES (95000, 'new shape', 'text amount', 7);
});
ok(caught_up('cdc'), 'caught up after DDL');
assert_dest_equals_source($node, 'public', 'orders', 'DDL mid-stream');
@lines = @{ sent_messages($recv, 'cdc') };
@stream = grep { ($_->{type} // '') eq 'STREAM' && $_->{stream}{name} eq 'orders' } @lines;
ok(scalar(@stream) >= 4, 'a new STREAM for each shape: ' . scalar(@stream));

# resync of one table: it is backfilled again (a new generation) while the
# others keep streaming
{
	my $gen = $node->safe_psql('postgres', q{
		SELECT generation FROM calabi_push.stream_status WHERE sync = 'cdc' AND relation = 'orders'::regclass});
	$node->safe_psql('postgres', q{
		SELECT calabi_push.resync('cdc', 'orders');
		INSERT INTO wide VALUES (2, 'during resync', 'y');
		UPDATE orders SET status = 'during resync' WHERE id <= 50;
	});
	ok($node->poll_query_until('postgres', qq{
		SELECT phase = 'done' AND generation = $gen + 1
		  FROM calabi_push.stream_status WHERE sync = 'cdc' AND relation = 'orders'::regclass}),
		'resync of one table: backfilled again under a new generation');
	ok(caught_up('cdc'), 'caught up after the resync');
	assert_dest_equals_source($node, 'public', 'orders', 'resync of one table');
	assert_dest_equals_source($node, 'public', 'wide', 'the other tables kept streaming');
	is($node->safe_psql('postgres', q{
		SELECT string_agg(generation::text, ',' ORDER BY ordinal) FROM calabi_push.stream_status
		 WHERE sync = 'cdc' AND relation <> 'orders'::regclass}), '1,1,1',
		'the other tables were not read again');
}

# an append sync takes a keyless table, read by ranges of blocks; each
# chunk in a request of its own (no calabi_push.cdc_send_interval, which
# would let chunks placed within 10 ms share one), so that the requests
# show the chunks
$node->safe_psql('postgres', q{ALTER SYSTEM SET calabi_push.cdc_send_interval = 0});
$node->reload;
$node->safe_psql('postgres', q{
	CREATE TABLE keyless (x int, y text);
	INSERT INTO keyless SELECT g, repeat('k', 200) FROM generate_series(1, 3000) g;
	SELECT calabi_push.create_sync('cdc-append', 'recv', ARRAY['keyless']::regclass[],
	  method => 'cdc', destination_sync_mode => 'append', options => '{"chunk_rows": 500}');
	SELECT calabi_push.start_sync('cdc-append');
});
ok($node->poll_query_until('postgres', q{
	SELECT phase = 'done' FROM calabi_push.stream_status WHERE sync = 'cdc-append'}),
	'append, keyless: backfilled');
ok(caught_up('cdc-append'), 'append, keyless: caught up');
is($node->safe_psql('calabi_dest', 'SELECT count(*) FROM public.keyless'), '3000',
	'append, keyless: every row once');
ok(scalar(grep { ($_->{type} // '') eq 'STATE' } @{ sent_messages($recv, 'cdc-append') }) > 5,
	'append, keyless: read in several chunks');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET calabi_push.cdc_send_interval});
$node->reload;
$node->safe_psql('postgres', q{
	INSERT INTO keyless VALUES (-1, 'new');
	DELETE FROM keyless WHERE x = 1;
});
ok(caught_up('cdc-append'), 'append, keyless: changes caught up');
is($node->safe_psql('calabi_dest', q{
	SELECT count(*) FILTER (WHERE x = -1) || ',' || count(*) FILTER (WHERE _calabi_cdc_deleted_at IS NOT NULL)
	  FROM public.keyless}), '1,1', 'append, keyless: the insert and the delete are appended');
$node->safe_psql('postgres', q{SELECT calabi_push.drop_sync('cdc-append')});

# only what the sync's role may read leaves the database: a table whose
# SELECT is revoked mid-stream stops the sync in error before any of its
# later changes is sent
$node->safe_psql('postgres', q{
	CREATE ROLE cdc_reader LOGIN;
	CREATE TABLE open_t (id int PRIMARY KEY, v text);
	CREATE TABLE closed_t (id int PRIMARY KEY, v text);
	GRANT SELECT ON open_t, closed_t TO cdc_reader;
	INSERT INTO open_t VALUES (1, 'a');
	INSERT INTO closed_t VALUES (1, 'a');
	SELECT calabi_push.create_sync('cdc-role', 'recv', ARRAY['open_t', 'closed_t']::regclass[],
	  method => 'cdc', options => '{"run_as": "cdc_reader"}');
	SELECT calabi_push.start_sync('cdc-role');
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM calabi_push.stream_status WHERE sync = 'cdc-role' AND phase = 'done'}),
	'run_as: backfilled');
ok(caught_up('cdc-role'), 'run_as: caught up');
$node->safe_psql('postgres', q{
	REVOKE SELECT ON closed_t FROM cdc_reader;
	INSERT INTO open_t VALUES (2, 'b');
	INSERT INTO closed_t VALUES (2, 'secret');
});
ok(wait_for_state($node, 'cdc-role', 'error'), 'run_as: SELECT revoked: the sync stops in error');
like(sync_status($node, 'cdc-role', 'last_error'),
	qr/role cdc_reader may no longer SELECT table public\.closed_t: .*GRANT SELECT ON public\.closed_t TO cdc_reader, then start_sync/,
	'run_as: the error names the table, the cause and the way out');
is($node->safe_psql('calabi_dest', q{SELECT count(*) FROM public.closed_t WHERE v = 'secret'}), '0',
	'run_as: a change of a table the role may no longer read is not sent');
$node->safe_psql('postgres', q{SELECT calabi_push.drop_sync('cdc-role')});

# lag and positions
my ($sent, $acked, $lag) = split /\|/, sync_status($node, 'cdc',
	'lsn_sent IS NOT NULL, lsn_acknowledged IS NOT NULL, lag_bytes >= 0');
is("$sent|$acked|$lag", 't|t|t', 'sync_status shows positions sent and acknowledged, and the lag');

# drop_sync drops the slot
$node->safe_psql('postgres', q{SELECT calabi_push.drop_sync('cdc')});
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'drop_sync drops the slot');

$recv->stop;
$node->stop;
done_testing();
