# Helpers for the tests of the xmin method: runs started and awaited, and
# what a run sent.
package CalabiXminTest;

use strict;
use warnings;

use Exporter 'import';
use JSON::PP ();
use Test::More;
use CalabiSyncTest;

our @EXPORT = qw(xmin_run method_run xmin_checkpoint run_records run_data);

# Start one run of sync $sync (xmin or cursor: run once per start_sync) and
# wait for it to complete: every stream done, the worker gone, the sync's
# completed_at moved (a cursor stream's position may stay where it was).
# Returns the number of the receiver's requests before the run began.
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

sub xmin_run { return method_run(@_) }

# A stream's checkpoint member.
sub xmin_checkpoint
{
	my ($node, $sync, $member) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT checkpoint->>'$member' FROM calabi_push.stream_status WHERE sync = '$sync'});
}

# The data of the RECORDs the receiver accepted from sync $sync since
# request number $since, in the order it accepted them (repeats kept): an
# array reference of hashes.
sub run_data
{
	my ($recv, $sync, $since) = @_;
	my @rows;
	for my $req (@{ ingest_requests($recv, $sync, $since) })
	{
		next unless ($req->{status} // 0) == 200 && defined $req->{body};
		for my $line (split /\n/, $req->{body})
		{
			my $m = JSON::PP::decode_json($line);
			push @rows, $m->{record}{data} if ($m->{type} // '') eq 'RECORD';
		}
	}
	return \@rows;
}

# The ids (data member "id") of those RECORDs, sorted numerically.
sub run_records
{
	my ($recv, $sync, $since) = @_;
	return [ sort { $a <=> $b } map { $_->{id} } @{ run_data($recv, $sync, $since) } ];
}


1;
