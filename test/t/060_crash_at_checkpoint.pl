# A crash at each step of a CDC acknowledgement, put there by the test-only
# setting calabi_push.test_stop_at (the worker SIGKILLs itself at the named
# point; with restart_after_crash = off the whole server goes down, as in a
# power loss: the slot's confirmed position not yet saved is lost):
#
#   before_checkpoint  the endpoint's 2xx arrived, nothing committed: that
#                      batch is sent again, nothing else, nothing lost;
#   after_checkpoint   the checkpoint committed, the slot not yet confirmed
#                      (the slot on disk is behind the checkpoint): nothing
#                      acknowledged is sent again, nothing lost;
#   after_confirm      both done: nothing sent again, nothing lost.
#
# The reverse order (the slot confirmed before the checkpoint commits) never
# happens: at every point the slot on disk is at or behind the checkpoint
# (a slot ahead of it is refused at start, TAP 041).  Only a superuser may
# set the setting, and a misspelt point is an error.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP ();
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'crashpt',
	conf => "restart_after_crash = off\ninclude_if_exists = 'test_stop_at.conf'",
	receiver => { log_bodies => 1 });
allow_output_plugin($node);
my $stop_conf = $node->data_dir . '/test_stop_at.conf';

# --- the setting itself ---
$node->safe_psql('postgres', q{
	CREATE ROLE mallory LOGIN;
	GRANT USAGE ON SCHEMA calabi_push TO mallory;
});
my $e = sql_error($node, 'postgres', q{SET ROLE mallory; SET calabi_push.test_stop_at = 'after_confirm'});
is($e->{sqlstate}, '42501', 'a non-superuser may not set calabi_push.test_stop_at');
$e = sql_error($node, 'postgres', q{SET calabi_push.test_stop_at = 'after_checkpiont'});
is($e->{sqlstate}, '22023', 'a misspelt point is an error');
like($e->{hint} // '', qr/before_checkpoint, after_checkpoint, after_confirm/, '... listing the points');
is($node->safe_psql('postgres', q{SELECT current_setting('calabi_push.test_stop_at') = ''}),
	't', 'the setting exists, empty by default');
unlike($node->safe_psql('postgres', 'SHOW ALL'), qr/test_stop_at/, '... and is hidden from SHOW ALL');

$node->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
	INSERT INTO t SELECT g, md5(g::text), 0 FROM generate_series(1, 500) g;
	CREATE PROCEDURE churn(first int, last int) LANGUAGE plpgsql AS $$
	BEGIN
	  FOR i IN first .. last LOOP
	    INSERT INTO t VALUES (100000 + i, 'new ' || i);
	    UPDATE t SET n = n + 1, v = 'upd ' || i WHERE id = 1 + (i * 7) % 500;
	    DELETE FROM t WHERE id = 1 + (i * 13) % 500;
	    COMMIT;
	  END LOOP;
	END $$;
	SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[], method => 'cdc',
	  options => '{"batch_rows": 100, "chunk_rows": 100, "max_backoff": "1 second"}');
	SELECT calabi_push.start_sync('s');
});

sub caught_up { return cdc_caught_up($node, 's') }

sub lsn_num
{
	my ($hi, $lo) = split m{/}, shift;
	return hex($hi) * 2**32 + hex($lo);
}

# The row versions (key|position|kind) of the records the receiver accepted
# (2xx) from the sync in the requests logged from the $since-th on (and
# before the $until-th, when given).
sub accepted_records
{
	my ($since, $until) = @_;
	my @reqs = @{ $recv->requests };
	$until //= scalar(@reqs);
	my %seen;
	for my $req (@reqs[ $since .. $until - 1 ])
	{
		next unless ($req->{path} // '') eq '/ingest'
		  && ($req->{headers}{'Calabi-Sync'} // '') eq 's'
		  && ($req->{status} // 0) == 200 && defined $req->{body};
		for my $line (split /\n/, $req->{body})
		{
			my $m = JSON::PP::decode_json($line);
			next unless ($m->{type} // '') eq 'RECORD';
			my $d = $m->{record}{data};
			$seen{ join('|', $d->{id}, $d->{_calabi_cdc_lsn}, defined $d->{_calabi_cdc_deleted_at} ? 'd' : 'u') }++;
		}
	}
	return \%seen;
}

# The slot's confirmed_flush as saved on disk (the server is down):
# PostgreSQL 15's ReplicationSlotOnDisk, 16 bytes of header, then the slot's
# name (64), database, persistency, xmin, catalog_xmin (4 each),
# restart_lsn, invalidated_at, confirmed_flush (8 each).
sub slot_confirmed_on_disk
{
	my ($slot) = @_;
	my $raw = slurp_file($node->data_dir . "/pg_replslot/$slot/state");
	my $name = unpack('Z64', substr($raw, 16, 64));
	die "unexpected slot state file: $name" unless $name eq $slot;
	return unpack('Q<', substr($raw, 112, 8));
}

ok(caught_up(), 'backfilled and caught up');
assert_dest_equals_source($node, 'public', 't', 'before any crash');
my $slot = sync_status($node, 's', 'slot_name');

my $round = 0;
for my $point (qw(before_checkpoint after_checkpoint after_confirm))
{
	$round++;
	# changes committed while the sync is stopped: its next worker finds
	# hundreds of them waiting, so batches follow each other
	$node->safe_psql('postgres', q{SELECT calabi_push.stop_sync('s')});
	ok($node->poll_query_until('postgres',
		"SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = '$slot'"),
		"$point: the sync is stopped");
	my $first = $round * 1000 + 1;
	$node->safe_psql('postgres', "CALL churn($first, $first + 299)");
	my $before = lsn_num($node->safe_psql('postgres', q{SELECT cdc_lsn FROM calabi_push.sync WHERE name = 's'}));

	# the worker started now reads the setting
	append_to_file($stop_conf, "calabi_push.test_stop_at = '$point'\n");
	$node->reload;
	$node->poll_query_until('postgres', "SELECT current_setting('calabi_push.test_stop_at') = '$point'");
	my $since = scalar(@{ $recv->requests });
	$node->psql('postgres', q{SELECT calabi_push.start_sync('s')});

	ok(wait_until(sub { !-e $node->data_dir . '/postmaster.pid' }),
		"$point: the worker crashed there and the server went down");
	$node->_update_pid(0);
	like(slurp_file($node->logfile), qr/calabi_push test point "$point" reached/,
		"$point: the log says where and why");
	my $until = scalar(@{ $recv->requests });
	my $on_disk = slot_confirmed_on_disk($slot);

	# restart, the endpoint refusing for now: the checkpoint stays what
	# the crash left
	unlink $stop_conf or die "$stop_conf: $!";
	$recv->fault({ kind => 'status', status => 503, count => -1 });
	$node->start;
	my $checkpoint = lsn_num($node->safe_psql('postgres', q{SELECT cdc_lsn FROM calabi_push.sync WHERE name = 's'}));
	ok($on_disk <= $checkpoint, "$point: the slot on disk is not ahead of the checkpoint");
	if ($point eq 'before_checkpoint')
	{
		is($checkpoint, $before, "$point: the checkpoint did not move");
	}
	else
	{
		ok($checkpoint > $before, "$point: the checkpoint moved");
	}
	ok($on_disk < $checkpoint, "$point: the slot on disk is behind the checkpoint")
	  if $point eq 'after_checkpoint';

	my $pre = accepted_records($since, $until);
	ok(scalar(keys %$pre) > 0, "$point: a batch was accepted before the crash");
	my @acked = grep { (split /\|/)[1] <= $checkpoint } keys %$pre;
	my @unacked = grep { (split /\|/)[1] > $checkpoint } keys %$pre;

	$recv->clear_faults;
	ok(caught_up(), "$point: caught up after the restart");
	assert_dest_equals_source($node, 'public', 't', "$point: nothing lost");
	my $post = accepted_records($until);
	my @again = grep { $post->{$_} } keys %$pre;
	my @acked_again = grep { $post->{$_} } @acked;
	is(scalar(@acked_again), 0, "$point: no record the checkpoint holds was sent again");
	is(scalar(@again), scalar(@unacked),
		"$point: what was accepted beyond the checkpoint was sent again (" . scalar(@again) . ' records), nothing else');
	if ($point eq 'before_checkpoint')
	{
		ok(scalar(@unacked) > 0, "$point: the batch accepted last is not in the checkpoint");
	}
	else
	{
		ok(scalar(@acked) > 0, "$point: the batch accepted last is in the checkpoint");
	}
}

$recv->stop;
$node->stop;
done_testing();
