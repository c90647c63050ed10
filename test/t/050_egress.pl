# Where a sync may send (calabi_push.allowed_hosts, docs/destinations.md):
# metadata and private addresses refused when a destination is created, and
# metadata at connect time too; loopback refused while not listed (at
# creation and at connect time, the sync retrying until a superuser lists it
# and reloads); a host name that resolves to loopback; a proxy at a loopback
# address; the setting out of a non-superuser's reach.  Also: response
# excerpts in sync_status only for the destination's owner and superusers,
# and the documented monitoring grant (SELECT on the two views) working.
#
# No packet leaves this machine: every refused address is refused before
# a socket is made.  The host name is "egress-test.localhost", which
# libcurl itself resolves to 127.0.0.1 and ::1 (RFC 6761), whatever
# /etc/hosts or DNS say.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiSyncTest;

my ($node, $recv, $token) = sync_setup(name => 'egress');
my $port = $recv->port;
my $ca = $recv->ca_file;

sub sql { return $node->safe_psql('postgres', $_[0]) }

# psql as a role (SET ROLE, as the session's role)
sub as_role
{
	my ($role, $query) = @_;
	return $node->safe_psql('postgres', "SET ROLE $role;\n$query");
}

sub set_allowed_hosts
{
	my ($list) = @_;
	sql("ALTER SYSTEM SET calabi_push.allowed_hosts = '$list'");
	sql('SELECT pg_reload_conf()');
	$node->poll_query_until('postgres',
		"SELECT current_setting('calabi_push.allowed_hosts') = '$list'")
	  or die "calabi_push.allowed_hosts was not reloaded";
}

sub last_error { return sync_status($node, $_[0], 'last_error') }

sub wait_error_like
{
	my ($sync, $re) = @_;
	return wait_until(sub { (last_error($sync) // '') =~ $re });
}

sql(q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 50) g;
	CREATE ROLE dest_owner LOGIN;
	CREATE ROLE watcher LOGIN;
	GRANT USAGE ON SCHEMA calabi_push TO dest_owner, watcher;
	GRANT EXECUTE ON FUNCTION
	    calabi_push.create_destination(text, text, text, jsonb),
	    calabi_push.alter_destination(text, text, text, jsonb),
	    calabi_push.drop_destination(text)
	  TO dest_owner;
	GRANT SELECT ON calabi_push.destinations TO dest_owner;
	-- ca_file makes the server read a file
	GRANT pg_read_server_files TO dest_owner;
	-- the monitoring grant of the README and docs/syncs.md, nothing more
	GRANT SELECT ON calabi_push.sync_status, calabi_push.stream_status TO watcher;
	GRANT SELECT ON calabi_push.sync_status, calabi_push.stream_status TO dest_owner;
});

# --- the setting is the superuser's -------------------------------------
my $err = sql_error($node, 'postgres',
	"SET ROLE dest_owner; ALTER SYSTEM SET calabi_push.allowed_hosts = '10.0.0.0/8'");
is($err->{sqlstate}, '42501', 'a non-superuser cannot ALTER SYSTEM the allow-list');
$err = sql_error($node, 'postgres',
	"SET ROLE dest_owner; SET calabi_push.allowed_hosts = '10.0.0.0/8'");
like($err->{message}, qr/cannot be changed now/, 'nor SET it in a session');
$err = sql_error($node, 'postgres', "SET ROLE dest_owner; SHOW calabi_push.allowed_hosts");
# (PostgreSQL 16 reworded the message: "permission denied to examine")
like($err->{message}, qr/must be superuser|permission denied to examine/, 'nor see it');

# --- refused at creation --------------------------------------------------
$err = sql_error($node, 'postgres', q{SET ROLE dest_owner;
	SELECT calabi_push.create_destination('meta', 'https://169.254.169.254/latest/meta-data/')});
is($err->{sqlstate}, '42501', 'metadata address: refused at create_destination');
like($err->{message}, qr/cloud metadata service address/, 'metadata address: the message says why');
$err = sql_error($node, 'postgres', q{SET ROLE dest_owner;
	SELECT calabi_push.create_destination('kube', 'https://10.96.0.1/api')});
is($err->{sqlstate}, '42501', 'private address: refused at create_destination');
like($err->{hint}, qr/ALTER SYSTEM SET calabi_push\.allowed_hosts/,
	'private address: the hint names the setting');
is(sql(q{SELECT count(*) FROM calabi_push.destination WHERE name IN ('meta', 'kube')}), '0',
	'nothing was created');

# --- the monitoring grant (item 7) -----------------------------------------
sql(q{SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[],
	options => '{"max_backoff": "1s"}')});
$err = sql_error($node, 'postgres', q{SET ROLE watcher;
	SELECT name, state, last_error FROM calabi_push.sync_status;
	SELECT sync, phase FROM calabi_push.stream_status;});
ok(!defined $err, 'a role with only SELECT on the views reads sync_status and stream_status')
  or diag($err->{stderr});
is(as_role('watcher', q{SELECT name || ' ' || state FROM calabi_push.sync_status}), 's stopped',
	'the grantee sees the sync and its state');
$err = sql_error($node, 'postgres', q{CREATE ROLE nobody;
	GRANT USAGE ON SCHEMA calabi_push TO nobody;
	SET ROLE nobody; SELECT * FROM calabi_push._sync_runtime()});
is($err->{sqlstate}, '42501', '_sync_runtime() refuses a role that may not read sync_status');

# --- loopback while it is not listed ---------------------------------------
set_allowed_hosts('');
$err = sql_error($node, 'postgres', qq{SET ROLE dest_owner;
	SELECT calabi_push.create_destination('loop', 'https://127.0.0.1:$port/ingest')});
is($err->{sqlstate}, '42501', 'loopback not listed: refused at create_destination');
like($err->{message}, qr/not allowed by calabi_push\.allowed_hosts/, 'loopback: the message names the setting');
$err = sql_error($node, 'postgres', qq{SET ROLE dest_owner;
	SELECT calabi_push.create_destination('loop', 'https://localhost:$port/ingest')});
is($err->{sqlstate}, '42501', 'loopback not listed: localhost refused at create_destination');

# the destination made while loopback was listed: judged at connect time
my $before = scalar(@{ $recv->requests });
sql(q{SELECT calabi_push.start_sync('s')});
ok(wait_error_like('s',
		qr/connection to "(?:127\.0\.0\.1|::1)" \(host "localhost"\) refused by calabi_push\.allowed_hosts/),
	'loopback not listed: the connection is refused, and last_error says why')
  or diag(last_error('s'));
like(last_error('s'), qr/ALTER SYSTEM SET calabi_push\.allowed_hosts/,
	'last_error says how to allow it');
ok(wait_for_state($node, 's', 'retrying'), 'the sync retries (a superuser may list the host)');
is(scalar(@{ ingest_requests($recv, 's', $before) }), 0, 'nothing reached the receiver');

# listed again and reloaded: the retrying sync gets through by itself
set_allowed_hosts('127.0.0.0/8, ::1/128');
ok( $node->poll_query_until('postgres', q{
		SELECT state = 'idle' AND completed_at IS NOT NULL
		  FROM calabi_push.sync_status WHERE name = 's'}),
	'loopback listed and reloaded: the sync completes its run');
assert_dest_equals_source($node, 'public', 't', 'after the allow-list was reloaded');

# --- a host name that resolves to a forbidden address ----------------------
set_allowed_hosts('');
sql(qq{SELECT calabi_push.create_destination('named',
	'https://egress-test.localhost:$port/ingest', token => '$token',
	options => '{"ca_file": "$ca"}')});
pass('a host name is accepted at creation (judged when connecting)');
sql(q{SELECT calabi_push.create_sync('s_named', 'named', ARRAY['t']::regclass[],
	options => '{"max_backoff": "1s"}');
	SELECT calabi_push.start_sync('s_named')});
ok(wait_error_like('s_named',
		qr/connection to "(?:127\.0\.0\.1|::1)" \(host "egress-test\.localhost"\) refused by calabi_push\.allowed_hosts: a loopback address/),
	'a name resolving to loopback: refused after resolution')
  or diag(last_error('s_named'));
# a name entry allows what the name resolves to: the connection is made (and
# fails TLS host name verification: the certificate names localhost only),
# which is the destination's configuration to fix: the sync stops in error
set_allowed_hosts('egress-test.localhost');
ok(wait_error_like('s_named', qr/certificate|SSL/i),
	'a name entry allows what that name resolves to')
  or diag(last_error('s_named'));
is(sync_status($node, 's_named', 'state'), 'error',
	'a host name the certificate does not name: the sync stops in error');
like(last_error('s_named'), qr/host name the certificate names/,
	'a host name the certificate does not name: last_error says how to fix it');

# --- a proxy at a forbidden address -----------------------------------------
set_allowed_hosts('');
my $proxy = start_connect_proxy(name => 'proxy');
$err = sql_error($node, 'postgres', qq{SET ROLE dest_owner;
	SELECT calabi_push.create_destination('proxied', 'https://ingest.example.com/',
	    options => '{"proxy": "$proxy->{url}"}')});
is($err->{sqlstate}, '42501', 'a proxy at a loopback address: refused at create_destination');
like($err->{message}, qr/option "proxy" host 127\.0\.0\.1 is not allowed/, 'the message names the proxy');
# (the target is a name: through an HTTP proxy only the proxy resolves it)
sql(qq{SELECT calabi_push.create_destination('proxied', 'https://ingest.example.com/ingest',
	token => '$token',
	options => '{"proxy": "http://egress-test.localhost:$proxy->{port}"}');
	SELECT calabi_push.create_sync('s_proxied', 'proxied', ARRAY['t']::regclass[],
	    options => '{"max_backoff": "1s"}');
	SELECT calabi_push.start_sync('s_proxied')});
ok(wait_error_like('s_proxied',
		qr/connection to proxy "(?:127\.0\.0\.1|::1)" \(host "egress-test\.localhost"\) refused by calabi_push\.allowed_hosts/),
	'a proxy named by a host resolving to loopback: refused at connect time')
  or diag(last_error('s_proxied'));
my $connects = -e $proxy->{log_file} ? slurp_file($proxy->{log_file}) : '';
is($connects, '', 'the proxy saw nothing');
sql(q{SELECT calabi_push.stop_sync('s_proxied')});

# the proxy allowed (by name), but a literal target address that is not:
# judged before any request (the catalog is changed directly, as
# alter_destination would refuse it)
set_allowed_hosts('egress-test.localhost');
sql(qq{UPDATE calabi_push.destination SET url = 'https://127.0.0.1:$port/ingest'
        WHERE name = 'proxied';
	SELECT calabi_push.start_sync('s_proxied')});
ok(wait_error_like('s_proxied',
		qr/destination URL host "127\.0\.0\.1" \(through the proxy\) refused by calabi_push\.allowed_hosts/),
	'through an allowed proxy, a literal target address is still judged')
  or diag(last_error('s_proxied'));
$connects = -e $proxy->{log_file} ? slurp_file($proxy->{log_file}) : '';
is($connects, '', 'the proxy was not asked to connect');
sql(q{SELECT calabi_push.stop_sync('s_proxied')});
$proxy->{stop}->();

# --- a metadata address at connect time -------------------------------------
# As a destination made before the policy (or restored from a dump) would
# have it: the catalog says so, no function would accept it.
set_allowed_hosts('127.0.0.0/8, ::1/128, 169.254.169.254');
sql(q{UPDATE calabi_push.destination SET url = 'https://169.254.169.254/latest/meta-data/'
       WHERE name = 'named';
	SELECT calabi_push.start_sync('s_named')});
ok(wait_error_like('s_named',
		qr/connection to "169\.254\.169\.254" \(host "169\.254\.169\.254"\) refused: a cloud metadata service address is never allowed/),
	'metadata address: refused at connect time, even when listed')
  or diag(last_error('s_named'));
sql(q{SELECT calabi_push.stop_sync('s_named')});
set_allowed_hosts('127.0.0.0/8, ::1/128');

# --- response excerpts: the destination's owner and superusers only --------
sql(qq{SET ROLE dest_owner;
	SELECT calabi_push.create_destination('owned', 'https://localhost:$port/ingest',
	    token => '$token', options => '{"ca_file": "$ca"}');
	RESET ROLE;
	SELECT calabi_push.create_sync('s_owned', 'owned', ARRAY['t']::regclass[]);});
$recv->fault({ kind => 'refuse', status => 400, error => 'internal-secret-4711', count => -1 });
sql(q{SELECT calabi_push.start_sync('s_owned')});
ok(wait_for_state($node, 's_owned', 'error'), 'a 400 stops the sync in error');
like(last_error('s_owned'), qr/HTTP 400: .*internal-secret-4711/,
	'a superuser sees the response excerpt');
like(as_role('dest_owner', q{SELECT last_error FROM calabi_push.sync_status WHERE name = 's_owned'}),
	qr/HTTP 400: .*internal-secret-4711/, 'the destination\'s owner sees it');
my $watched = as_role('watcher', q{SELECT last_error FROM calabi_push.sync_status WHERE name = 's_owned'});
is($watched, "HTTP 400: [response shown only to the destination's owner]",
	'another grantee sees the status without the excerpt');
like(slurp_file($node->logfile), qr/internal-secret-4711/, 'the server log keeps the excerpt');
$recv->clear_faults;

$recv->stop;
$node->stop;
done_testing();
