# The endpoint down while CDC load runs (every request's connection dropped
# unanswered; the sync's max_backoff at its floor, 1 s, stands in for
# minutes): the slot's confirmed position and the checkpoint stay put, the
# retries follow the capped backoff (each delay within the cap and its
# jitter, so no hot loop), sync_status shows the lag growing, and once the
# endpoint is back every change arrives, none twice.
use strict;
use warnings;

use JSON::PP ();
use Time::HiRes qw(time);
use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'down', receiver => { log_bodies => 1 });
allow_output_plugin($node);

$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g;
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[], method => 'cdc',
	  options => '{"batch_rows": 100, "max_backoff": "1s"}');
	SELECT calabi_push.start_sync('s');
});

sub caught_up { return cdc_caught_up($node, 's') }

ok(caught_up(), 'backfilled');
my $slot = sync_status($node, 's', 'slot_name');
my $confirmed = $node->safe_psql('postgres', "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'");
my $checkpoint = $node->safe_psql('postgres', q{SELECT cdc_lsn FROM calabi_push.sync WHERE name = 's'});
my $log_offset = -s $node->logfile;

# down
$recv->fault({ kind => 'drop', count => -1 });
my $down_at = time();
$node->safe_psql('postgres', q{INSERT INTO t VALUES (1001, 'while down 1')});
ok($node->poll_query_until('postgres', q{
	SELECT state = 'retrying' AND retries >= 2 FROM calabi_push.sync_status WHERE name = 's'}),
	'down: the sync retries');
my $lag1 = sync_status($node, 's', 'lag_bytes');
my $lag_time1 = sync_status($node, 's', 'extract(epoch FROM lag_time)');
for my $i (2 .. 5)
{
	$node->safe_psql('postgres', qq{INSERT INTO t SELECT 1000 * $i + g, 'while down $i' FROM generate_series(1, 50) g});
	my $retries = sync_status($node, 's', 'retries');
	ok($node->poll_query_until('postgres', qq{
		SELECT retries >= $retries + 1 FROM calabi_push.sync_status WHERE name = 's'}),
		"down: still retrying ($i)");
}
my $lag2 = sync_status($node, 's', 'lag_bytes');
ok($lag2 > $lag1, "down: sync_status lag_bytes grows ($lag1 -> $lag2)");
my $lag_time2 = sync_status($node, 's', 'extract(epoch FROM lag_time)');
ok($lag_time1 > 0 && $lag_time2 > $lag_time1, "down: sync_status lag_time grows ($lag_time1 -> $lag_time2 s)");
is($node->safe_psql('postgres', "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'"),
	$confirmed, 'down: the slot\'s confirmed position stays put');
is($node->safe_psql('postgres', q{SELECT cdc_lsn FROM calabi_push.sync WHERE name = 's'}),
	$checkpoint, 'down: so does the checkpoint');
my $down_for = time() - $down_at;

# the retries: every delay within the 1 s cap with its jitter (75-125 %)
my $log = substr(slurp_file($node->logfile), $log_offset);
my @delays = $log =~ /LOG:  batch \d+ not delivered, retrying in (\d+) ms[^\n]*\n(?:(?:[^\n]*(?:DETAIL|HINT):  |\t)[^\n]*\n)*[^\n]*CONTEXT:  (?:[^\n]*\n\t)*calabi_push sync "s"\n/g;
ok(scalar(@delays) >= 5, scalar(@delays) . ' retries logged');
is(scalar(grep { $_ < 750 || $_ > 1250 } @delays), 0, 'every retry delay is within the capped backoff (750..1250 ms)');
# no hot loop: the attempts the endpoint saw are bounded by the smallest delay
my $attempts = scalar(grep { ($_->{status} // 0) != 200 } @{ ingest_requests($recv, 's') });
ok($attempts <= $down_for / 0.75 + 2, "no hot loop: $attempts attempts in " . sprintf('%.1f', $down_for) . ' s');

# back
$recv->clear_faults;
ok(caught_up(), 'back: caught up');
assert_dest_equals_source($node, 'public', 't', 'back: everything arrived');
my %seen;
my $twice = 0;
for my $m (@{ sent_messages($recv, 's') })
{
	next unless ($m->{type} // '') eq 'RECORD';
	my $d = $m->{record}{data};
	$twice++ if $seen{ join('|', $d->{id}, $d->{_calabi_cdc_lsn}) }++;
}
is($twice, 0, 'back: no record arrived twice');
isnt($node->safe_psql('postgres', "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'"),
	$confirmed, 'back: the slot moves on');

$recv->stop;
$node->stop;
done_testing();
