# Helpers for the TAP tests of syncs: a source node with calabi_push, the
# reference receiver landing into a destination database on the same node,
# and comparisons of source and destination.
package CalabiSyncTest;

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiReceiver;

use Exporter 'import';
our @EXPORT = qw(sync_setup wait_for_state stream_rows_source stream_rows_dest
  assert_dest_equals_source sync_status);

# A started node with calabi_push in database "postgres", a receiver (HTTPS,
# bearer token) landing in database "calabi_dest" of the same node, and a
# destination "recv" pointing at it.  Returns ($node, $receiver).
sub sync_setup
{
	my (%opts) = @_;
	my $node = calabi_node($opts{name} || 'src', conf => $opts{conf});
	$node->safe_psql('postgres', 'CREATE EXTENSION calabi_push');
	my $token = $opts{token} || 'tok-' . int(rand(1e9)) . '-secret';
	my $receiver = CalabiReceiver->start(
		node => $node,
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

# Wait until sync_status.state of the sync is one of the given states.
sub wait_for_state
{
	my ($node, $sync, @states) = @_;
	my $list = join(',', map { "'$_'" } @states);
	return $node->poll_query_until('postgres',
		"SELECT state IN ($list) FROM calabi_push.sync_status WHERE name = '$sync'");
}

sub sync_status
{
	my ($node, $sync, $columns) = @_;
	return $node->safe_psql('postgres',
		"SELECT $columns FROM calabi_push.sync_status WHERE name = '$sync'");
}

# The rows a sync sends for rel, as canonical jsonb text, sorted.
sub stream_rows_source
{
	my ($node, $rel) = @_;
	my $out = $node->safe_psql('postgres',
		"SELECT p::jsonb::text FROM calabi_push.preview('$rel', NULL) p ORDER BY 1");
	return [ split /\n/, $out ];
}

# The rows the receiver holds for a stream, without its own _calabi_ columns.
sub stream_rows_dest
{
	my ($node, $schema, $table) = @_;
	my $out = $node->safe_psql('calabi_dest', qq{
		SELECT (SELECT coalesce(jsonb_object_agg(k, v), '{}')
		          FROM jsonb_each(to_jsonb(_calabi_row)) e(k, v)
		         WHERE k NOT LIKE '\\_calabi\\_%')::text
		  FROM "$schema"."$table" _calabi_row ORDER BY 1});
	return [ split /\n/, $out ];
}

sub assert_dest_equals_source
{
	my ($node, $schema, $table, $name) = @_;
	my $src = stream_rows_source($node, qq{"$schema"."$table"});
	my $dst = stream_rows_dest($node, $schema, $table);
	is(scalar(@$dst), scalar(@$src), "$name: row count");
	is_deeply($dst, $src, "$name: destination equals source, value for value");
}

1;
