# TLS and authentication, as a user sees them: certificate verification is
# always on (no CA configured: the system CAs do not know the test CA, the
# sync stops in error with a last_error naming ca_file/ca_pem and delivers
# nothing; a wrong CA fails the same way; ca_pem of the right CA, then
# start_sync, delivers); mutual TLS (no client certificate, or one of
# another CA: the handshake fails; the right one, set by alter_destination
# on the running sync, delivers); a wrong static token is a 401 that stops
# the sync in error until the token is fixed; OAuth2 client credentials
# (tokens refreshed before they expire; a revoked token is replaced after a
# 401 without losing the batch); plain http only with allow_http and a
# loopback host; an HTTP CONNECT proxy; a configuration rule broken in the
# catalog refused by the worker with create_destination's message; no secret
# ever in the server log.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use CalabiReceiver;
use CalabiSyncTest;

my $TOKEN = 'right-token-7c1e99d04b';
my $WRONG_TOKEN = 'wrong-token-5a0f3e21c8';
my $OAUTH_ID = 'pg-client';
my $OAUTH_SECRET = 'oauth-s3cret-91be2d7740';
my $WRONG_SECRET = 'not-the-s3cret-5f1d0a2b';

# log_statement as in production (docs/destinations.md): the log is read
# for secrets at the end
my ($node, $recv) = sync_setup(
	name => 'tls',
	token => $TOKEN,
	conf => "log_statement = 'none'");

my $json = JSON::PP->new->canonical;
my $ca_pem = slurp_file($recv->ca_file);
my $other_ca_pem = slurp_file($recv->other_ca_file);
my $client_cert = slurp_file($recv->client_cert);
my $client_key = slurp_file($recv->client_key);
my $other_client_cert = slurp_file($recv->other_client_cert);
my $other_client_key = slurp_file($recv->other_client_key);

# an SQL literal of a text / of a Perl structure as jsonb
sub lit { my $s = shift; $s =~ s/'/''/g; return "'$s'" }
sub jsonb { return lit($json->encode(shift)) . '::jsonb' }

sub sql { $node->safe_psql('postgres', shift) }

sub make_table
{
	my ($name, $rows) = @_;
	sql(qq{
		CREATE TABLE $name (id int PRIMARY KEY, label text, amount numeric);
		INSERT INTO $name SELECT g, '$name row ' || g, g * 1.25 FROM generate_series(1, $rows) g;
	});
}

sub create_sync
{
	my ($name, $dest, $table) = @_;
	sql(qq{SELECT calabi_push.create_sync('$name', '$dest', ARRAY['$table']::regclass[],
	         options => '{"batch_rows": 10, "max_backoff": "1s"}')});
}

sub db_now { sql('SELECT now()') }

sub wait_run_complete
{
	my ($sync) = @_;
	return $node->poll_query_until('postgres', qq{
		SELECT state IN ('idle', 'error') AND completed_at IS NOT NULL OR state = 'error'
		  FROM calabi_push.sync_status WHERE name = '$sync'});
}

sub dest_table_absent
{
	my ($dest_db, $table) = @_;
	return $node->safe_psql($dest_db, "SELECT to_regclass('public.$table') IS NULL") eq 't';
}

sub accepted { my $s = shift->{status} // 0; return $s == 200 || $s == 409 }

# ---------------------------------------------------------------------------
# (a) certificate verification is always on
# ---------------------------------------------------------------------------
make_table('t_ca', 30);
sql("SELECT calabi_push.create_destination('noca', " . lit($recv->url) . ", token => " . lit($TOKEN) . ")");
create_sync('ca_s', 'noca', 't_ca');
sql(q{SELECT calabi_push.start_sync('ca_s')});
# a certificate the destination cannot verify is its configuration's fault:
# no retry cures it, so the sync stops in error with the way out
ok(wait_for_state($node, 'ca_s', 'error'),
	'no CA configured: the sync stops in error (a certificate error is not transient)');
my $ca_error = sync_status($node, 'ca_s', 'last_error');
like($ca_error, qr/certificate/i, 'no CA configured: last_error is about the certificate');
like($ca_error, qr/the system's CAs/, 'no CA configured: last_error says the system CAs were used');
like($ca_error, qr/"ca_file" or "ca_pem".*calabi_push\.alter_destination\('noca'/,
	'no CA configured: last_error names ca_file, ca_pem and the alter_destination call');
is(sync_status($node, 'ca_s', 'retries'), '0', 'no CA configured: not retried');
is(sync_status($node, 'ca_s', 'batches_sent || \' \' || records_sent'), '0 0',
	'no CA configured: nothing delivered');
is(scalar(@{ ingest_requests($recv, 'ca_s') }), 0,
	'no CA configured: no HTTP request reached the endpoint');
ok(dest_table_absent('calabi_dest', 't_ca'), 'no CA configured: nothing landed');
ok($node->log_contains(qr/ERROR:  the sync stopped, no retry can help: [^\n]*certificate[^\n]*\n(?:(?:[^\n]*(?:DETAIL|HINT):  |\t)[^\n]*\n)*[^\n]*CONTEXT:  (?:[^\n]*\n\t)*calabi_push sync "ca_s"\n/),
	'no CA configured: the server log says the sync stopped');

# a CA that did not sign the server's certificate: just as refused
sql("SELECT calabi_push.alter_destination('noca', options => " . jsonb({ ca_pem => $other_ca_pem }) . ")");
my $t0 = db_now();
sql(q{SELECT calabi_push.start_sync('ca_s')});
ok($node->poll_query_until('postgres', qq{
	SELECT state = 'error' AND last_error_at > '$t0'
	  FROM calabi_push.sync_status WHERE name = 'ca_s'}),
	'an unrelated CA: the handshake fails again, the sync stops in error');
like(sync_status($node, 'ca_s', 'last_error'), qr/certificate.*the CAs of option "ca_pem"/i,
	'an unrelated CA: last_error is about the certificate and the ca_pem given');
is(scalar(@{ ingest_requests($recv, 'ca_s') }), 0, 'an unrelated CA: no HTTP request');

# the right CA as PEM text: alter_destination, start_sync, and it delivers
sql("SELECT calabi_push.alter_destination('noca', options => " . jsonb({ ca_pem => $ca_pem }) . ")");
is(sql(q{SELECT options->>'ca_pem' = } . lit($ca_pem) . q{ FROM calabi_push.destinations WHERE name = 'noca'}),
	't', 'ca_pem is stored as given');
sql(q{SELECT calabi_push.start_sync('ca_s')});
ok(wait_run_complete('ca_s'), 'ca_pem of the test CA: the run completes');
is(sync_status($node, 'ca_s', 'state'), 'idle', 'ca_pem of the test CA: idle, not in error');
assert_dest_equals_source($node, 'public', 't_ca', 'ca_pem of the test CA');
ok(scalar(grep { accepted($_) } @{ ingest_requests($recv, 'ca_s') }) >= 3,
	'ca_pem of the test CA: batches accepted by the endpoint');

# ---------------------------------------------------------------------------
# (b) mutual TLS
# ---------------------------------------------------------------------------
my $mtls = CalabiReceiver->start(
	node => $node,
	dbname => 'dest_mtls',
	token => $TOKEN,
	client_ca => 1,
	name => 'mtls');
make_table('t_mtls', 30);
sql("SELECT calabi_push.create_destination('mtls', " . lit($mtls->url) . ", token => " . lit($TOKEN)
	  . ", options => " . jsonb({ ca_pem => $ca_pem }) . ")");
create_sync('mtls_s', 'mtls', 't_mtls');
$t0 = db_now();
sql(q{SELECT calabi_push.start_sync('mtls_s')});
ok($node->poll_query_until('postgres', q{
	SELECT state = 'retrying' AND retries >= 2 AND last_error IS NOT NULL
	  FROM calabi_push.sync_status WHERE name = 'mtls_s'}),
	'mutual TLS without a client certificate: the sync retries');
my $mtls_error = sync_status($node, 'mtls_s', 'last_error');
note("mutual TLS without a client certificate: last_error: $mtls_error");
# libcurl reports the refused handshake either as the server's alert
# ("tlsv13 alert certificate required") or, when the server has already
# closed the connection, as "getpeername() failed ...": any transport
# failure text will do, as long as each attempt is logged as not delivered
like(slurp_file($node->logfile), qr/LOG:  batch \d+ not delivered, retrying[^\n]*\n(?:(?:[^\n]*(?:DETAIL|HINT):  |\t)[^\n]*\n)*[^\n]*CONTEXT:  (?:[^\n]*\n\t)*calabi_push sync "mtls_s"\n/,
	'mutual TLS without a client certificate: the failed attempts are logged as transient');
is(sync_status($node, 'mtls_s', 'batches_sent'), '0', 'mutual TLS without a client certificate: nothing delivered');
is(scalar(grep { accepted($_) } @{ ingest_requests($mtls, 'mtls_s') }), 0,
	'mutual TLS without a client certificate: no request accepted');
ok(dest_table_absent('dest_mtls', 't_mtls'), 'mutual TLS without a client certificate: nothing landed');

# a client certificate of another CA, set on the running sync: its worker
# restarts with it (alter_destination) and is refused as well
my $pid = sync_status($node, 'mtls_s', 'coalesce(pid, 0)');
$t0 = db_now();
sql("SELECT calabi_push.alter_destination('mtls', options => "
	  . jsonb({ client_cert => $other_client_cert, client_key => $other_client_key }) . ")");
ok($node->poll_query_until('postgres', qq{
	SELECT state = 'retrying' AND last_error_at > '$t0' AND pid IS DISTINCT FROM $pid
	       AND batches_sent = 0
	  FROM calabi_push.sync_status WHERE name = 'mtls_s'}),
	'a client certificate of another CA: the restarted worker is refused too');
is(sql(q{SELECT has_client_key FROM calabi_push.destinations WHERE name = 'mtls'}), 't',
	'the destinations view says a client key is set');
unlike(sql(q{SELECT options::text FROM calabi_push.destinations WHERE name = 'mtls'}),
	qr/PRIVATE KEY/, 'the client key is not among the options shown');

# the right client certificate, still on the running sync: it delivers
sql("SELECT calabi_push.alter_destination('mtls', options => "
	  . jsonb({ client_cert => $client_cert, client_key => $client_key }) . ")");
ok(wait_run_complete('mtls_s'), 'mutual TLS with the client certificate: the run completes');
is(sync_status($node, 'mtls_s', 'state'), 'idle', 'mutual TLS with the client certificate: idle');
assert_dest_equals_source_in($node, 'postgres', 'dest_mtls', 'public', 't_mtls',
	'mutual TLS with the client certificate');

# ---------------------------------------------------------------------------
# (c) a wrong static token: 401, the sync stops in error
# ---------------------------------------------------------------------------
make_table('t_tok', 30);
sql("SELECT calabi_push.create_destination('badtok', " . lit($recv->url) . ", token => " . lit($WRONG_TOKEN)
	  . ", options => " . jsonb({ ca_pem => $ca_pem }) . ")");
create_sync('tok_s', 'badtok', 't_tok');
sql(q{SELECT calabi_push.start_sync('tok_s')});
ok(wait_for_state($node, 'tok_s', 'error'), 'wrong token: the sync stops in error');
like(sync_status($node, 'tok_s', 'last_error'), qr/HTTP 401/, 'wrong token: last_error shows HTTP 401');
is(sync_status($node, 'tok_s', 'batches_sent'), '0', 'wrong token: nothing acknowledged');
$node->safe_psql('postgres', 'SELECT pg_sleep(1.5)');
is(sync_status($node, 'tok_s', 'state'), 'error', 'wrong token: not restarted by itself');
my @tok_reqs = @{ ingest_requests($recv, 'tok_s') };
is(join(',', map { $_->{status} // 'none' } @tok_reqs), '401',
	'wrong token: one request, answered 401, not retried');
ok(dest_table_absent('calabi_dest', 't_tok'), 'wrong token: nothing landed');

sql("SELECT calabi_push.alter_destination('badtok', token => " . lit($TOKEN) . ")");
sql(q{SELECT calabi_push.start_sync('tok_s')});
ok(wait_run_complete('tok_s'), 'token fixed: the run completes');
is(sync_status($node, 'tok_s', 'state'), 'idle', 'token fixed: idle');
assert_dest_equals_source($node, 'public', 't_tok', 'token fixed');

# ---------------------------------------------------------------------------
# (d) OAuth2 client credentials
# ---------------------------------------------------------------------------
# tokens live 6 s: the sender refreshes them at 90 % of their life (5.4 s)
my $oauth = CalabiReceiver->start(
	node => $node,
	dbname => 'dest_oauth',
	oauth => "$OAUTH_ID:$OAUTH_SECRET",
	oauth_expires_in => 6,
	name => 'oauth');
make_table('t_oauth', 60);
sql("SELECT calabi_push.create_destination('oauth', " . lit($oauth->url) . ", options => "
	  . jsonb({
		token_url => $oauth->token_url,
		client_id => $OAUTH_ID,
		client_secret => $OAUTH_SECRET,
		ca_pem => $ca_pem
	  })
	  . ")");
is(sql(q{SELECT has_client_secret AND NOT has_token FROM calabi_push.destinations WHERE name = 'oauth'}),
	't', 'OAuth2 destination: the client secret is kept as a secret');
create_sync('oauth_s', 'oauth', 't_oauth');

sub token_requests { return [ grep { ($_->{path} // '') eq '/oauth/token' } @{ $_[0] } ] }

# run 1: the first two batches take 3 s each, so the third is sent after
# the first token's refresh point: a new token is fetched before it expires
$oauth->fault({ kind => 'stall', seconds => 3, count => 2 });
sql(q{SELECT calabi_push.start_sync('oauth_s')});
ok(wait_run_complete('oauth_s'), 'OAuth2: the run completes');
is(sync_status($node, 'oauth_s', 'state || \' \' || coalesce(last_error, \'-\')'), 'idle -',
	'OAuth2: idle, no error');
assert_dest_equals_source_in($node, 'postgres', 'dest_oauth', 'public', 't_oauth', 'OAuth2');
my @run1 = @{ $oauth->requests };
my @run1_tokens = @{ token_requests(\@run1) };
ok(@run1_tokens >= 2, 'OAuth2: a token was fetched again as the first one neared expiry ('
	  . scalar(@run1_tokens) . ' token requests)');
ok(!(grep { ($_->{status} // 0) != 200 } @run1_tokens), 'OAuth2: every token request succeeded');
is(scalar(grep { ($_->{status} // 0) == 401 } @{ ingest_requests($oauth, 'oauth_s') }), 0,
	'OAuth2: no batch was sent with an expired token (no 401)');

# run 2: the tokens are revoked while the worker holds one
sql(q{UPDATE t_oauth SET label = 'after revocation ' || id WHERE id % 7 = 0});
my $since = scalar(@run1);
$oauth->fault({ kind => 'stall', seconds => 3, count => 1 });
sql(q{SELECT calabi_push.start_sync('oauth_s')});
ok( wait_until(
		sub {
			my @r = @{ $oauth->requests };
			return scalar(@{ token_requests([ @r[ $since .. $#r ] ]) }) >= 1;
		},
		60),
	'OAuth2 run 2: the new worker fetched a token');
$oauth->revoke_tokens;
ok(wait_run_complete('oauth_s'), 'OAuth2 after revocation: the run completes');
is(sync_status($node, 'oauth_s', 'state || \' \' || coalesce(last_error, \'-\')'), 'idle -',
	'OAuth2 after revocation: idle, no error');
assert_dest_equals_source_in($node, 'postgres', 'dest_oauth', 'public', 't_oauth',
	'OAuth2 after revocation');
my @all = @{ $oauth->requests };
my @run2 = @all[ $since .. $#all ];
my @run2_tokens = @{ token_requests(\@run2) };
my @run2_ingest = @{ ingest_requests($oauth, 'oauth_s', $since) };
my @refused = grep { ($_->{status} // 0) == 401 } @run2_ingest;
ok(scalar(@refused) >= 1, 'OAuth2 after revocation: the revoked token was refused (401)');
ok(@run2_tokens >= 2, 'OAuth2 after revocation: the token endpoint was called again ('
	  . scalar(@run2_tokens) . ' token requests)');
{
	# the position in the log of the first 401, and of the last token request
	my ($first_401) = grep { ($run2[$_]{status} // 0) == 401 && ($run2[$_]{path} // '') eq '/ingest' } 0 .. $#run2;
	my ($last_token) = reverse grep { ($run2[$_]{path} // '') eq '/oauth/token' } 0 .. $#run2;
	ok(defined $first_401 && defined $last_token && $last_token > $first_401,
		'OAuth2 after revocation: a new token was fetched after the 401');
}
my %final;
$final{ $_->{batch_seq} } = $_->{status} // 0 for @run2_ingest;
is(join(',', grep { $final{$_} != 200 && $final{$_} != 409 } sort { $a <=> $b } keys %final), '',
	'OAuth2 after revocation: every batch was accepted in the end (none refused for good)');
ok(!(grep { my $s = $final{ $_->{batch_seq} }; $s != 200 && $s != 409 } @refused),
	'OAuth2 after revocation: the batch refused with 401 was sent again and accepted');

# a 401 that a fresh token does not cure stops the sync in error
$oauth->fault({ kind => 'refuse', status => 401, error => 'token not accepted', count => -1 });
$since = scalar(@{ $oauth->requests });
sql(q{SELECT calabi_push.start_sync('oauth_s')});
ok(wait_for_state($node, 'oauth_s', 'error'), 'OAuth2, 401 even with a fresh token: the sync stops in error');
like(sync_status($node, 'oauth_s', 'last_error'), qr/HTTP 401.*after fetching a new OAuth2 token/,
	'OAuth2, 401 even with a fresh token: last_error says so');
{
	my @r = @{ $oauth->requests };
	@r = @r[ $since .. $#r ];
	is(join(' ', map { ($_->{path} eq '/oauth/token' ? 'token' : 'ingest') . ':' . ($_->{status} // '-') } @r),
		'token:200 ingest:401 token:200 ingest:401',
		'OAuth2, 401 even with a fresh token: one new token, one more try, then no more');
}
$oauth->clear_faults;
sql(q{SELECT calabi_push.start_sync('oauth_s')});
ok(wait_run_complete('oauth_s'), 'OAuth2, endpoint fixed: the run completes');
is(sync_status($node, 'oauth_s', 'state'), 'idle', 'OAuth2, endpoint fixed: idle');
assert_dest_equals_source_in($node, 'postgres', 'dest_oauth', 'public', 't_oauth', 'OAuth2, endpoint fixed');

# a wrong client secret: the token endpoint refuses it, the sync stops in error
make_table('t_oauth_bad', 10);
sql("SELECT calabi_push.create_destination('oauth_bad', " . lit($oauth->url) . ", options => "
	  . jsonb({
		token_url => $oauth->token_url,
		client_id => $OAUTH_ID,
		client_secret => $WRONG_SECRET,
		ca_pem => $ca_pem
	  })
	  . ")");
create_sync('oauth_bad_s', 'oauth_bad', 't_oauth_bad');
sql(q{SELECT calabi_push.start_sync('oauth_bad_s')});
ok(wait_for_state($node, 'oauth_bad_s', 'error'), 'OAuth2, wrong client secret: the sync stops in error');
like(sync_status($node, 'oauth_bad_s', 'last_error'), qr/OAuth2 token endpoint: HTTP 401.*invalid_client/,
	'OAuth2, wrong client secret: last_error shows the token endpoint\'s 401');
is(scalar(@{ ingest_requests($oauth, 'oauth_bad_s') }), 0, 'OAuth2, wrong client secret: no batch was sent');

# ---------------------------------------------------------------------------
# (e) plain http: only with allow_http, only to loopback
# ---------------------------------------------------------------------------
my $err = sql_error($node, 'postgres',
	q{SELECT calabi_push.create_destination('plain', 'http://localhost:9/ingest', token => 'x')});
is($err && $err->{sqlstate}, '22023', 'http:// without allow_http: refused (22023)');
like($err && $err->{message}, qr/must use https/, 'http:// without allow_http: the message says https');
like($err && $err->{hint}, qr/allow_http/, 'http:// without allow_http: the hint names allow_http');
$err = sql_error($node, 'postgres',
	q{SELECT calabi_push.create_destination('plain', 'http://calabi.example/ingest', token => 'x',
	    options => '{"allow_http": true}')});
is($err && $err->{sqlstate}, '22023', 'http:// to a non-loopback host with allow_http: refused');
like($err && $err->{message}, qr/loopback/, 'http:// to a non-loopback host: the message says loopback');
$err = sql_error($node, 'postgres',
	q{SELECT calabi_push.create_destination('plain', 'https://localhost:9/ingest',
	    options => '{"token_url": "http://localhost:9/token", "client_id": "a", "client_secret": "b"}')});
is($err && $err->{sqlstate}, '22023', 'an http:// token_url without allow_http: refused');
is(sql(q{SELECT count(*) FROM calabi_push.destinations WHERE name = 'plain'}), '0',
	'no destination was created by the refused calls');

my $plain = CalabiReceiver->start(
	node => $node,
	dbname => 'dest_http',
	token => $TOKEN,
	plain_http => 1,
	name => 'http');
like($plain->url, qr{^http://localhost:}, 'the plain receiver serves http://');
make_table('t_http', 30);
sql("SELECT calabi_push.create_destination('plain', " . lit($plain->url) . ", token => " . lit($TOKEN)
	  . q{, options => '{"allow_http": true}')});
create_sync('http_s', 'plain', 't_http');
sql(q{SELECT calabi_push.start_sync('http_s')});
ok(wait_run_complete('http_s'), 'http:// with allow_http to loopback: the run completes');
is(sync_status($node, 'http_s', 'state'), 'idle', 'http:// with allow_http: idle');
assert_dest_equals_source_in($node, 'postgres', 'dest_http', 'public', 't_http', 'http:// with allow_http');

# ---------------------------------------------------------------------------
# (f) an HTTP CONNECT proxy
# ---------------------------------------------------------------------------
my $proxy = start_connect_proxy(name => 'proxy');
make_table('t_proxy', 30);
sql("SELECT calabi_push.create_destination('proxied', " . lit($recv->url) . ", token => " . lit($TOKEN)
	  . ", options => " . jsonb({ ca_pem => $ca_pem, proxy => $proxy->{url} }) . ")");
create_sync('proxy_s', 'proxied', 't_proxy');
sql(q{SELECT calabi_push.start_sync('proxy_s')});
ok(wait_run_complete('proxy_s'), 'through the proxy: the run completes');
is(sync_status($node, 'proxy_s', 'state'), 'idle', 'through the proxy: idle');
assert_dest_equals_source($node, 'public', 't_proxy', 'through the proxy');
my $connects = -e $proxy->{log_file} ? slurp_file($proxy->{log_file}) : '';
my $target = 'localhost:' . $recv->port;
like($connects, qr/^CONNECT \Q$target\E$/m, "the proxy tunnelled to $target (CONNECT)");
unlike($connects, qr/^(?:REFUSED|FAILED)/m, 'the proxy refused nothing');

# the proxy is really on the path: without it the sync cannot connect ...
$proxy->{stop}->();
sql(q{UPDATE t_proxy SET amount = amount + 1});
$t0 = db_now();
sql(q{SELECT calabi_push.start_sync('proxy_s')});
ok($node->poll_query_until('postgres', qq{
	SELECT state = 'retrying' AND last_error_at > '$t0'
	  FROM calabi_push.sync_status WHERE name = 'proxy_s'}),
	'the proxy stopped: the sync retries');
note('proxy down: last_error: ' . sync_status($node, 'proxy_s', 'last_error'));
# ... and once the option is removed (JSON null) it connects directly
sql(q{SELECT calabi_push.alter_destination('proxied', options => '{"proxy": null}')});
is(sql(q{SELECT options ? 'proxy' FROM calabi_push.destinations WHERE name = 'proxied'}), 'f',
	'"proxy": null removes the option');
ok($node->poll_query_until('postgres', q{
	SELECT state = 'idle' AND completed_at IS NOT NULL
	  FROM calabi_push.sync_status WHERE name = 'proxy_s'}),
	'without the proxy option: the restarted worker completes the run');
assert_dest_equals_source($node, 'public', 't_proxy', 'without the proxy option');

# ---------------------------------------------------------------------------
# (g) a rule broken in the catalog: the worker refuses the configuration
# with the message create_destination gives (one validator, src/destination.c)
# ---------------------------------------------------------------------------
$err = sql_error($node, 'postgres',
	"SELECT calabi_push.create_destination('both_ca', " . lit($recv->url) . ", token => " . lit($TOKEN)
	  . ", options => " . jsonb({ ca_file => $recv->ca_file, ca_pem => $ca_pem }) . ")");
is($err && $err->{sqlstate}, '22023', 'ca_file with ca_pem: create_destination refuses (22023)');
like($err && $err->{message}, qr/"ca_file" and "ca_pem" cannot be used together/,
	'ca_file with ca_pem: the message names both options');
make_table('t_both_ca', 10);
sql("SELECT calabi_push.create_destination('both_ca', " . lit($recv->url) . ", token => " . lit($TOKEN)
	  . ", options => " . jsonb({ ca_pem => $ca_pem }) . ")");
create_sync('both_ca_s', 'both_ca', 't_both_ca');
# as a hand-made row or an older version could have it
sql("UPDATE calabi_push.destination SET options = options || "
	  . jsonb({ ca_file => $recv->ca_file }) . " WHERE name = 'both_ca'");
sql(q{SELECT calabi_push.start_sync('both_ca_s')});
ok(wait_until(sub { (sync_status($node, 'both_ca_s', 'last_error') // '') =~ /cannot be used together/ }),
	'ca_file with ca_pem in the catalog: the worker refuses it')
  or diag(sync_status($node, 'both_ca_s', 'last_error'));
is(sync_status($node, 'both_ca_s', 'last_error'), $err && $err->{message},
	'ca_file with ca_pem: the worker\'s message is create_destination\'s');
is(scalar(@{ ingest_requests($recv, 'both_ca_s') }), 0, 'ca_file with ca_pem: no batch was sent');
sql(q{SELECT calabi_push.stop_sync('both_ca_s')});

# ---------------------------------------------------------------------------
# secrets
# ---------------------------------------------------------------------------
my $log = slurp_file($node->logfile);
my ($key_line) = grep { length($_) >= 40 && !/-----/ } split /\n/, $client_key;
my ($other_key_line) = grep { length($_) >= 40 && !/-----/ } split /\n/, $other_client_key;
ok(defined $key_line && defined $other_key_line, 'the client keys have a base64 line to look for');
unlike($log, qr/\Q$TOKEN\E/, 'the token never appears in the server log');
unlike($log, qr/\Q$WRONG_TOKEN\E/, 'the wrong token never appears in the server log');
unlike($log, qr/\Q$OAUTH_SECRET\E/, 'the client secret never appears in the server log');
unlike($log, qr/\Q$WRONG_SECRET\E/, 'the wrong client secret never appears in the server log');
unlike($log, qr/\Q$key_line\E/, 'the client key never appears in the server log');
unlike($log, qr/\Q$other_key_line\E/, 'the other client key never appears in the server log');
my $views = sql(q{
	SELECT (SELECT string_agg(d::text, ' ') FROM calabi_push.destinations d)
	    || (SELECT string_agg(s::text, ' ') FROM calabi_push.sync_status s)});
unlike($views, qr/\Q$TOKEN\E|\Q$WRONG_TOKEN\E|\Q$OAUTH_SECRET\E|\Q$WRONG_SECRET\E|\Q$key_line\E/,
	'no view shows a secret');
unlike($log, qr/terminated by signal|server process .* was terminated/,
	'no server process crashed');

$proxy->{stop}->();
$_->stop for ($recv, $mtls, $oauth, $plain);
$node->stop;
done_testing();
