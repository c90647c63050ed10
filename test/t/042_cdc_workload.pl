# CDC under a concurrent write workload: pgbench clients insert, update and
# delete across several tables with many types while the sync backfills and
# then streams; once the workload quiesces the destination (deduplicated)
# equals the source.  And the type matrix through CDC: every value of a
# change is byte for byte what the backfill sent for the same row.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'cdcload', receiver => { log_bodies => 1 });
allow_output_plugin($node);

$node->safe_psql('postgres', everything_sql('schema') . everything_sql('rows') . q{
	CREATE TABLE accounts (id int PRIMARY KEY, balance numeric NOT NULL, owner text, changed timestamptz);
	INSERT INTO accounts SELECT g, 1000, 'owner ' || g, now() FROM generate_series(1, 20000) g;
	CREATE TABLE ledger (id bigserial PRIMARY KEY, account int, amount numeric, at timestamptz,
	                     tags text[], meta jsonb);
	CREATE TABLE shared_keys (a int, b text, v float8, PRIMARY KEY (a, b));
	INSERT INTO shared_keys SELECT g % 100, 'k' || (g / 100), g FROM generate_series(1, 5000) g;
});

# --- the type matrix: a change carries the backfill's very bytes ---
# (REPLICA IDENTITY FULL: an update then carries its unchanged TOASTed
# values too, taken from the old row, so that every value can be compared)
$node->safe_psql('postgres', q{
	ALTER TABLE everything REPLICA IDENTITY FULL;
	SELECT calabi_push.create_sync('types', 'recv', ARRAY['everything']::regclass[], method => 'cdc');
	SELECT calabi_push.start_sync('types');
});
ok($node->poll_query_until('postgres', q{
	SELECT phase = 'done' FROM calabi_push.stream_status WHERE sync = 'types'}), 'types: backfilled');
my $lsn = $node->safe_psql('postgres', q{UPDATE everything SET id = id; SELECT pg_current_wal_lsn()});
ok($node->poll_query_until('postgres', qq{
	SELECT lsn_acknowledged >= '$lsn' FROM calabi_push.sync_status WHERE name = 'types'}),
	'types: every row changed and sent');
{
	# the raw text of each record's values, before the _calabi_cdc_* members
	my (%backfill, %change);
	for my $req (@{ ingest_requests($recv, 'types') })
	{
		for my $line (split /\n/, $req->{body} // '')
		{
			next unless $line =~ /^\{"type":"RECORD".*?"data":(\{"id":(\d+),.*),"_calabi_cdc_lsn":/;
			my ($values, $id) = ($1, $2);
			if ($line =~ /"unchanged":/) { next }
			if (!exists $backfill{$id}) { $backfill{$id} = $values } else { $change{$id} = $values }
		}
	}
	is(scalar(keys %change), 31, 'types: a change record for each of the 31 rows');
	is_deeply(\%change, { map { $_ => $backfill{$_} } keys %change },
		'types: the values of a change are byte-identical to the backfill\'s');
	my $same = grep { $change{$_} eq stream_row($_) } keys %change;
	is($same, 31, 'types: and to preview()');
}
$node->safe_psql('postgres', q{SELECT calabi_push.drop_sync('types')});

# preview()'s text of a row of everything, minus the closing brace
sub stream_row
{
	my ($id) = @_;
	my $row = $node->safe_psql('postgres', qq{
		SELECT p FROM calabi_push.preview('everything', NULL) p WHERE (p::jsonb->>'id')::int = $id});
	$row =~ s/\}$//;
	return $row;
}

# --- pgbench while the sync backfills, then streams ---
$node->safe_psql('postgres', q{
	SELECT calabi_push.create_sync('load', 'recv',
	  ARRAY['accounts', 'ledger', 'shared_keys', 'everything']::regclass[], method => 'cdc',
	  options => '{"batch_rows": 2000, "chunk_rows": 1000}');
	SELECT calabi_push.start_sync('load');
});

my $dir = PostgreSQL::Test::Utils::tempdir;
PostgreSQL::Test::Utils::append_to_file("$dir/transfer.sql", <<'SQL');
\set a random(1, 20000)
\set b random(1, 20000)
\set x random(1, 100)
BEGIN;
UPDATE accounts SET balance = balance - :x, changed = now() WHERE id = :a;
UPDATE accounts SET balance = balance + :x, changed = now() WHERE id = :b;
INSERT INTO ledger (account, amount, at, tags, meta)
  VALUES (:a, -:x, now(), ARRAY['t', :b::text], jsonb_build_object('to', :b));
COMMIT;
SQL
PostgreSQL::Test::Utils::append_to_file("$dir/churn.sql", <<'SQL');
\set a random(1, 20000)
\set k random(0, 99)
\set g random(1, 30)
DELETE FROM accounts WHERE id = :a;
INSERT INTO accounts VALUES (:a, 500, 'reborn', now()) ON CONFLICT (id) DO UPDATE SET owner = 'kept';
UPDATE shared_keys SET v = v + 1, b = b || '' WHERE a = :k AND b = 'k1';
DELETE FROM ledger WHERE id = (SELECT min(id) FROM ledger);
UPDATE everything SET i8 = i8 + 1, tx = tx || '!', jb = jb || '{"n": 1}' WHERE id = :g;
SQL
PostgreSQL::Test::Utils::append_to_file("$dir/rollback.sql", <<'SQL');
\set a random(1, 20000)
BEGIN;
UPDATE accounts SET owner = 'never' WHERE id = :a;
SAVEPOINT s;
DELETE FROM shared_keys WHERE a = 1;
ROLLBACK TO SAVEPOINT s;
ROLLBACK;
SQL

$node->command_ok(
	[ 'pgbench', '-n', '-c', '4', '-j', '2', '-T', '10', '--max-tries=100',
	  '-f', "$dir/transfer.sql\@5", '-f', "$dir/churn.sql\@3", '-f', "$dir/rollback.sql\@1",
	  '-h', $node->host, '-p', $node->port, 'postgres' ],
	'pgbench: 10 s of transfers, churn and rollbacks while the sync runs');

$lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok($node->poll_query_until('postgres', qq{
	SELECT lsn_acknowledged >= '$lsn' AND
	       (SELECT bool_and(phase = 'done') FROM calabi_push.stream_status WHERE sync = 'load')
	  FROM calabi_push.sync_status WHERE name = 'load'}),
	'quiesced: every change acknowledged');
is(sync_status($node, 'load', "state || coalesce(last_error, '')"), 'running', 'no error');
for my $table (qw(accounts ledger shared_keys everything))
{
	assert_dest_equals_source($node, 'public', $table, "after the workload: $table");
}
is($node->safe_psql('calabi_dest', q{SELECT count(*) FROM public.accounts WHERE owner = 'never'}), '0',
	'rolled-back changes never arrive');

$recv->stop;
$node->stop;
done_testing();
