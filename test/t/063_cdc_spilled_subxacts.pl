# A transaction the reorder buffer spills to disk (logical_decoding_work_mem
# = 64kB), with subtransactions rolled back inside it (ROLLBACK TO
# SAVEPOINT, and PL/pgSQL exception blocks): what its subtransactions that
# committed did arrives, once, in order; nothing a rolled-back one did is
# ever sent.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP ();
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'spillsub', conf => 'logical_decoding_work_mem = 64kB',
	receiver => { log_bodies => 1 });
allow_output_plugin($node);

$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'old' FROM generate_series(1, 1000) g;
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[], method => 'cdc',
	  options => '{"batch_rows": 1000}');
	SELECT calabi_push.start_sync('s');
});

sub caught_up { return cdc_caught_up($node, 's') }

ok(caught_up(), 'backfilled');
my $slot = sync_status($node, 's', 'slot_name');
my $nreq = scalar(@{ $recv->requests });

$node->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO t SELECT g, 'kept ' || g FROM generate_series(10001, 15000) g;
	SAVEPOINT a;
	INSERT INTO t SELECT g, 'rolled back ' || g FROM generate_series(20001, 25000) g;
	UPDATE t SET v = 'rolled back' WHERE id <= 500;
	DELETE FROM t WHERE id > 900 AND id <= 1000;
	ROLLBACK TO SAVEPOINT a;
	SAVEPOINT b;
	INSERT INTO t SELECT g, 'released ' || g FROM generate_series(30001, 33000) g;
	SAVEPOINT c;
	UPDATE t SET v = 'rolled back nested' WHERE id BETWEEN 30001 AND 31000;
	ROLLBACK TO SAVEPOINT c;
	RELEASE SAVEPOINT b;
	UPDATE t SET v = 'updated' WHERE id <= 100;
	DO $$
	BEGIN
	  FOR i IN 1 .. 200 LOOP
	    BEGIN
	      INSERT INTO t VALUES (40000 + i, 'exception block ' || i);
	      IF i % 2 = 0 THEN
	        RAISE EXCEPTION 'roll this one back';
	      END IF;
	    EXCEPTION WHEN raise_exception THEN
	      NULL;
	    END;
	  END LOOP;
	END $$;
	DELETE FROM t WHERE id BETWEEN 801 AND 850;
	COMMIT;
});
ok(caught_up(), 'the transaction is delivered');
ok($node->safe_psql('postgres', qq{SELECT spill_txns > 0 FROM pg_stat_replication_slots WHERE slot_name = '$slot'}) eq 't',
	'the reorder buffer spilled it to disk');

my (@records, %count);
for my $req (@{ ingest_requests($recv, 's', $nreq) })
{
	next unless ($req->{status} // 0) == 200;
	for my $line (split /\n/, $req->{body})
	{
		my $m = JSON::PP::decode_json($line);
		next unless ($m->{type} // '') eq 'RECORD';
		push @records, $m->{record}{data};
	}
}
my @rolled_back = grep { ($_->{v} // '') =~ /rolled back/ || ($_->{id} >= 20001 && $_->{id} <= 25000) } @records;
is(scalar(@rolled_back), 0, 'nothing a rolled-back subtransaction did was sent');
my @odd = grep { $_->{id} > 40000 && $_->{id} % 2 == 0 } @records;
is(scalar(@odd), 0, 'nothing a rolled-back exception block inserted was sent');
my %versions;
$versions{ join('|', $_->{id}, $_->{v} // 'deleted') }++ for @records;
is(scalar(grep { $_ > 1 } values %versions), 0, 'no change sent twice');
is(scalar(@records), 5000 + 3000 + 100 + 100 + 50, 'exactly the committed changes: 8,100 inserts, 100 updates, 50 deletes');
my @lsns = do { my %l; grep { !$l{$_}++ } map { $_->{_calabi_cdc_lsn} } @records };
is(scalar(@lsns), 1, 'all at the commit position of the transaction');
my @ids = map { $_->{id} } grep { ($_->{v} // '') =~ /^kept / } @records;
is_deeply(\@ids, [ 10001 .. 15000 ], 'in the order they were made');
assert_dest_equals_source($node, 'public', 't', 'after the transaction');

$recv->stop;
$node->stop;
done_testing();
