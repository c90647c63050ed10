# A database probe has slots of its own in shared memory: it runs even when
# every one of calabi_push.max_syncs slots is taken by a running sync.  The
# probe after drop_sync and the one after DROP EXTENSION drop the
# replication slots of the syncs that went; were the probe to need a sync's
# slot, those replication slots would stay (and keep WAL) until the next
# server start.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'probe_slots', conf => "calabi_push.max_syncs = 2\n");
allow_output_plugin($node);

sub sql { $node->safe_psql('postgres', shift) }

# how long a probe may take to drop a slot: well under the framework's
# timeout, so that the old behaviour fails in reasonable time
my $probe_timeout = 30;

sub slot_gone
{
	my ($slot) = @_;
	return wait_until(sub {
		sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'") eq '0'
	}, $probe_timeout);
}

for my $name (qw(a b c))
{
	sql(qq{
		CREATE TABLE t_$name (id int PRIMARY KEY);
		INSERT INTO t_$name SELECT generate_series(1, 10);
		SELECT calabi_push.create_sync('$name', 'recv', ARRAY['t_$name']::regclass[], method => 'cdc');
	});
}

sub start_cdc_sync
{
	my ($name) = @_;
	sql(qq{SELECT calabi_push.start_sync('$name')});
	ok(cdc_caught_up($node, $name), "sync $name streams");
	return sync_status($node, $name, 'slot_name');
}

# every sync slot taken by a running worker
my $slot_a = start_cdc_sync('a');
my $slot_b = start_cdc_sync('b');
like(sql_error($node, 'postgres', q{SELECT calabi_push.start_sync('c')})->{message},
	qr/too many syncs are running/, 'all of max_syncs (2) are taken');

# drop_sync: the probe that drops the dropped sync's slot still runs
sql(q{SELECT calabi_push.drop_sync('a')});
ok(slot_gone($slot_a), 'drop_sync with every sync slot taken: the probe drops its replication slot');
is(sync_status($node, 'b', 'state'), 'running', 'the other sync runs on');

# DROP EXTENSION, with every sync slot taken again
my $slot_c = start_cdc_sync('c');
sql(q{DROP EXTENSION calabi_push});
ok(slot_gone($slot_b) && slot_gone($slot_c),
	'DROP EXTENSION with every sync slot taken: the probe drops every replication slot');

$recv->stop;
$node->stop;
done_testing();
