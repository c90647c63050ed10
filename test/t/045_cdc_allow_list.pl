# The output_plugin_libraries allow-list (the 2026 minor releases): a CDC
# sync whose plugin is not listed is refused with a clear error and the fix.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = sync_setup(name => 'allowlist');

SKIP:
{
	skip 'this server has no output_plugin_libraries', 3
	  unless $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_settings WHERE name = 'output_plugin_libraries'});
	$node->safe_psql('postgres', 'CREATE TABLE early (id int PRIMARY KEY)');
	my $e = sql_error($node, 'postgres', q{
		SELECT calabi_push.create_sync('early', 'recv', ARRAY['early']::regclass[], method => 'cdc')});
	is($e->{sqlstate}, '55000', 'not allowed: create_sync refuses');
	like($e->{message}, qr/output plugin "calabi_push" is not allowed by output_plugin_libraries/,
		'... saying why');
	like($e->{hint}, qr/ALTER SYSTEM SET output_plugin_libraries = pgoutput, test_decoding, calabi_push; then SELECT pg_reload_conf\(\);/,
		'... and how to fix it');
}

$recv->stop;
$node->stop;
done_testing();
