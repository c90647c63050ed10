# calabi_push.cdc_send_interval: a CDC sync that has caught up sends at most
# once per interval, so that a steady stream of small transactions shares
# requests; the first commit after a quiet spell goes at once; 0 sends each
# decoding round at once.  Counted in requests the receiver logged, bounded
# by the time the commits took (not by a timing guess).
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'send_interval', receiver => { log_bodies => 1 },
	conf => "autovacuum = off\ncalabi_push.cdc_send_interval = '300ms'");
allow_output_plugin($node);

$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[], method => 'cdc');
	SELECT calabi_push.start_sync('s');
});
ok(cdc_caught_up($node, 's'), 'started, caught up');

sub arrived
{
	my ($id) = @_;
	return scalar grep { ($_->{type} // '') eq 'RECORD' && $_->{record}{data}{id} == $id }
	  @{ sent_messages($recv, 's') };
}

# $n one-row transactions, one every 20 ms, committed from one session;
# returns the seconds they took and the requests that carried them.
sub trickle
{
	my ($first, $n) = @_;
	my $last = $first + $n - 1;
	my $before = scalar @{ ingest_requests($recv, 's') };
	my $t0 = time();
	$node->safe_psql('postgres', qq{
		DO \$\$
		BEGIN
		  FOR i IN $first .. $last LOOP
		    INSERT INTO t VALUES (i, 'trickle');
		    COMMIT;
		    PERFORM pg_sleep(0.02);
		  END LOOP;
		END \$\$});
	my $took = time() - $t0;
	ok(wait_until(sub { arrived($last) }), "rows $first..$last arrived");
	my @reqs = @{ ingest_requests($recv, 's') };
	my %carried;
	for my $req (@reqs[ $before .. $#reqs ])
	{
		next unless ($req->{status} // 0) == 200 && defined $req->{body};
		for my $line (split /\n/, $req->{body})
		{
			my $m = JSON::PP::decode_json($line);
			$carried{$req} = 1
			  if ($m->{type} // '') eq 'RECORD' && $m->{record}{data}{id} >= $first
			  && $m->{record}{data}{id} <= $last;
		}
	}
	return ($took, scalar keys %carried);
}

# quiet first: the first commit after it goes at once, not 300 ms later
sleep 1;
my $t0 = time();
$node->safe_psql('postgres', q{INSERT INTO t VALUES (0, 'alone')});
ok(wait_until(sub { arrived(0) }, 60), 'a lone commit arrives');
my $alone = time() - $t0;
cmp_ok($alone, '<', 0.3 + 5, "a lone commit after a quiet spell is sent at once ($alone s)");

sleep 1;
my ($took, $requests) = trickle(1, 40);
my $bound = int($took / 0.3) + 2;
cmp_ok($requests, '<=', $bound,
	"40 commits over $took s went in $requests requests, at most one per 300 ms (+2)");
assert_dest_equals_source($node, 'public', 't', 'every change, with the interval');

# off: each round goes at once, so 20 ms apart they no longer share requests
$node->safe_psql('postgres', q{ALTER SYSTEM SET calabi_push.cdc_send_interval = 0});
$node->reload;
sleep 2;
($took, $requests) = trickle(101, 40);
cmp_ok($requests, '>=', 20,
	"with the interval off, 40 commits 20 ms apart went in $requests requests (at least 20)");
assert_dest_equals_source($node, 'public', 't', 'every change, without the interval');

# batches_sent counts every batch accepted, although their checkpoints
# are committed together (several batches a commit)
ok(cdc_caught_up($node, 's'), 'caught up');
my $accepted = grep { ($_->{status} // 0) == 200 } @{ ingest_requests($recv, 's') };
is($node->safe_psql('postgres', q{SELECT batches_sent FROM calabi_push.sync_status WHERE name = 's'}),
	$accepted, "batches_sent counts each of the $accepted batches accepted");

done_testing();
