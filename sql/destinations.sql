-- create_destination(), alter_destination(), drop_destination() and the
-- destinations view: options and their normalization, secrets kept apart
-- (and out of messages and of the server log), privileges, and every error
-- a user can cause.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- the roles: an administrator granted what docs/destinations.md says, a
-- second one, and one granted nothing but the schema
CREATE ROLE cp_dest_admin;
CREATE ROLE cp_dest_other;
CREATE ROLE cp_dest_nobody;
GRANT USAGE ON SCHEMA calabi_push TO cp_dest_admin, cp_dest_other, cp_dest_nobody;
GRANT EXECUTE ON FUNCTION
    calabi_push.create_destination(text, text, text, jsonb),
    calabi_push.alter_destination(text, text, text, jsonb),
    calabi_push.drop_destination(text)
  TO cp_dest_admin, cp_dest_other;
GRANT SELECT ON calabi_push.destinations TO cp_dest_admin, cp_dest_other;

-- nothing of calabi_push is executable or readable without a grant
SET ROLE cp_dest_nobody;
SELECT calabi_push.create_destination('nope', 'https://ingest.example.com/');
SELECT calabi_push.drop_destination('nope');
SELECT * FROM calabi_push.destinations;
RESET ROLE;
SELECT p.oid::regprocedure AS executable_without_a_grant
  FROM pg_proc p
 WHERE p.pronamespace = 'calabi_push'::regnamespace
   AND has_function_privilege('cp_dest_nobody', p.oid, 'EXECUTE');
-- (but the functions the sync_status and stream_status views call as the
-- role that queries them: _sync_runtime(), _copied() and _standby_state()
-- each refuse roles that may not read sync_status; _runs_here(),
-- _sync_state() and _stream_state() only compute from what they are given)
SET ROLE cp_dest_nobody;
SELECT count(*) FROM calabi_push._sync_runtime();
SELECT calabi_push._standby_state('00000000-0000-0000-0000-000000000000');
SELECT count(*) FROM calabi_push.sync_status;
RESET ROLE;
SELECT has_table_privilege('cp_dest_nobody', 'calabi_push.destinations', 'SELECT') AS nobody_reads_view;

-- the public functions are C entry points that run as the caller (they
-- take its identity); their _-prefixed implementations run as the owner with
-- a fixed search_path, and those that take secrets keep failing statements
-- out of the server log
SELECT p.proname, l.lanname, p.prosecdef, p.proconfig
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace = 'calabi_push'::regnamespace
   AND (p.proname IN ('create_destination', 'alter_destination', 'drop_destination')
        OR p.proname IN (SELECT '_' || n FROM unnest(ARRAY['create_destination', 'alter_destination', 'drop_destination']) n))
 ORDER BY 1;

------------------------------------------------------------------------------
-- happy paths, as the administrator
SET ROLE cp_dest_admin;

-- defaults filled in
SELECT calabi_push.create_destination('plain', 'https://ingest.example.com/v1/batches');
-- a token, and every kind of option normalized: scheme and host in lower
-- case, durations in milliseconds (interval text or seconds)
SELECT calabi_push.create_destination('main', 'HTTPS://Ingest.Example.COM:8443/v1/batches?tenant=7',
    token => 'tok-main-1',
    options => '{"compression": "none", "connect_timeout": "2.5s", "request_timeout": 90,
                 "proxy": "SOCKS5H://Proxy.Internal:1080/"}');
-- OAuth2 client credentials (the secret goes apart), mutual TLS (the key goes
-- apart), a CA given as text
SELECT calabi_push.create_destination('oauth', 'https://[2001:DB8::1]/ingest',
    options => '{"token_url": "https://auth.example.com/oauth/token", "client_id": "calabi-push",
                 "client_secret": "oauth-secret-1", "scope": "ingest:write ingest:read",
                 "request_timeout": "2 minutes",
                 "ca_pem": "-----BEGIN CERTIFICATE-----\nMIIBCA==\n-----END CERTIFICATE-----\n",
                 "client_cert": "-----BEGIN CERTIFICATE-----\nMIIBCQ==\n-----END CERTIFICATE-----\n",
                 "client_key": "-----BEGIN PRIVATE KEY-----\nkey-material-1\n-----END PRIVATE KEY-----\n"}');
-- plain http only to a loopback host, with allow_http; options given as
-- JSON null are simply not set
SELECT calabi_push.create_destination('local', 'http://localhost:8080/ingest',
    options => '{"allow_http": true, "proxy": null}');
SELECT calabi_push.create_destination('local4', 'http://127.0.0.2:8080/',
    options => '{"allow_http": true}');
SELECT calabi_push.create_destination('local6', 'http://[::1]/',
    options => '{"allow_http": true}');
-- allow_http does not forbid https
SELECT calabi_push.create_destination('local-tls', 'https://localhost:8443/',
    options => '{"allow_http": true}');

SELECT name, url, has_token, has_client_key, has_client_secret,
       created_by, now() - created_at < interval '1 minute' AS created_just_now
  FROM calabi_push.destinations ORDER BY name COLLATE "C";
SELECT name, o.key, o.value
  FROM calabi_push.destinations, jsonb_each(options) o ORDER BY name COLLATE "C", o.key COLLATE "C";
RESET ROLE;

-- the defaults come from the library (src/destination.h), the one place that
-- defines them: what "plain" was stored with
SELECT calabi_push._destination_defaults();
SELECT options = calabi_push._destination_defaults() AS plain_has_the_defaults
  FROM calabi_push.destination WHERE name = 'plain';

-- the secrets are in destination_secret only: never in the options
SELECT d.name, d.options ?| ARRAY['token', 'client_secret', 'client_key'] AS options_hold_a_secret,
       d.options::text ~ '(tok-main|oauth-secret|key-material)' AS options_hold_a_secret_value,
       s.token, s.client_secret, s.client_key
  FROM calabi_push.destination d
  JOIN calabi_push.destination_secret s ON s.destination = d.name
 ORDER BY d.name COLLATE "C";
-- nor in the view
SELECT count(*) AS view_rows_with_a_secret_value
  FROM calabi_push.destinations v
 WHERE v::text ~ '(tok-main|oauth-secret|key-material)';

-- the caller is the role set with SET ROLE, else the session user, even
-- inside these SECURITY DEFINER functions
SET SESSION AUTHORIZATION cp_dest_other;
SELECT calabi_push.create_destination('other', 'https://other.example.com/');
RESET SESSION AUTHORIZATION;
SET ROLE cp_dest_admin;
SELECT calabi_push.create_destination('admin-again', 'https://admin.example.com/');
RESET ROLE;
SELECT name, created_by FROM calabi_push.destinations
 WHERE name IN ('other', 'admin-again') ORDER BY name COLLATE "C";

------------------------------------------------------------------------------
-- alter_destination: NULL leaves a setting alone; options are merged key by
-- key; a key given as JSON null goes back to its default or is unset; a
-- secret given replaces the stored one; token => '' removes the token
SET ROLE cp_dest_admin;
SELECT calabi_push.alter_destination('main', options => '{"connect_timeout": 3}');
SELECT url, options, has_token FROM calabi_push.destinations WHERE name = 'main';
-- a new URL (or proxy) would take the stored token elsewhere: a role other
-- than a superuser must give it again
SELECT calabi_push.alter_destination('main', url => 'https://ingest2.example.com/v2',
    options => '{"compression": null, "proxy": null, "request_timeout": "45s"}');
SELECT calabi_push.alter_destination('main', url => 'https://ingest2.example.com/v2',
    token => 'tok-main-1',
    options => '{"compression": null, "proxy": null, "request_timeout": "45s"}');
SELECT url, options, has_token FROM calabi_push.destinations WHERE name = 'main';
SELECT calabi_push.alter_destination('main', token => 'tok-main-2');
SELECT calabi_push.alter_destination('oauth', options => '{"client_secret": "oauth-secret-2", "scope": null}');
SELECT calabi_push.alter_destination('oauth', options => '{"client_cert": null, "client_key": null}');
SELECT name, options, has_token, has_client_key, has_client_secret
  FROM calabi_push.destinations WHERE name IN ('main', 'oauth') ORDER BY name COLLATE "C";
RESET ROLE;
SELECT destination, token, client_secret, client_key
  FROM calabi_push.destination_secret WHERE destination IN ('main', 'oauth') ORDER BY 1;
SET ROLE cp_dest_admin;
-- nothing given: nothing changes
SELECT calabi_push.alter_destination('main');
-- from OAuth2 to a static token: remove the client credentials, set a token
SELECT calabi_push.alter_destination('oauth', token => 'tok-oauth-now-static',
    options => '{"token_url": null, "client_id": null, "client_secret": null}');
SELECT calabi_push.alter_destination('main', token => '');
SELECT name, options, has_token, has_client_key, has_client_secret
  FROM calabi_push.destinations WHERE name IN ('main', 'oauth') ORDER BY name COLLATE "C";
RESET ROLE;
SELECT destination, token, client_secret, client_key
  FROM calabi_push.destination_secret WHERE destination IN ('main', 'oauth') ORDER BY 1;

------------------------------------------------------------------------------
-- ownership: a destination is changed or dropped by members of the role
-- that created it (and superusers)
SET ROLE cp_dest_other;
SELECT calabi_push.alter_destination('main', url => 'https://attacker.example.com/');
SELECT calabi_push.drop_destination('main');
RESET ROLE;
GRANT cp_dest_admin TO cp_dest_other;
SET ROLE cp_dest_other;
SELECT calabi_push.alter_destination('main', options => '{"compression": "none"}');
RESET ROLE;
REVOKE cp_dest_admin FROM cp_dest_other;
SELECT calabi_push.alter_destination('other', options => '{"compression": "none"}');   -- superuser
SELECT name, options->>'compression' AS compression FROM calabi_push.destinations
 WHERE name IN ('main', 'other') ORDER BY name COLLATE "C";

------------------------------------------------------------------------------
-- drop_destination: refused while a sync uses it
CREATE SCHEMA cp_dest_test;
CREATE TABLE cp_dest_test.orders (id int PRIMARY KEY);
SELECT calabi_push.create_sync('orders-a', 'plain', ARRAY['cp_dest_test.orders']::regclass[]) IS NOT NULL AS created;
SELECT calabi_push.create_sync('orders-b', 'plain', ARRAY['cp_dest_test.orders']::regclass[]) IS NOT NULL AS created;
SET ROLE cp_dest_admin;
SELECT calabi_push.drop_destination('plain');
RESET ROLE;
SELECT calabi_push.drop_sync('orders-a');
SELECT calabi_push.drop_sync('orders-b');
SET ROLE cp_dest_admin;
SELECT calabi_push.drop_destination('plain');
SELECT calabi_push.drop_destination('oauth');
RESET ROLE;
-- its secrets went with it
SELECT count(*) AS secret_rows_left FROM calabi_push.destination_secret
 WHERE destination IN ('plain', 'oauth');
SET ROLE cp_dest_admin;
SELECT calabi_push.drop_destination('plain');
SELECT calabi_push.drop_destination(NULL);

------------------------------------------------------------------------------
-- errors a user can cause (as the administrator)
SELECT calabi_push.create_destination('oauth-mtls', 'https://x.example.com/',
    options => '{"token_url": "https://auth.example.com/token", "client_id": "c",
                 "client_secret": "oauth-secret-3",
                 "client_cert": "-----BEGIN CERTIFICATE-----\nMIIBCQ==\n-----END CERTIFICATE-----\n",
                 "client_key": "-----BEGIN RSA PRIVATE KEY-----\nkey-material-3\n-----END RSA PRIVATE KEY-----\n"}');

-- names
SELECT calabi_push.create_destination(NULL, 'https://x.example.com/');
SELECT calabi_push.create_destination('', 'https://x.example.com/');
SELECT calabi_push.create_destination('has space', 'https://x.example.com/');
SELECT calabi_push.create_destination(repeat('n', 64), 'https://x.example.com/');
SELECT calabi_push.create_destination('main', 'https://x.example.com/');
SELECT calabi_push.alter_destination('no-such', url => 'https://x.example.com/');
SELECT calabi_push.alter_destination(NULL, url => 'https://x.example.com/');

-- URLs
SELECT calabi_push.create_destination('bad', NULL);
SELECT calabi_push.create_destination('bad', '');
SELECT calabi_push.create_destination('bad', 'ingest.example.com/v1');
SELECT calabi_push.create_destination('bad', 'ftp://ingest.example.com/');
SELECT calabi_push.create_destination('bad', 'http://ingest.example.com/');
SELECT calabi_push.create_destination('bad', 'http://ingest.example.com/', options => '{"allow_http": true}');
SELECT calabi_push.create_destination('bad', 'http://128.0.0.1/', options => '{"allow_http": true}');
SELECT calabi_push.create_destination('bad', 'http://[::2]/', options => '{"allow_http": true}');
SELECT calabi_push.create_destination('bad', 'http://localhost.example.com/', options => '{"allow_http": true}');
SELECT calabi_push.create_destination('bad', 'https://user:hunter2@ingest.example.com/');
SELECT calabi_push.create_destination('bad', 'https://hunter2@ingest.example.com/');
SELECT calabi_push.create_destination('bad', 'https:///path');
SELECT calabi_push.create_destination('bad', 'https://ingest.example.com:/');
SELECT calabi_push.create_destination('bad', 'https://ingest.example.com:0/');
SELECT calabi_push.create_destination('bad', 'https://ingest.example.com:65536/');
SELECT calabi_push.create_destination('bad', 'https://ingest.example.com:https/');
SELECT calabi_push.create_destination('bad', 'https://ingest.example.com/v1#part');
SELECT calabi_push.create_destination('bad', 'https://ingest.example.com/v1 batches');
SELECT calabi_push.create_destination('bad', E'https://ingest.example.com/v1\r\nX-Injected: 1');
SELECT calabi_push.create_destination('bad', 'https://ingést.example.com/');
SELECT calabi_push.create_destination('bad', 'https://ingest..example.com/');
SELECT calabi_push.create_destination('bad', 'https://-ingest.example.com/');
SELECT calabi_push.create_destination('bad', 'https://256.1.1.1/');
SELECT calabi_push.create_destination('bad', 'https://127.1/');
SELECT calabi_push.create_destination('bad', 'https://[::1/');
SELECT calabi_push.create_destination('bad', 'https://[fe80::1%25eth0]/');
SELECT calabi_push.create_destination('bad', 'https://[1.2.3.4]/');
SELECT calabi_push.create_destination('bad', 'https://ingest.example.com\evil/');
-- a URL change is checked as well, against the options in force
SELECT calabi_push.alter_destination('local', url => 'http://ingest.example.com/');
SELECT calabi_push.alter_destination('main', url => 'http://localhost/');
SELECT calabi_push.alter_destination('local', options => '{"allow_http": null}');

-- where a sync may send (calabi_push.allowed_hosts; this instance lists
-- 127.0.0.0/8 and ::1/128): a literal address or localhost is judged at
-- once, for the URL, token_url and the proxy.  Link-local and metadata
-- addresses never, private and other special ones only when listed, also
-- when written as IPv4-mapped or NAT64 IPv6 or in a numeric form a
-- resolver accepts
SELECT calabi_push.create_destination('bad', 'https://169.254.169.254/latest/meta-data/');
SELECT calabi_push.create_destination('bad', 'https://[fd00:ec2::254]/');
SELECT calabi_push.create_destination('bad', 'https://100.100.100.200/');
SELECT calabi_push.create_destination('bad', 'https://[fe80::1]/');
SELECT calabi_push.create_destination('bad', 'https://[::ffff:169.254.169.254]/');
SELECT calabi_push.create_destination('bad', 'https://[64:ff9b::a9fe:a9fe]/');
SELECT calabi_push.create_destination('bad', 'https://10.96.0.1/api');
SELECT calabi_push.create_destination('bad', 'https://172.16.0.1/');
SELECT calabi_push.create_destination('bad', 'https://192.168.1.10/');
SELECT calabi_push.create_destination('bad', 'https://100.64.0.1/');
SELECT calabi_push.create_destination('bad', 'https://0.0.0.0:5432/');
SELECT calabi_push.create_destination('bad', 'https://[fd12:3456::1]/');
SELECT calabi_push.create_destination('bad', 'https://[::]/');
SELECT calabi_push.create_destination('bad', 'https://[::ffff:10.0.0.5]/');
SELECT calabi_push.create_destination('bad', 'https://0x0a.0.0.1/');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/',
    options => '{"token_url": "https://10.0.0.8/token", "client_id": "a", "client_secret": "b"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"proxy": "http://10.1.2.3:3128"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"proxy": "socks5h://169.254.169.254:1080"}');
SELECT calabi_push.alter_destination('main', url => 'https://192.168.0.1/');
SELECT calabi_push.alter_destination('main', options => '{"proxy": "http://[fc00::1]:3128"}');
-- public addresses, host names (judged when connecting) and the listed
-- loopback are accepted
SELECT calabi_push.create_destination('public4', 'https://203.0.113.7/');
SELECT calabi_push.create_destination('public6', 'https://[2001:db8::7]/',
    options => '{"proxy": "http://127.0.0.1:3128"}');
SELECT calabi_push.create_destination('named', 'https://ingest.internal/',
    options => '{"proxy": "http://proxy.internal:3128"}');
SELECT calabi_push.drop_destination(d) FROM unnest(ARRAY['public4', 'public6', 'named']) d;
RESET ROLE;

-- the list is the superuser's: other roles can neither set nor see it
SET ROLE cp_dest_admin;
SET calabi_push.allowed_hosts = '10.0.0.0/8';
SHOW calabi_push.allowed_hosts;
ALTER SYSTEM SET calabi_push.allowed_hosts = '10.0.0.0/8';
RESET ROLE;
-- (not even a superuser in a session: it is server-wide)
SET calabi_push.allowed_hosts = '10.0.0.0/8';
SHOW calabi_push.allowed_hosts;
-- a bad entry is refused, nothing is written
ALTER SYSTEM SET calabi_push.allowed_hosts = '127.0.0.1/33';
ALTER SYSTEM SET calabi_push.allowed_hosts = '10.1.2.3/8';
ALTER SYSTEM SET calabi_push.allowed_hosts = '*.example.com';
ALTER SYSTEM SET calabi_push.allowed_hosts = '127.1';
ALTER SYSTEM SET calabi_push.allowed_hosts = 'ingest..internal';
ALTER SYSTEM SET calabi_push.allowed_hosts = 'ingest.internal..';
ALTER SYSTEM SET calabi_push.allowed_hosts = '[::1';
ALTER SYSTEM SET calabi_push.allowed_hosts = 'fd00::/129';
ALTER SYSTEM SET calabi_push.allowed_hosts = 'ingest.internal/24';
-- good ones are taken (and reset again: nothing here reloads)
ALTER SYSTEM SET calabi_push.allowed_hosts = '127.0.0.1/32, ::1/128, [fd00::1], 10.0.0.0/8, Ingest.Internal., ';
ALTER SYSTEM RESET calabi_push.allowed_hosts;
SET ROLE cp_dest_admin;

-- the options argument and unknown options: there is no option to turn
-- certificate or host name verification off
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '[]');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '"gzip"');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"verify": false}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"insecure": true}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"connect_timeout_ms": 5000}');
SELECT calabi_push.alter_destination('main', options => '{"ssl_verify_peer": null}');

-- option types and values
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"allow_http": "yes"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"compression": "zstd"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"compression": 1}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"compression": ""}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"connect_timeout": "soon"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"connect_timeout": true}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"connect_timeout": 0.05}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"connect_timeout": "6 minutes"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"request_timeout": "-5s"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"request_timeout": "1 day"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"request_timeout": 1e400}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"proxy": "ftp://proxy.example.com"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"proxy": "proxy.example.com:3128"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"proxy": "http://user:pw@proxy.example.com:3128"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"proxy": "http://proxy.example.com:3128/path"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"proxy": 3128}');

-- TLS options
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"ca_pem": "MIIBCA=="}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"ca_pem": "-----BEGIN CERTIFICATE-----\nMIIBCA=="}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/',
    options => '{"client_cert": "-----BEGIN CERTIFICATE-----\nMIIBCQ==\n-----END CERTIFICATE-----\n"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/',
    options => '{"client_key": "-----BEGIN PRIVATE KEY-----\nkey-material-x\n-----END PRIVATE KEY-----\n"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/',
    options => '{"client_cert": "-----BEGIN CERTIFICATE-----\nMIIBCQ==\n-----END CERTIFICATE-----\n",
                 "client_key": "key-material-x"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/',
    options => '{"client_cert": "-----BEGIN CERTIFICATE-----\nMIIBCQ==\n-----END CERTIFICATE-----\n",
                 "client_key": "-----BEGIN ENCRYPTED PRIVATE KEY-----\nkey-material-x\n-----END ENCRYPTED PRIVATE KEY-----\n"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/',
    options => '{"client_cert": "-----BEGIN CERTIFICATE-----\nMIIBCQ==\n-----END CERTIFICATE-----\n",
                 "client_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nkey-material-x\n-----END OPENSSH PRIVATE KEY-----\n"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/',
    options => '{"client_cert": "-----BEGIN CERTIFICATE-----\nMIIBCQ==\n-----END CERTIFICATE-----\n",
                 "client_key": {"pem": "key-material-x"}}');
-- removing half of a pair
SELECT calabi_push.alter_destination('oauth-mtls', options => '{"client_key": null}');
-- ca_file makes the server read a file: it needs pg_read_server_files
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"ca_file": "/etc/ssl/certs/ca-certificates.crt"}');

-- authentication
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', token => '');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', token => 'Bearer tok-bad-1');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', token => E'tok-bad-2\r\nX-Injected: 1');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/',
    options => '{"token_url": "https://auth.example.com/token", "client_id": "c"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/',
    options => '{"client_secret": "oauth-secret-x"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', token => 'tok-bad-3',
    options => '{"token_url": "https://auth.example.com/token", "client_id": "c", "client_secret": "oauth-secret-x"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/',
    options => '{"token_url": "http://auth.example.com/token", "client_id": "c", "client_secret": "oauth-secret-x"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/',
    options => '{"token_url": "https://auth.example.com/token", "client_id": "c", "client_secret": 42}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/',
    options => '{"token_url": "https://auth.example.com/token", "client_id": "c\n", "client_secret": "oauth-secret-x"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/',
    options => '{"token_url": "https://auth.example.com/token", "client_id": "c", "client_secret": "oauth-secret-x\n"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"scope": "ingest:write"}');
-- a token cannot be added to a destination that uses OAuth2
SELECT calabi_push.alter_destination('oauth-mtls', token => 'tok-bad-4');
-- no message above holds a secret's value, and nothing was created
RESET ROLE;
SELECT count(*) AS bad_destinations FROM calabi_push.destination WHERE name = 'bad';
SELECT s.token, s.client_secret, s.client_key IS NOT NULL AS has_client_key
  FROM calabi_push.destination_secret s WHERE s.destination = 'oauth-mtls';

------------------------------------------------------------------------------
-- ca_file, as a superuser (paths under the data directory are shown as
-- $PGDATA): a PEM bundle the server can read
DO $$
BEGIN
    EXECUTE format('COPY (VALUES (%L), (%L), (%L)) TO %L',
                   '-----BEGIN CERTIFICATE-----', 'MIIBCA==', '-----END CERTIFICATE-----',
                   current_setting('data_directory') || '/cp_test_ca.pem');
END
$$;
-- try(statement): 'ok', or the SQLSTATE, message and hint of its error
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    msg text;
    hint text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN format('%s: %s (hint: %s)', SQLSTATE, msg, hint);
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.try(text) TO cp_dest_admin;
SELECT pg_temp.try(format('SELECT calabi_push.create_destination(%L, %L, options => %L)',
    'with-ca-file', 'https://x.example.com/',
    jsonb_build_object('ca_file', current_setting('data_directory') || '/cp_test_ca.pem')));
SELECT name, replace(options->>'ca_file', current_setting('data_directory'), '$PGDATA') AS ca_file
  FROM calabi_push.destinations WHERE name = 'with-ca-file';
-- not a PEM file, a directory, a missing file, a relative path, both ca_file
-- and ca_pem
SELECT replace(pg_temp.try(format('SELECT calabi_push.create_destination(%L, %L, options => %L)',
                   'bad', 'https://x.example.com/', jsonb_build_object('ca_file', f))),
               current_setting('data_directory'), '$PGDATA') AS error
  FROM unnest(ARRAY[current_setting('data_directory') || '/PG_VERSION',
                    current_setting('data_directory'),
                    current_setting('data_directory') || '/no-such-file.pem',
                    'cp_test_ca.pem']) f;
SELECT pg_temp.try(format('SELECT calabi_push.alter_destination(%L, options => %L)', 'with-ca-file',
    '{"ca_pem": "-----BEGIN CERTIFICATE-----\nMIIBCA==\n-----END CERTIFICATE-----\n"}'));
SELECT calabi_push.drop_destination('with-ca-file');
-- a superuser sets ca_file on the administrator's destination: the
-- administrator may still change its other options, not ca_file
SELECT pg_temp.try(format('SELECT calabi_push.alter_destination(%L, options => %L)',
    'main', jsonb_build_object('ca_file', current_setting('data_directory') || '/cp_test_ca.pem')));
SET ROLE cp_dest_admin;
SELECT calabi_push.alter_destination('main', options => '{"connect_timeout": 4}');
RESET ROLE;
SELECT replace(options->>'ca_file', current_setting('data_directory'), '$PGDATA') AS ca_file,
       options->>'connect_timeout_ms' AS connect_timeout_ms
  FROM calabi_push.destinations WHERE name = 'main';
SET ROLE cp_dest_admin;
SELECT calabi_push.alter_destination('main', options => '{"ca_file": "/etc/hosts"}');
SELECT calabi_push.alter_destination('main', options => '{"ca_file": null}');
SELECT options ? 'ca_file' AS has_ca_file FROM calabi_push.destinations WHERE name = 'main';
RESET ROLE;

------------------------------------------------------------------------------
-- error codes of the errors above, one of each kind.  A sync of 'local' for
-- the last one (its role needs USAGE on the schema first)
SELECT calabi_push.create_sync('uses-local', 'local', ARRAY['cp_dest_test.orders']::regclass[],
    options => '{"run_as": "cp_dest_admin"}') IS NOT NULL AS created;
GRANT USAGE ON SCHEMA cp_dest_test TO cp_dest_admin;
GRANT SELECT ON cp_dest_test.orders TO cp_dest_admin;
SELECT calabi_push.create_sync('uses-local', 'local', ARRAY['cp_dest_test.orders']::regclass[],
    options => '{"run_as": "cp_dest_admin"}') IS NOT NULL AS created;
SET ROLE cp_dest_admin;
SELECT stmt, pg_temp.try(stmt) FROM (VALUES
    ('SELECT calabi_push.create_destination(NULL, ''https://x.example.com/'')'),
    ('SELECT calabi_push.create_destination(''a b'', ''https://x.example.com/'')'),
    ('SELECT calabi_push.create_destination(''main'', ''https://x.example.com/'')'),
    ('SELECT calabi_push.alter_destination(''no-such'')'),
    ('SELECT calabi_push.create_destination(''bad'', NULL)'),
    ('SELECT calabi_push.create_destination(''bad'', ''http://x.example.com/'')'),
    ('SELECT calabi_push.create_destination(''bad'', ''https://x.example.com/'', options => ''{"verify": false}'')'),
    ('SELECT calabi_push.create_destination(''bad'', ''https://x.example.com/'', options => ''{"ca_file": "/etc/hosts"}'')'),
    ('SELECT calabi_push.alter_destination(''other'', options => ''{"compression": "none"}'')'),
    ('SELECT calabi_push.drop_destination(''local'')')
  ) v(stmt);
RESET ROLE;
SELECT calabi_push.drop_sync('uses-local');

------------------------------------------------------------------------------
-- The statement of a failing call is not logged (it holds the secrets), while
-- the error itself is; a failing statement of ours is logged with its text.
-- The server log of pg_regress's temporary instance is log/postmaster.log
-- next to tmp_regress/data.
SHOW log_min_error_statement;
SET ROLE cp_dest_admin;
SELECT calabi_push.create_destination('logged', 'https://x.example.com/', token => 'tok-7f3a9c-secret',
    options => '{"compression": "brotli", "client_secret": "oauth-7f3a9c-secret"}');
SELECT calabi_push.alter_destination('main', token => 'tok-6b1d04-secret', options => '{"request_timeout": "1 week"}');
SHOW log_min_error_statement;
RESET ROLE;
SELECT 'marker-5d2e1b-not-a-secret'::int;
SELECT position('tok-7f3a9c' IN log) = 0 AND position('oauth-7f3a9c' IN log) = 0
         AS create_statement_not_logged,
       position('destination option "compression" must be "gzip" or "none"' IN log) > 0
         AS create_error_logged,
       position('tok-6b1d04' IN log) = 0 AS alter_statement_not_logged,
       position('destination option "request_timeout" must be between 1 second and 1 hour' IN log) > 0
         AS alter_error_logged,
       position('STATEMENT:  SELECT ''marker-5d2e1b-not-a-secret''::int' IN log) > 0
         AS other_statement_logged,
       log !~ '(tok-main|tok-oauth|tok-bad|oauth-secret|key-material|hunter2)'
         AS no_secret_of_this_file_logged
  FROM pg_read_file(current_setting('data_directory') || '/../../log/postmaster.log') AS log;

------------------------------------------------------------------------------
-- clean up
SELECT string_agg(name, ', ' ORDER BY name COLLATE "C") AS dropped
  FROM (SELECT name, calabi_push.drop_destination(name)
          FROM calabi_push.destination ORDER BY name COLLATE "C") d;
SET client_min_messages = warning;
DROP SCHEMA cp_dest_test CASCADE;
RESET client_min_messages;
DROP OWNED BY cp_dest_admin, cp_dest_other, cp_dest_nobody;
DROP ROLE cp_dest_admin, cp_dest_other, cp_dest_nobody;
