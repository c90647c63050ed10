# Helpers for the TAP tests of syncs: a source node with calabi_push, the
# reference receiver landing into a destination database on the same node,
# and comparisons of source and destination.
package CalabiSyncTest;

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use File::Basename qw(dirname basename);
use Cwd qw(abs_path);
use POSIX qw(WNOHANG);
use CalabiPushTest;
use CalabiReceiver;
use JSON::PP ();

use Exporter 'import';
our @EXPORT = qw(sync_setup dest_node run_completes wait_for_state stream_rows_source stream_rows_dest
  assert_dest_equals_source sync_status wait_for_state_in sync_status_in
  stream_rows_source_in stream_rows_dest_in assert_dest_equals_source_in
  sql_error wait_until ingest_requests start_connect_proxy sent_messages
  grant_sync_management cdc_caught_up cdc_sync_setup cdc_backfilled
  start_slowed_read cdc_running_sync cdc_repeats cdc_version_of);

# A started node with calabi_push in database "postgres", a receiver (HTTPS,
# bearer token) landing in database "calabi_dest" of the same node (or of
# $opts{dest_node}, which outlives the source in a failover), and a
# destination "recv" pointing at it.  Returns ($node, $receiver).
sub sync_setup
{
	my (%opts) = @_;
	my $node = calabi_node($opts{name} || 'src', conf => $opts{conf}, init => $opts{init});
	$node->safe_psql('postgres', 'CREATE EXTENSION calabi_push');
	my $token = $opts{token} || 'tok-' . int(rand(1e9)) . '-secret';
	my $receiver = CalabiReceiver->start(
		node => $opts{dest_node} || $node,
		dbname => 'calabi_dest',
		token => $token,
		%{ $opts{receiver} || {} });
	my $dest_options = $opts{dest_options} || '{}';
	$node->safe_psql('postgres',
		    "SELECT calabi_push.create_destination('recv', '"
		  . $receiver->url
		  . "', token => '$token', options => jsonb_build_object('ca_file', '"
		  . $receiver->ca_file
		  . "') || '$dest_options'::jsonb)");
	return ($node, $receiver, $token);
}

# A started node "dest" of its own for the receiver's database (sync_setup's
# dest_node): it outlives the source's servers in a failover, and their WAL
# holds only the source's writes.
sub dest_node
{
	my $dest = PostgreSQL::Test::Cluster->new('dest');
	$dest->init;
	$dest->start;
	return $dest;
}

# The helpers below act on the sync's database "postgres" and the
# destination database "calabi_dest"; their *_in forms take the databases.
sub wait_for_state { my ($node, @rest) = @_; return wait_for_state_in($node, 'postgres', @rest) }
sub sync_status { my ($node, @rest) = @_; return sync_status_in($node, 'postgres', @rest) }
sub stream_rows_source { my ($node, @rest) = @_; return stream_rows_source_in($node, 'postgres', @rest) }
sub stream_rows_dest { my ($node, @rest) = @_; return stream_rows_dest_in($node, 'calabi_dest', @rest) }

sub assert_dest_equals_source
{
	my ($node, @rest) = @_;
	return assert_dest_equals_source_in($node, 'postgres', 'calabi_dest', @rest);
}

# For a sync (or relation) of database $db and a destination database
# $dest_db:
sub wait_for_state_in
{
	my ($node, $db, $sync, @states) = @_;
	my $list = join(',', map { "'$_'" } @states);
	return $node->poll_query_until($db,
		"SELECT state IN ($list) FROM calabi_push.sync_status WHERE name = '$sync'");
}

# The run of sync $sync (in database "postgres") ends, completed with no
# error (a refused batch would stop it in error).
sub run_completes
{
	my ($node, $sync, $name) = @_;
	ok( $node->poll_query_until('postgres', qq{
			SELECT state = 'error' OR (state = 'idle' AND completed_at IS NOT NULL)
			  FROM calabi_push.sync_status WHERE name = '$sync'}),
		"$name: the run ended");
	is(sync_status($node, $sync, q{state || ' ' || coalesce(last_error, '')}), 'idle ',
		"$name: the run completed, with no error");
}

sub sync_status_in
{
	my ($node, $db, $sync, $columns) = @_;
	return $node->safe_psql($db,
		"SELECT $columns FROM calabi_push.sync_status WHERE name = '$sync'");
}

sub stream_rows_source_in
{
	my ($node, $db, $rel) = @_;
	my $out = $node->safe_psql($db,
		"SELECT p::jsonb::text FROM calabi_push.preview('$rel', NULL) p ORDER BY 1");
	return [ split /\n/, $out ];
}

# The rows the receiver holds for a stream, without its own _calabi_
# columns, and only with the given columns when a list is given (the
# receiver keeps a column the source dropped, null from then on).
sub stream_rows_dest_in
{
	my ($node, $dest_db, $schema, $table, $columns) = @_;
	my $only = $columns
	  ? 'AND k = ANY (ARRAY[' . join(',', map { "\$\$$_\$\$" } @$columns) . ']::text[])'
	  : '';
	my $out = $node->safe_psql($dest_db, qq{
		SELECT (SELECT coalesce(jsonb_object_agg(k, v), '{}')
		          FROM jsonb_each(to_jsonb(_calabi_row)) e(k, v)
		         WHERE k NOT LIKE '\\_calabi\\_%' $only)::text
		  FROM "$schema"."$table" _calabi_row ORDER BY 1});
	return [ split /\n/, $out ];
}

# The destination holds exactly the source's rows, over the source's columns
# ($dest_node: the destination database's node, when not $node).
sub assert_dest_equals_source_in
{
	my ($node, $db, $dest_db, $schema, $table, $name, $dest_node) = @_;
	my $src = stream_rows_source_in($node, $db, qq{"$schema"."$table"});
	my @columns = split /\n/, $node->safe_psql($db, qq{
		SELECT jsonb_object_keys(calabi_push.stream_schema('"$schema"."$table"')::jsonb
		                         ->'json_schema'->'properties')});
	my $dst = stream_rows_dest_in($dest_node || $node, $dest_db, $schema, $table, \@columns);
	is(scalar(@$dst), scalar(@$src), "$name: row count");
	is_deeply($dst, $src, "$name: destination equals source, value for value");
}

# Waits until CDC sync $sync (of database "postgres") acknowledged
# everything committed so far and every table's backfill is done.
sub cdc_caught_up
{
	my ($node, $sync) = @_;
	my $lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	return $node->poll_query_until('postgres', qq{
		SELECT lsn_acknowledged >= '$lsn' AND
		       (SELECT bool_and(phase = 'done') FROM calabi_push.stream_status WHERE sync = '$sync')
		  FROM calabi_push.sync_status WHERE name = '$sync'});
}

# A node and receiver from sync_setup (given its options as setup), allowed
# to decode with calabi_push's plugin (allow_output_plugin), where sql (if
# given) ran in database "postgres", and CDC sync $opts{sync} of the
# relations named in $opts{relations} created with options (JSON text),
# not started.  Returns ($node, $receiver).
sub cdc_sync_setup
{
	my (%opts) = @_;
	my ($node, $recv) = sync_setup(%{ $opts{setup} || {} });
	allow_output_plugin($node);
	$node->safe_psql('postgres', $opts{sql}) if defined $opts{sql};
	my $relations = join(', ', map { "'$_'" } @{ $opts{relations} });
	my $options = $opts{options} // '{}';
	$node->safe_psql('postgres', qq{
		SELECT calabi_push.create_sync('$opts{sync}', 'recv', ARRAY[$relations]::regclass[],
		  method => 'cdc', options => '$options')});
	return ($node, $recv);
}

# A running CDC sync "s" of table t (id, v, n; 3,000 rows), in batches and
# chunks of 100 rows, on a node from sync_setup (%setup: its options) where
# $sql (if given) ran too; checks that it backfilled and caught up.
# Returns ($node, $receiver).
sub cdc_running_sync
{
	my ($sql, %setup) = @_;
	my ($node, $recv) = cdc_sync_setup(
		setup => \%setup,
		sql => q{
			CREATE TABLE t (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
			INSERT INTO t SELECT g, md5(g::text), 0 FROM generate_series(1, 3000) g;
		} . ($sql // ''),
		sync => 's', relations => ['t'], options => '{"batch_rows": 100, "chunk_rows": 100}');
	$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
	ok(cdc_caught_up($node, 's'), 'sync s backfilled its table and caught up');
	return ($node, $recv);
}

# Waits until the backfill of every table of CDC sync $sync (of database
# "postgres") is done; false if it does not end in time.
sub cdc_backfilled
{
	my ($node, $sync) = @_;
	return $node->poll_query_until('postgres', qq{
		SELECT bool_and(phase = 'done') FROM calabi_push.stream_status WHERE sync = '$sync'});
}

# Starts sync $sync (of database "postgres") with every request held a
# second by the receiver, and checks, as test $name, that its read gets
# under way with at least $rows rows acknowledged.  The caller clears the
# receiver's fault.
sub start_slowed_read
{
	my ($node, $recv, $sync, $rows, $name) = @_;
	$recv->fault({ kind => 'stall', seconds => 1, count => -1 });
	$node->safe_psql('postgres', "SELECT calabi_push.start_sync('$sync')");
	return ok($node->poll_query_until('postgres', qq{
			SELECT rows_sent >= $rows AND phase = 'reading'
			  FROM calabi_push.stream_status WHERE sync = '$sync'}), $name);
}

# The grants docs/syncs.md tells a DBA to give a role that manages syncs
# (in database "postgres").
sub grant_sync_management
{
	my ($node, $role) = @_;
	$node->safe_psql('postgres', qq{
		GRANT USAGE ON SCHEMA calabi_push TO $role;
		GRANT EXECUTE ON FUNCTION
		    calabi_push.create_sync(text, text, regclass[], text, text, jsonb),
		    calabi_push.start_sync(text),
		    calabi_push.stop_sync(text),
		    calabi_push.resync(text, regclass),
		    calabi_push.drop_sync(text)
		  TO $role;
		GRANT SELECT ON calabi_push.destinations, calabi_push.sync_status,
		                calabi_push.stream_status TO $role;
	});
}

# Runs $sql (psql, VERBOSITY verbose, stopping at the first error) and
# returns undef when it succeeds, else the error: a hash of sqlstate,
# message, detail, hint and the whole stderr.
sub sql_error
{
	my ($node, $db, $sql) = @_;
	my ($ret, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\n$sql");
	return undef if $ret == 0;
	my %e = (stderr => $err);
	($e{sqlstate}, $e{message}) = $err =~ /ERROR:\s+([0-9A-Z]{5}):\s+([^\n]*)/;
	($e{detail}) = $err =~ /DETAIL:\s+([^\n]*)/;
	($e{hint}) = $err =~ /HINT:\s+([^\n]*)/;
	return \%e;
}

# Calls $cond every 0.1 s until it returns true (returns 1) or $timeout
# seconds (default: the framework's timeout_default) have passed (returns 0).
sub wait_until
{
	my ($cond, $timeout) = @_;
	$timeout //= $PostgreSQL::Test::Utils::timeout_default;
	my $deadline = Time::HiRes::time() + $timeout;
	while (1)
	{
		return 1 if $cond->();
		return 0 if Time::HiRes::time() > $deadline;
		usleep(100_000);
	}
}

# The ingest requests a receiver logged for one sync (by its name), from the
# $since-th request of its log on (default: all).  The number of a refused
# request, which the receiver does not parse, is taken from its header.
# The messages a receiver started with log_bodies received from one sync,
# in order: decoded JSON objects, repeats included.
sub sent_messages
{
	my ($recv, $sync) = @_;
	my @messages;
	for my $req (@{ ingest_requests($recv, $sync) })
	{
		next unless ($req->{status} // 0) == 200 && defined $req->{body};
		push @messages, map { JSON::PP::decode_json($_) } split /\n/, $req->{body};
	}
	return \@messages;
}

# A row version of a CDC record as the endpoint received it: key|position|kind.
sub cdc_version_of
{
	my ($d) = @_;
	return join('|', $d->{id}, $d->{_calabi_cdc_lsn}, defined $d->{_calabi_cdc_deleted_at} ? 'd' : 'u');
}

# The row versions (key "id", position, kind: "id|lsn|u" or "id|lsn|d")
# that a receiver started with log_bodies accepted (2xx) more than once from
# CDC sync $sync, each repeat once: an array reference.
sub cdc_repeats
{
	my ($recv, $sync) = @_;
	my %seen;
	my @again;
	for my $m (@{ sent_messages($recv, $sync) })
	{
		next unless ($m->{type} // '') eq 'RECORD';
		my $k = cdc_version_of($m->{record}{data});
		push @again, $k if $seen{$k}++;
	}
	return \@again;
}

sub ingest_requests
{
	my ($recv, $sync, $since) = @_;
	my @all = @{ $recv->requests };
	@all = @all[ ($since // 0) .. $#all ];
	my @mine = grep {
		($_->{path} // '') eq $recv->{ingest_path}
		  && ($_->{headers}{'Calabi-Sync'} // '') eq $sync
	} @all;
	$_->{batch_seq} //= $_->{headers}{'Calabi-Batch-Seq'} for @mine;
	return \@mine;
}

# A minimal HTTP CONNECT proxy (test/receiver/connect_proxy.py) on
# 127.0.0.1, logging each CONNECT target.  Returns a hash: port, pid,
# log_file (one line per CONNECT: "CONNECT host:port", or "FAILED ..."/
# "REFUSED ..."), url ("http://127.0.0.1:PORT"), and stop (a code ref).
my %proxies;

sub start_connect_proxy
{
	my (%opts) = @_;
	my $name = $opts{name} // 'proxy';
	my $script = abs_path(dirname(abs_path(__FILE__)) . '/../receiver/connect_proxy.py');
	my $dir = PostgreSQL::Test::Utils::tempdir("proxy_$name");
	my $test = basename($0, '.pl');
	my $log = "$PostgreSQL::Test::Utils::log_path/${test}_${name}_connects.log";
	my $out = "$PostgreSQL::Test::Utils::log_path/${test}_${name}.log";
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', $out) or POSIX::_exit(127);
		open(STDERR, '>&', \*STDOUT);
		exec($CalabiReceiver::python, $script, '--listen', '127.0.0.1:0',
			'--port-file', "$dir/port", '--log', $log)
		  or POSIX::_exit(127);
	}
	$proxies{$pid} = 1;
	my $deadline = time() + 60;
	while (!-s "$dir/port")
	{
		die "the CONNECT proxy exited at start (see $out)"
		  if waitpid($pid, WNOHANG) == $pid;
		die "the CONNECT proxy did not start within 60 s (see $out)"
		  if time() > $deadline;
		usleep(50_000);
	}
	chomp(my $port = PostgreSQL::Test::Utils::slurp_file("$dir/port"));
	my $stop = sub {
		return unless $proxies{$pid};
		kill 'TERM', $pid;
		waitpid($pid, 0);
		delete $proxies{$pid};
	};
	return {
		pid => $pid,
		port => $port,
		url => "http://127.0.0.1:$port",
		log_file => $log,
		stop => $stop
	};
}

END
{
	local $?;
	for my $pid (keys %proxies)
	{
		kill 'TERM', $pid;
		waitpid($pid, 0);
	}
}

1;
