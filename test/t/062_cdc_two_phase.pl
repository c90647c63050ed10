# Two-phase commit through a CDC sync: changes of a PREPARE TRANSACTION are
# not sent while it is prepared, even after an immediate stop and restart
# during which the sync's position moved past the PREPARE; COMMIT PREPARED
# sends them (once, at the commit's position), ROLLBACK PREPARED never does.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'twophase', conf => 'max_prepared_transactions = 5',
	receiver => { log_bodies => 1 });
allow_output_plugin($node);

$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'old ' || g FROM generate_series(1, 100) g;
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[], method => 'cdc');
	SELECT calabi_push.start_sync('s');
});

sub caught_up { return cdc_caught_up($node, 's') }

# The values of v sent for key $id, in order.
sub sent_values
{
	my ($id) = @_;
	return [ map { $_->{record}{data}{v} // 'deleted' }
		  grep { ($_->{type} // '') eq 'RECORD' && $_->{record}{data}{id} == $id }
		  @{ sent_messages($recv, 's') } ];
}

ok(caught_up(), 'backfilled');

my $prepare_end = $node->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO t VALUES (1001, 'to commit');
	UPDATE t SET v = 'updated, to commit' WHERE id = 1;
	DELETE FROM t WHERE id = 2;
	PREPARE TRANSACTION 'commit_me';
	BEGIN;
	INSERT INTO t VALUES (1002, 'to roll back');
	UPDATE t SET v = 'updated, to roll back' WHERE id = 3;
	DELETE FROM t WHERE id = 4;
	PREPARE TRANSACTION 'roll_me_back';
	INSERT INTO t VALUES (1003, 'after the prepares');
	SELECT pg_current_wal_lsn();
});
ok(caught_up(), 'the sync moved past both PREPAREs');
my $cdc_lsn = $node->safe_psql('postgres', q{SELECT cdc_lsn FROM calabi_push.sync WHERE name = 's'});
ok($node->safe_psql('postgres', qq{SELECT '$cdc_lsn'::pg_lsn >= '$prepare_end'::pg_lsn}) eq 't',
	'its checkpoint is past them');
is_deeply(sent_values(1003), [ 'after the prepares' ], 'a commit after the PREPAREs arrives');
is_deeply([ map { @{ sent_values($_) } } 1001, 1002 ], [], 'nothing of the prepared transactions arrives');
is_deeply(sent_values(1), [ 'old 1' ], '... nor their updates');

$node->stop('immediate');
$node->start;
is($node->safe_psql('postgres', q{SELECT string_agg(gid, ',' ORDER BY gid) FROM pg_prepared_xacts}),
	'commit_me,roll_me_back', 'both survive the immediate stop, prepared');
ok(caught_up(), 'the sync runs again');
is_deeply([ map { @{ sent_values($_) } } 1001, 1002 ], [], 'still nothing of them after the restart');
is_deeply([ map { @{ sent_values($_) } } 1, 2, 3, 4 ], [ 'old 1', 'old 2', 'old 3', 'old 4' ],
	'... only the backfill of the rows they change');

$node->safe_psql('postgres', q{COMMIT PREPARED 'commit_me'});
ok(caught_up(), 'COMMIT PREPARED acknowledged');
is_deeply(sent_values(1001), [ 'to commit' ], 'COMMIT PREPARED: the insert arrives, once');
is_deeply(sent_values(1), [ 'old 1', 'updated, to commit' ], '... the update');
is_deeply(sent_values(2), [ 'old 2', 'deleted' ], '... the delete');

$node->safe_psql('postgres', q{ROLLBACK PREPARED 'roll_me_back'; INSERT INTO t VALUES (1004, 'after the rollback');});
ok(caught_up(), 'ROLLBACK PREPARED decoded past');
is_deeply(sent_values(1004), [ 'after the rollback' ], 'a later commit arrives');
is_deeply(sent_values(1002), [], 'ROLLBACK PREPARED: the insert never arrives');
is_deeply(sent_values(3), [ 'old 3' ], '... nor the update');
is_deeply(sent_values(4), [ 'old 4' ], '... nor the delete');
assert_dest_equals_source($node, 'public', 't', 'after both');

$recv->stop;
$node->stop;
done_testing();
