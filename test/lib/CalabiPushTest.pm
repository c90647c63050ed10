# Helpers shared by the TAP tests of calabi_push.
package CalabiPushTest;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

use Exporter 'import';
our @EXPORT = qw(calabi_node everything_sql allow_output_plugin);

# A started node configured as calabi_push needs in production (see the
# README), with UTF8 encoding; extra postgresql.conf lines may be given
# (conf), and options of PostgreSQL::Test::Cluster's init (init, e.g.
# { allows_streaming => 1 } for a primary).
# The test receivers and proxies listen on 127.0.0.1: loopback is allowed
# as a destination (calabi_push.allowed_hosts), as a DBA would for them.
sub calabi_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(extra => [ '--encoding=UTF8', '--locale=C' ], %{ $opts{init} || {} });
	$node->append_conf('postgresql.conf', <<"CONF");
shared_preload_libraries = 'calabi_push'
wal_level = logical
max_replication_slots = 10
max_worker_processes = 16
calabi_push.allowed_hosts = '127.0.0.0/8, ::1/128'
CONF
	$node->append_conf('postgresql.conf', $opts{conf}) if $opts{conf};
	$node->start unless $opts{no_start};
	return $node;
}

# Lets a started node decode with calabi_push's own output plugin: servers
# since the 2026 minor releases list the allowed plugins in
# output_plugin_libraries (not settable in postgresql.conf before them: an
# unknown setting would stop an older server from starting).  Returns
# whether the server has the allow-list.
sub allow_output_plugin
{
	my ($node) = @_;
	return 0
	  unless $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_settings WHERE name = 'output_plugin_libraries'});
	$node->append_conf('postgresql.conf',
		q{output_plugin_libraries = 'pgoutput, test_decoding, calabi_push'});
	$node->reload;
	$node->poll_query_until('postgres', q{
		SELECT setting LIKE '%calabi_push%' FROM pg_settings
		 WHERE name = 'output_plugin_libraries'})
	  or die 'output_plugin_libraries was not reloaded';
	return 1;
}

# The SQL of the shared every-type-family table: 'schema' or 'rows'
# (test/lib/everything_*.sql; TAP tests run from the tree's top).
sub everything_sql
{
	my ($part) = @_;
	return slurp_file("test/lib/everything_$part.sql");
}

1;
