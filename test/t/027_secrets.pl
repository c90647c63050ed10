# Secrets outside the management functions, as an attacker and as a DBA
# see them:
#
# - a member of pg_read_all_data reads no row of destination_secret, and no
#   secret anywhere in calabi_push's tables and views; the functions, the
#   view and the workers (superusers) still do, and drop_destination's
#   cascade still deletes the secrets;
# - a member of the role owning a destination (allowed to alter it) cannot
#   re-point it (url, token_url, proxy, ca_pem) while keeping secrets it did
#   not give: refused unless it gives them again; a superuser may;
# - pg_dump writes no secret; restored, the destinations view lists the
#   secrets to enter again, a sync stops in error naming the destination and
#   the alter_destination call, and entering them makes it run;
# - the TAP receiver has no token on its command line.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use CalabiReceiver;
use CalabiSyncTest;

my $TOKEN = 'tok-27-aa91c3e07d55';
my $OAUTH_SECRET = 'oauth-secret-27-5be0917c';
my $SHARED_TOKEN = 'shared-token-27-c0ffee99';

my ($node, $recv) = sync_setup(name => 'secrets', token => $TOKEN);
my $json = JSON::PP->new->canonical;

sub sql { $node->safe_psql('postgres', shift) }
sub lit { my $s = shift; $s =~ s/'/''/g; return "'$s'" }

my $client_key = slurp_file($recv->client_key);
my $client_cert = slurp_file($recv->client_cert);
(my $client_key_body) = $client_key =~ /-----BEGIN [A-Z ]*PRIVATE KEY-----\s*(\S{40})/;
ok(defined $client_key_body, 'a piece of the client key to look for');
my @secrets = ($TOKEN, $OAUTH_SECRET, $SHARED_TOKEN, $client_key_body);

# ---------------------------------------------------------------------------
# (a) the receiver's token is not on its command line
# ---------------------------------------------------------------------------
my $cmdline = slurp_file('/proc/' . $recv->pid . '/cmdline');
$cmdline =~ s/\0/ /g;
like($cmdline, qr/calabi_receiver\.py/, 'the receiver process is the one we read');
unlike($cmdline, qr/\Q$TOKEN\E/, 'the token is not on the receiver\'s command line');
like($cmdline, qr/--token-file /, 'the receiver reads it from a file');

# ---------------------------------------------------------------------------
# destinations with each kind of secret; the sync runs with its token
# ---------------------------------------------------------------------------
sql(qq{SELECT calabi_push.create_destination('oauth', 'https://ingest.example.com/v1',
         options => jsonb_build_object('token_url', 'https://auth.example.com/token',
                                       'client_id', 'pg', 'client_secret', '$OAUTH_SECRET'))});
sql('SELECT calabi_push.create_destination(' . lit('mtls') . ", 'https://ingest.example.com/v1',
         options => jsonb_build_object('client_cert', " . lit($client_cert) . ", 'client_key', "
	  . lit($client_key) . '))');
sql(q{CREATE TABLE t (id int PRIMARY KEY, label text);
      INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 30) g;
      SELECT calabi_push.create_sync('s', 'recv', ARRAY['t']::regclass[]);
      SELECT calabi_push.start_sync('s');});
ok(wait_for_state($node, 's', 'idle', 'error'), 'sync s: the run ends');
is(sync_status($node, 's', 'state'), 'idle', 'the worker reads the token (row-level security does not stop it)');
assert_dest_equals_source($node, 'public', 't', 'sync s');

is(sql(q{SELECT string_agg(name || ':' || has_token || has_client_secret || has_client_key || ':' || missing_secrets::text, ' ' ORDER BY name)
           FROM calabi_push.destinations}),
	'mtls:falsefalsetrue:{} oauth:falsetruefalse:{} recv:truefalsefalse:{}',
	'the destinations view sees the secrets (has_*), none missing');

# ---------------------------------------------------------------------------
# (b) pg_read_all_data reads no secret
# ---------------------------------------------------------------------------
sql(q{CREATE ROLE snoop LOGIN; GRANT pg_read_all_data TO snoop;});
sub as_snoop
{
	my ($query) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $query, extra_params => [ '-U', 'snoop' ]);
	return "ret=$ret\n$out\n$err";
}
is(as_snoop('SELECT count(*) FROM calabi_push.destination_secret'), "ret=0\n0\n",
	'a member of pg_read_all_data reads no row of destination_secret');
my $everything = as_snoop(q{
	SELECT row_to_json(x)::text FROM calabi_push.destination_secret x;
	SELECT row_to_json(x)::text FROM calabi_push.destination x;
	SELECT row_to_json(x)::text FROM calabi_push.destinations x;
	SELECT row_to_json(x)::text FROM calabi_push.sync x;});
like($everything, qr/"name":"recv"/, 'it does read the other calabi_push tables and views');
for my $secret (@secrets)
{
	unlike($everything, qr/\Q$secret\E/, 'no secret in what it reads (' . substr($secret, 0, 8) . '...)');
}
sql(q{SELECT calabi_push.create_destination('short-lived', 'https://ingest.example.com/v1', token => 'will-go-1234')});
sql(q{SELECT calabi_push.drop_destination('short-lived')});
is(sql(q{SELECT count(*) FROM calabi_push.destination_secret WHERE destination = 'short-lived'}), '0',
	'drop_destination deletes the secrets (the cascade is not stopped by row-level security)');

# ---------------------------------------------------------------------------
# (c) re-pointing a destination without giving its secrets again
# ---------------------------------------------------------------------------
sql(q{
	CREATE ROLE dest_owners NOLOGIN;
	CREATE ROLE alice LOGIN IN ROLE dest_owners;
	GRANT USAGE ON SCHEMA calabi_push TO dest_owners;
	GRANT EXECUTE ON FUNCTION
	    calabi_push.create_destination(text, text, text, jsonb),
	    calabi_push.alter_destination(text, text, text, jsonb),
	    calabi_push.drop_destination(text)
	  TO dest_owners;
	GRANT SELECT ON calabi_push.destinations TO dest_owners;
});
sql(qq{SET ROLE dest_owners;
	SELECT calabi_push.create_destination('shared', 'https://ingest.example.com/v1', token => '$SHARED_TOKEN');
	SELECT calabi_push.create_destination('shared-oauth', 'https://ingest.example.com/v1',
	  options => jsonb_build_object('token_url', 'https://auth.example.com/token',
	                                'client_id', 'pg', 'client_secret', '$OAUTH_SECRET'));});

sub secret_of { sql("SELECT $_[1] FROM calabi_push.destination_secret WHERE destination = '$_[0]'") }
sub url_of { sql("SELECT url FROM calabi_push.destination WHERE name = '$_[0]'") }

for my $case (
	[ q{url => 'https://evil.example.net/collect'}, 'url' ],
	[ q{options => '{"proxy": "http://evil.example.net:3128"}'}, 'proxy' ],
	[ q{options => jsonb_build_object('ca_pem', } . lit(slurp_file($recv->other_ca_file)) . ')', 'ca_pem' ])
{
	my ($args, $what) = @$case;
	my $e = sql_error($node, 'postgres', "SET ROLE alice; SELECT calabi_push.alter_destination('shared', $args)");
	is($e && $e->{sqlstate}, '42501', "a member of the owning role changes $what, keeping the token: refused");
	like($e && $e->{message}, qr/changing where destination "shared" sends its secrets requires giving them again/,
		"$what: the message says why");
	like($e && $e->{detail}, qr/changes \Q$what\E; the stored token would be sent there/, "$what: the detail names the change and the secret");
	like($e && $e->{hint}, qr/token => '\.\.\.'/, "$what: the hint says how to give it");
	unlike($e && $e->{stderr}, qr/\Q$SHARED_TOKEN\E/, "$what: the error shows no secret");
}
is(url_of('shared'), 'https://ingest.example.com/v1', 'the URL did not change');
is(secret_of('shared', 'token'), $SHARED_TOKEN, 'the token did not change');

my $e = sql_error($node, 'postgres', q{SET ROLE alice;
	SELECT calabi_push.alter_destination('shared-oauth', options => '{"token_url": "https://evil.example.net/token"}')});
is($e && $e->{sqlstate}, '42501', 'changing token_url, keeping the client secret: refused');
like($e && $e->{detail}, qr/changes token_url; the stored client_secret/, 'token_url: the detail names client_secret');
like($e && $e->{hint}, qr/options => '\{"client_secret": "\.\.\."\}'/, 'token_url: the hint says how to give it');

is(sql_error($node, 'postgres', q{SET ROLE alice;
	SELECT calabi_push.alter_destination('shared', options => '{"request_timeout": "2 minutes"}')}),
	undef, 'a change that does not move the secrets: allowed, token kept');
is(secret_of('shared', 'token'), $SHARED_TOKEN, 'the token is kept');

is(sql_error($node, 'postgres', q{SET ROLE alice;
	SELECT calabi_push.alter_destination('shared', url => 'https://other.example.net/collect', token => 'alices-own-token')}),
	undef, 'with the token given again: allowed');
is(url_of('shared') . ' ' . secret_of('shared', 'token'), 'https://other.example.net/collect alices-own-token',
	'the new URL with the token given');

is(sql_error($node, 'postgres', qq{SET ROLE alice;
	SELECT calabi_push.alter_destination('shared-oauth',
	  options => '{"token_url": "https://auth2.example.com/token", "client_secret": "alices-secret"}')}),
	undef, 'token_url with the client secret given again: allowed');
is(sql_error($node, 'postgres', q{SET ROLE alice;
	SELECT calabi_push.alter_destination('shared', url => 'https://third.example.net/collect', token => '')}),
	undef, 'a new URL and the token removed: allowed');
is(sql(q{SELECT has_token FROM calabi_push.destinations WHERE name = 'shared'}), 'f', 'the token is gone');

sql(qq{SELECT calabi_push.alter_destination('shared', token => '$SHARED_TOKEN')});
is(sql_error($node, 'postgres', q{SELECT calabi_push.alter_destination('shared', url => 'https://fourth.example.net/x')}),
	undef, 'a superuser may change the URL and keep the token');
is(secret_of('shared', 'token'), $SHARED_TOKEN, 'the superuser\'s change kept the token');
sql(q{SELECT calabi_push.drop_destination('shared'); SELECT calabi_push.drop_destination('shared-oauth');});

# ---------------------------------------------------------------------------
# (d) pg_dump holds no secret; a restore lists what to enter again
# ---------------------------------------------------------------------------
my $dump = "$PostgreSQL::Test::Utils::tmp_check/027_dump.sql";
command_ok([ 'pg_dump', '-h', $node->host, '-p', $node->port, '-d', 'postgres', '-f', $dump ],
	'pg_dump of the database');
my $dumped = slurp_file($dump);
like($dumped, qr/COPY calabi_push\.destination .*\n.*recv/, 'the dump holds the destinations');
for my $secret (@secrets)
{
	unlike($dumped, qr/\Q$secret\E/, 'the dump holds no secret (' . substr($secret, 0, 8) . '...)');
}

sql('CREATE DATABASE restored');
command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', $node->host, '-p', $node->port,
		'-d', 'restored', '-f', $dump ], 'the dump restores into a new database');
sub rsql { $node->safe_psql('restored', shift) }
is(rsql(q{SELECT string_agg(name || ':' || has_token || has_client_secret || has_client_key || ':' || missing_secrets::text, ' ' ORDER BY name)
            FROM calabi_push.destinations}),
	'mtls:falsefalsefalse:{client_key} oauth:falsefalsefalse:{client_secret} recv:falsefalsefalse:{token}',
	'restored: the destinations view lists the secrets to enter again');

# a restored sync is a copy (docs/operations.md, "Copies of a database"):
# it takes an identity of its own before it may start
is(sync_status_in($node, 'restored', 's', 'state'), 'copied', 'restored: the sync is a copy');
rsql(q{SELECT calabi_push.adopt_sync('s')});
my $log_offset = -s $node->logfile;
rsql(q{SELECT calabi_push.start_sync('s')});
ok(wait_for_state_in($node, 'restored', 's', 'error', 'idle'), 'restored: the sync started ends its run');
is(sync_status_in($node, 'restored', 's', 'state'), 'error', 'restored: without its token the sync stops in error');
like(sync_status_in($node, 'restored', 's', 'last_error'),
	qr/destination "recv" of sync "s" lacks its secrets \(token\): enter them again with calabi_push\.alter_destination\(\)/,
	'last_error names the destination, the secret and the function');
like(substr(slurp_file($node->logfile), $log_offset),
	qr/HINT:\s+Run SELECT calabi_push\.alter_destination\('recv', token => '\.\.\.'\); then SELECT calabi_push\.start_sync\('s'\)\./,
	'the logged hint gives the call');

rsql(qq{SELECT calabi_push.alter_destination('recv', token => '$TOKEN')});
is(rsql(q{SELECT has_token || ' ' || missing_secrets::text FROM calabi_push.destinations WHERE name = 'recv'}),
	'true {}', 'restored: the token entered again, nothing missing');
rsql(q{SELECT calabi_push.start_sync('s')});
ok($node->poll_query_until('restored', q{
	SELECT state = 'idle' AND completed_at IS NOT NULL FROM calabi_push.sync_status WHERE name = 's'}),
	'restored: with its token the sync runs and completes');
assert_dest_equals_source_in($node, 'restored', 'calabi_dest', 'public', 't', 'restored sync');

# a restored mTLS destination: client_cert without client_key is not a valid
# configuration, so any other change asks for the key first
$e = sql_error($node, 'restored', q{SELECT calabi_push.alter_destination('mtls', options => '{"request_timeout": "2 minutes"}')});
like($e && $e->{message}, qr/"client_cert" and "client_key" go together/,
	'restored mTLS destination: another change needs the key entered again');
rsql('SELECT calabi_push.alter_destination(' . lit('mtls') . ', options => jsonb_build_object(' . lit('client_key') . ', ' . lit($client_key) . '))');
is(rsql(q{SELECT has_client_key || ' ' || missing_secrets::text FROM calabi_push.destinations WHERE name = 'mtls'}),
	'true {}', 'restored: the client key entered again');

$recv->stop;
$node->stop;
done_testing();
