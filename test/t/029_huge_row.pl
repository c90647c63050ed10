# A row whose record is larger than the sync's batch_bytes cannot be sent
# (a record is never split across batches): the sync stops in 'error',
# naming the table, the row's key and its size, after delivering every row
# before it -- never "Cannot enlarge string buffer" and a worker restarted
# forever.  Raising batch_bytes (by creating the sync again) gets it through.
# Text of control characters escapes to six times its size, bytea to twice:
# both are caught by the record's encoded size, not the value's.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'huge', receiver => { log_bodies => 1 });
allow_output_plugin($node);

# 20000 control characters: 20 kB stored, 120 kB as JSON (batch_bytes 64 kB)
$node->safe_psql('postgres', q{
	CREATE TABLE big (id int PRIMARY KEY, v text);
	INSERT INTO big SELECT g, CASE WHEN g = 5 THEN repeat(chr(1), 20000) ELSE 'small ' || g END
	  FROM generate_series(1, 8) g;
	CREATE TABLE bigless (x int, b bytea);
	INSERT INTO bigless VALUES (1, '\x01'), (2, decode(repeat('ab', 40000), 'hex')), (3, '\x03');
	CREATE TABLE bigcdc (id int PRIMARY KEY, v text);
	INSERT INTO bigcdc SELECT g, CASE WHEN g = 3 THEN repeat(chr(1), 20000) ELSE 'small ' || g END
	  FROM generate_series(1, 6) g;
});

sub record_ids
{
	my ($sync, $stream) = @_;
	return [ map { $_->{record}{data}{id} // $_->{record}{data}{x} }
		  grep { $_->{type} eq 'RECORD' && $_->{record}{stream} eq $stream }
		  @{ sent_messages($recv, $sync) } ];
}

# full refresh, keyed: rows 1-4 delivered, then the error on row 5
$node->safe_psql('postgres', q{
	SELECT calabi_push.create_sync('huge', 'recv', ARRAY['big']::regclass[],
	  options => '{"batch_bytes": "64kB", "chunk_rows": 2, "batch_rows": 2}');
	SELECT calabi_push.start_sync('huge');
});
ok(wait_for_state($node, 'huge', 'error', 'idle'), 'full refresh: the run stops');
my $err = sync_status($node, 'huge', q{state || ': ' || coalesce(last_error, '')});
like($err, qr/^error: row \(id\)=\(5\) of "public"\."big" is too large to send/,
	'stopped in error, naming the table and the key');
like($err, qr/exceed batch_bytes \(65536 bytes\); its values take 2\d{4} bytes before encoding/,
	'the error gives the limit and the size');
is_deeply(record_ids('huge', 'big'), [ 1, 2, 3, 4 ], 'the rows before it were delivered, in order');
is(sync_status($node, 'huge', 'records_sent'), '4', 'and acknowledged');
my $log = slurp_file($node->logfile);
like($log, qr/HINT:\s+Create the sync again with a larger batch_bytes/, 'the hint says how to fix it');
unlike($log, qr/Cannot enlarge string buffer/, 'never a failure to enlarge a buffer');
ok($node->poll_query_until('postgres', q{
	SELECT state = 'error' AND retries = 0 FROM calabi_push.sync_status WHERE name = 'huge'}),
	'not retried: the sync stays stopped');

# the fix: the sync again with a batch_bytes its records fit in
$node->safe_psql('postgres', q{
	SELECT calabi_push.drop_sync('huge');
	SELECT calabi_push.create_sync('huge', 'recv', ARRAY['big']::regclass[],
	  options => '{"batch_bytes": "1MB", "chunk_rows": 2, "batch_rows": 2}');
	SELECT calabi_push.start_sync('huge');
});
ok(wait_for_state($node, 'huge', 'idle', 'error'), 'raised batch_bytes: the run completes');
is(sync_status($node, 'huge', q{state || coalesce(last_error, '')}), 'idle', 'no error');
assert_dest_equals_source($node, 'public', 'big', 'the large row arrives');

# full refresh, keyless (read through a cursor), bytea doubling in hex
$node->safe_psql('postgres', q{
	SELECT calabi_push.create_sync('huge_keyless', 'recv', ARRAY['bigless']::regclass[],
	  destination_sync_mode => 'append', options => '{"batch_bytes": "64kB"}');
	SELECT calabi_push.start_sync('huge_keyless');
});
ok(wait_for_state($node, 'huge_keyless', 'error', 'idle'), 'keyless: the run stops');
like(sync_status($node, 'huge_keyless', q{state || ': ' || coalesce(last_error, '')}),
	qr/^error: a row of "public"\."bigless" is too large to send: its record would exceed batch_bytes \(65536 bytes\); its values take 4\d{4} bytes/,
	'keyless: "a row", the table and the size');
is_deeply(record_ids('huge_keyless', 'bigless'), [1], 'keyless: the row before it was delivered');

# CDC backfill: the chunk ends before the row, the next one stops on it
$node->safe_psql('postgres', q{
	SELECT calabi_push.create_sync('huge_cdc', 'recv', ARRAY['bigcdc']::regclass[],
	  method => 'cdc', options => '{"batch_bytes": "64kB"}');
	SELECT calabi_push.start_sync('huge_cdc');
});
ok(wait_for_state($node, 'huge_cdc', 'error'), 'cdc backfill: stops in error');
like(sync_status($node, 'huge_cdc', 'last_error'),
	qr/^row \(id\)=\(3\) of "public"\."bigcdc" is too large to send: its record would exceed batch_bytes \(65536 bytes\)/,
	'cdc backfill: the table, the key and the limit');
is_deeply(record_ids('huge_cdc', 'bigcdc'), [ 1, 2 ], 'cdc backfill: the rows before it were delivered');
$node->safe_psql('postgres', q{
	SELECT calabi_push.drop_sync('huge_cdc');
	SELECT calabi_push.create_sync('huge_cdc', 'recv', ARRAY['bigcdc']::regclass[],
	  method => 'cdc', options => '{"batch_bytes": "1MB"}');
	SELECT calabi_push.start_sync('huge_cdc');
});
ok($node->poll_query_until('postgres', q{
	SELECT phase = 'done' FROM calabi_push.stream_status WHERE sync = 'huge_cdc'}),
	'cdc backfill with raised batch_bytes: done');
my $lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok($node->poll_query_until('postgres', qq{
	SELECT lsn_acknowledged >= '$lsn' OR state = 'error'
	  FROM calabi_push.sync_status WHERE name = 'huge_cdc'}), 'cdc: caught up');
is(sync_status($node, 'huge_cdc', q{state || coalesce(last_error, '')}), 'running', 'cdc: no error');
assert_dest_equals_source($node, 'public', 'bigcdc', 'cdc: the large row arrives');

$recv->stop;
$node->stop;
done_testing();
