# A cursor sync under a workload: rounds of transactions (deterministic,
# from a fixed seed) that insert rows and update others, some moving the
# cursor k to the transaction's tick (like updated_at = now(): every row a
# transaction writes shares one value), some changing v only, some twice
# in a round; a run of each sync after each round.
#
# The table, stored by heap, read as xmin reads it: each run sends
# exactly the rows written in its round (those whose cursor did not move
# too), and the receiver's append_dedup destination equals the source.
#
# The view over it, read by its cursor, in append mode: each run sends
# exactly the rows whose cursor is at least the previous run's largest
# value (the ties at it again), each once, in cursor order; so every
# version of a row whose cursor moved (or that is new) since the previous
# run, as the run saw it, lies in the destination.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;
use CalabiXminTest;

my ($node, $recv) = sync_setup(name => 'cursorwork', receiver => { log_bodies => 1 });

# 200 rows; the first 20 without a cursor
$node->safe_psql('postgres', q{
	CREATE TABLE wt (id int PRIMARY KEY, k int, v text);
	INSERT INTO wt SELECT g, CASE WHEN g > 20 THEN g / 10 END, 'v' || g FROM generate_series(1, 200) g;
	CREATE VIEW wv AS SELECT id, k, v FROM wt;
	SELECT calabi_push.create_sync('tab', 'recv', ARRAY['wt']::regclass[], method => 'cursor',
	  options => '{"cursor": "k", "chunk_rows": 10, "batch_rows": 25}');
	SELECT calabi_push.create_sync('vw', 'recv', ARRAY['wv']::regclass[], method => 'cursor',
	  options => '{"cursor": "k", "chunk_rows": 10, "batch_rows": 25}');
});
is($node->safe_psql('postgres', q{
	SELECT string_agg(destination_sync_mode, ' ' ORDER BY name) FROM calabi_push.sync}),
	'append_dedup append', 'the table syncs append_dedup, the view append');

# deterministic pseudo-random numbers (a linear congruential generator)
my $seed = 20261205;
sub rnd
{
	my ($n) = @_;
	$seed = ($seed * 1103515245 + 12345) % 2147483648;
	return int(($seed / 2147483648) * $n);
}

# The source now: id => "k|v" (k empty when NULL).
sub source
{
	return { map { my ($id, $k, $v) = split /\|/, $_, 3; ($id => "$k|$v") }
		  split /\n/, $node->safe_psql('postgres', 'SELECT id, k, v FROM wt') };
}

# A row of the receiver's data as "id|k|v".
sub version { my ($d) = @_; return join('|', $d->{id}, $d->{k} // '', $d->{v}) }

my $tick = 20;       # cursor values so far: 2 .. 20
my $next_id = 201;
my %moved;           # "id|k|v" of each version whose cursor moved, as a run saw it

# run 1: both read whole
my $since = method_run($node, $recv, 'tab');
is_deeply(run_records($recv, 'tab', $since), [ 1 .. 200 ], 'table, run 1: every row once');
assert_dest_equals_source($node, 'public', 'wt', 'table, run 1');
$since = method_run($node, $recv, 'vw');
my @got = map { version($_) } @{ run_data($recv, 'vw', $since) };
my $src = source();
is_deeply([ sort @got ], [ sort map { "$_|$src->{$_}" } keys %$src ], 'view, run 1: every row once');
$moved{"$_|$src->{$_}"} = 1 for grep { $src->{$_} !~ /^\|/ } keys %$src;

for my $round (1 .. 8)
{
	my $before = source();
	my $largest = xmin_checkpoint($node, 'vw', 'since');
	my %written;
	my $sql = '';
	for my $txn (1 .. 4)
	{
		$tick++;
		$sql .= "BEGIN;\n";
		for (1 .. 1 + rnd(4))
		{
			$sql .= "INSERT INTO wt VALUES ($next_id, $tick, 'new $round.$txn');\n";
			$written{ $next_id++ } = 1;
		}
		for (1 .. 3 + rnd(8))
		{
			my $id = 1 + rnd($next_id - 1);
			if (rnd(10) < 6)
			{
				$sql .= "UPDATE wt SET k = $tick, v = 'moved $round.$txn' WHERE id = $id;\n";
			}
			else
			{
				$sql .= "UPDATE wt SET v = v || ' +$round.$txn' WHERE id = $id;\n";
			}
			$written{$id} = 1;
		}
		$sql .= "COMMIT;\n";
	}
	$node->safe_psql('postgres', $sql);
	my $after = source();

	# the table: exactly the rows written, and the destination equals the source
	$since = method_run($node, $recv, 'tab');
	is_deeply(run_records($recv, 'tab', $since), [ sort { $a <=> $b } keys %written ],
		"table, round $round: the run sent exactly the rows written");
	assert_dest_equals_source($node, 'public', 'wt', "table, round $round");

	# the view: exactly the rows at or past the previous largest value
	$since = method_run($node, $recv, 'vw');
	my $data = run_data($recv, 'vw', $since);
	my @want = map { "$_|$after->{$_}" }
	  grep { my ($k) = split /\|/, $after->{$_}; $k ne '' && $k >= $largest } keys %$after;
	is_deeply([ sort map { version($_) } @$data ], [ sort @want ],
		"view, round $round: the rows at or past $largest, each once");
	my @k = map { $_->{k} } @$data;
	is_deeply(\@k, [ sort { $a <=> $b } @k ], "view, round $round: in cursor order");
	is(xmin_checkpoint($node, 'vw', 'since'), $tick, "view, round $round: the largest value is $tick");
	for my $id (keys %$after)
	{
		my ($k) = split /\|/, $after->{$id};
		my ($was) = split /\|/, $before->{$id} // 'new|';
		$moved{"$id|$after->{$id}"} = 1 if $k ne '' && $k ne $was;
	}
}

# every version whose cursor moved, as the run after its round saw it, is
# in the view's destination
my %dest = map { $_ => 1 } split /\n/, $node->safe_psql('calabi_dest', q{
	SELECT id || '|' || coalesce(k::text, '') || '|' || v FROM public.wv});
my @lost = grep { !$dest{$_} } sort keys %moved;
is(scalar @lost, 0, scalar(keys %moved) . ' versions whose cursor moved, all in the view\'s destination')
  or diag("lost: @lost");
cmp_ok(scalar(keys %moved), '>', 180 + 8 * 4, 'the workload moved cursors in every round');
is($node->safe_psql('calabi_dest', 'SELECT count(*) FROM public.wv'),
	scalar(@{ run_data($recv, 'vw', 0) }), 'the view\'s destination holds each record received');

$recv->stop;
$node->stop;
done_testing();
