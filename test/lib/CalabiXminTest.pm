# Helpers for the tests of the xmin method: runs started and awaited, and
# what a run sent.
package CalabiXminTest;

use strict;
use warnings;

use Exporter 'import';
use JSON::PP ();
use Test::More;
use CalabiSyncTest;

our @EXPORT = qw(xmin_run method_run xmin_checkpoint run_records);

# Start one run of sync $sync (run once per start_sync) and wait for it to
# complete: every stream done, the worker gone, the checkpoint moved.
# Returns the number of the receiver's requests before the run began.
sub xmin_run
{
	my ($node, $recv, $sync) = @_;
	my $before = scalar @{ $recv->requests };
	my $runs = $node->safe_psql('postgres', qq{
		SELECT coalesce(string_agg(checkpoint->>'since', ' ' ORDER BY ordinal), '')
		  FROM calabi_push.stream_status WHERE sync = '$sync'});
	$node->safe_psql('postgres', qq{SELECT calabi_push.start_sync('$sync')});
	ok($node->poll_query_until('postgres', qq{
		SELECT bool_and(st.phase = 'done') AND min(s.pid) IS NULL AND min(s.state) = 'idle'
		       AND coalesce(string_agg(st.checkpoint->>'since', ' ' ORDER BY st.ordinal), '') <> '$runs'
		  FROM calabi_push.stream_status st JOIN calabi_push.sync_status s ON s.name = st.sync
		 WHERE st.sync = '$sync'}), "$sync: a run completes");
	return $before;
}

# The same for any method that reads its streams anew at each run (xmin,
# cursor), waiting for the sync's completed_at to move instead: a run may
# leave a cursor stream's position where it was.
sub method_run
{
	my ($node, $recv, $sync) = @_;
	my $before = scalar @{ $recv->requests };
	my $completed = $node->safe_psql('postgres', qq{
		SELECT coalesce(completed_at::text, '') FROM calabi_push.sync_status WHERE name = '$sync'});
	$node->safe_psql('postgres', qq{SELECT calabi_push.start_sync('$sync')});
	ok($node->poll_query_until('postgres', qq{
		SELECT bool_and(st.phase = 'done') AND min(s.pid) IS NULL AND min(s.state) = 'idle'
		       AND min(s.completed_at::text) IS DISTINCT FROM nullif('$completed', '')
		  FROM calabi_push.stream_status st JOIN calabi_push.sync_status s ON s.name = st.sync
		 WHERE st.sync = '$sync'}), "$sync: a run completes");
	return $before;
}

# A stream's checkpoint member.
sub xmin_checkpoint
{
	my ($node, $sync, $member) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT checkpoint->>'$member' FROM calabi_push.stream_status WHERE sync = '$sync'});
}

# The ids (data member "id") of the RECORDs the receiver accepted from
# sync $sync since request number $since, sorted numerically.
sub run_records
{
	my ($recv, $sync, $since) = @_;
	my @ids;
	for my $req (@{ ingest_requests($recv, $sync, $since) })
	{
		next unless ($req->{status} // 0) == 200 && defined $req->{body};
		for my $line (split /\n/, $req->{body})
		{
			my $m = JSON::PP::decode_json($line);
			push @ids, $m->{record}{data}{id} if ($m->{type} // '') eq 'RECORD';
		}
	}
	return [ sort { $a <=> $b } @ids ];
}

1;
