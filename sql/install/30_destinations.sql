------------------------------------------------------------------------------
-- Destinations: create_destination(), alter_destination(), drop_destination()
-- and the destinations view.  The contract is docs/destinations.md.
--
-- Every management function is a C entry point that takes the caller's
-- identity (see _caller() below) and runs the SECURITY DEFINER function of
-- the same name with a "_" before it, which writes the catalog (on which
-- nothing is granted) with a fixed search_path.  EXECUTE on the public
-- functions is revoked from PUBLIC: a DBA grants it to the roles that manage
-- syncs.  The helpers (names beginning with "_") are internal: nothing is
-- granted on them.
--
-- Secrets (token, client_secret, client_key) go to destination_secret only.
-- No message, detail or hint of these functions contains an option's value,
-- and the functions that take secrets run with log_min_error_statement =
-- panic, so that an error they raise is logged without the STATEMENT line
-- (the statement text holds the secrets).  That works because a function's
-- SET clause stays in force until the transaction (or subtransaction) is
-- aborted, and the server reports an error before it aborts.
------------------------------------------------------------------------------

-- The role a management function acts for: the current user when the public
-- function was called, before any SECURITY DEFINER switch, taken by its C
-- entry point (src/management.c), which refuses where that identity would be
-- borrowed (a security-restricted operation such as ANALYZE or a sync's read,
-- a background process).  The public functions are those entry points; the
-- SECURITY DEFINER functions of the same name with a "_" before it do the
-- work.  session_user is never trusted: inside a sync worker or autovacuum
-- it is a superuser, whoever's code is running.
CREATE FUNCTION _caller()
RETURNS name
AS 'MODULE_PATHNAME', 'calabi_push_caller'
LANGUAGE C STABLE;

-- Whether the caller may act for role_oid: a superuser, or a member of it
-- (one who could SET ROLE to it).  A role that no longer exists: superusers
-- only.
CREATE FUNCTION _caller_may_act_as(role_oid oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
  SELECT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = _caller()), false)
      OR (EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = role_oid)
          AND pg_has_role(_caller(), role_oid, 'MEMBER'))
$$;

-- Names of destinations and syncs: what the CHECK constraints accept, with
-- an error that says so before they fire.
CREATE FUNCTION _check_name(kind text, value text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% name must not be NULL', kind
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = format('Give the %s a name, e.g. %L.', kind,
                                CASE kind WHEN 'sync' THEN 'orders_to_calabi' ELSE 'calabi_prod' END);
    END IF;
    IF value !~ '^[A-Za-z0-9_.-]{1,63}$' THEN
        RAISE EXCEPTION 'invalid % name "%"', kind, value
            USING ERRCODE = 'invalid_name',
                  DETAIL = 'A name is 1 to 63 characters, each a letter A-Z or a-z, a digit, "_", "." or "-".',
                  HINT = format('Choose a name such as %L.',
                                CASE kind WHEN 'sync' THEN 'orders_to_calabi' ELSE 'calabi_prod' END);
    END IF;
END
$$;

-- Rejects the keys of options that are not in known, naming the first one
-- and listing the known ones.  stored maps the key under which an option is
-- stored to the key it is given with (connect_timeout_ms -> connect_timeout),
-- for a better hint when a stored key is passed back.
CREATE FUNCTION _check_option_keys(what text, options jsonb, known text[],
                                   stored jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    k text;
BEGIN
    IF options IS NULL THEN
        RETURN;
    END IF;
    IF jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION '% options must be a JSON object', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a JSON object that maps option names to their values.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(options) AS k ORDER BY k COLLATE "C" LOOP
        CONTINUE WHEN k = ANY (known);
        IF stored ? k THEN
            RAISE EXCEPTION 'unknown % option "%"', what, k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Pass "%s" (an interval such as ''30s'' or ''2 minutes'', or a number of seconds); it is stored as "%s".',
                                    stored->>k, k);
        END IF;
        RAISE EXCEPTION 'unknown % option "%"', what, k
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Known options: %s.', array_to_string(known, ', '));
    END LOOP;
END
$$;

-- A duration in words, for messages: 1 minute, 250 ms, 2 hours.
CREATE FUNCTION _ms_text(ms bigint)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
  SELECT CASE
    WHEN ms <> 0 AND ms % 86400000 = 0 THEN (ms / 86400000) || CASE WHEN ms = 86400000 THEN ' day' ELSE ' days' END
    WHEN ms <> 0 AND ms % 3600000 = 0 THEN (ms / 3600000) || CASE WHEN ms = 3600000 THEN ' hour' ELSE ' hours' END
    WHEN ms <> 0 AND ms % 60000 = 0 THEN (ms / 60000) || CASE WHEN ms = 60000 THEN ' minute' ELSE ' minutes' END
    WHEN ms <> 0 AND ms % 1000 = 0 THEN (ms / 1000) || CASE WHEN ms = 1000 THEN ' second' ELSE ' seconds' END
    ELSE ms || ' ms'
  END
$$;

-- A duration option: an interval text ('10s', '2 minutes', '1 hour') or a
-- JSON number of seconds (fractions allowed), as whole milliseconds within
-- [min_ms, max_ms].  example is a valid interval text, for hints.
CREATE FUNCTION _duration_ms(what text, key text, value jsonb,
                             min_ms bigint, max_ms bigint, example text)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    seconds numeric;
    ms numeric;
BEGIN
    IF jsonb_typeof(value) = 'number' THEN
        seconds := value::numeric;
    ELSIF jsonb_typeof(value) = 'string' THEN
        BEGIN
            seconds := extract(epoch FROM (value #>> '{}')::interval);
        EXCEPTION WHEN data_exception THEN
            RAISE EXCEPTION '% option "%" is not a valid interval', what, key
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Give an interval such as %L, or a number of seconds.', example);
        END;
    ELSE
        RAISE EXCEPTION '% option "%" must be an interval or a number of seconds', what, key
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give an interval such as %L, or a number of seconds.', example);
    END IF;
    ms := round(seconds * 1000);
    IF ms < min_ms OR ms > max_ms THEN
        RAISE EXCEPTION '% option "%" must be between % and %', what, key,
                        _ms_text(min_ms), _ms_text(max_ms)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give an interval such as %L, or a number of seconds.', example);
    END IF;
    RETURN ms::bigint;
END
$$;

-- A string option: a JSON string, not empty.  The value is never part of
-- the message (some string options are secrets).
CREATE FUNCTION _string_option(what text, key text, value jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(value) <> 'string' OR value #>> '{}' = '' THEN
        RAISE EXCEPTION '% option "%" must be a non-empty string', what, key
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give "%s" as a JSON string, or leave it out.', key);
    END IF;
    RETURN value #>> '{}';
END
$$;

-- A boolean option: a JSON boolean.
CREATE FUNCTION _boolean_option(what text, key text, value jsonb)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(value) <> 'boolean' THEN
        RAISE EXCEPTION '% option "%" must be true or false', what, key
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give a JSON boolean, e.g. ''{"%s": true}''.', key);
    END IF;
    RETURN value::boolean;
END
$$;

-- Parses an absolute URL into scheme, host, port and the rest (path and
-- query), with the checks every URL of a destination needs: printable
-- ASCII, no user name or password, no fragment, a valid host and port.
-- Scheme and host come back in lower case; the scheme is not checked here.
-- what names the URL in messages ('destination URL', 'destination option
-- "proxy"'); example is a valid URL of its kind, for hints; credentials_hint
-- says what to do instead of putting a user name or password in it.  No
-- message contains the URL: a malformed one may hold a credential.
CREATE FUNCTION _parse_url(what text, url text, example text, credentials_hint text,
                           OUT scheme text, OUT host text, OUT port int,
                           OUT rest text)
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    m text[];
    authority text;
    hostport text[];
    inet_host inet;
BEGIN
    IF url IS NULL OR url = '' THEN
        RAISE EXCEPTION '% must not be empty', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give an absolute URL, e.g. %L.', example);
    END IF;
    IF url ~ '[^!-~]' THEN
        RAISE EXCEPTION '% must not contain spaces, control or non-ASCII characters', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Percent-encode such characters in the path, and write an internationalized host name in its ASCII (punycode) form.';
    END IF;
    m := regexp_match(url, '^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)$');
    IF m IS NULL THEN
        RAISE EXCEPTION '% must be an absolute URL', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give an absolute URL, e.g. %L.', example);
    END IF;
    scheme := lower(m[1]);
    authority := m[2];
    rest := m[3];
    IF position('@' IN authority) > 0 THEN
        RAISE EXCEPTION '% must not contain a user name or password', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = credentials_hint;
    END IF;
    IF position('#' IN rest) > 0 THEN
        RAISE EXCEPTION '% must not contain a fragment ("#...")', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Remove the "#" and what follows it: it is not sent in HTTP requests.';
    END IF;

    IF authority LIKE '[%' THEN
        hostport := regexp_match(authority, '^\[([0-9A-Fa-f:.]+)\](?::([^:]*))?$');
        IF hostport IS NOT NULL THEN
            BEGIN
                inet_host := hostport[1]::inet;
            EXCEPTION WHEN data_exception THEN
                inet_host := NULL;
            END;
        END IF;
        IF hostport IS NULL OR inet_host IS NULL OR family(inet_host) <> 6 THEN
            RAISE EXCEPTION '% has an invalid IPv6 address', what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write an IPv6 address in brackets, e.g. [2001:db8::1].';
        END IF;
        host := '[' || lower(host(inet_host)) || ']';
    ELSE
        hostport := regexp_match(authority, '^([^:]*)(?::([^:]*))?$');
        IF hostport IS NULL OR hostport[1] = '' THEN
            RAISE EXCEPTION '% has no host', what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Give an absolute URL, e.g. %L.', example);
        END IF;
        host := lower(hostport[1]);
        IF host ~ '^[0-9.]+$' THEN
            IF host !~ '^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$' THEN
                RAISE EXCEPTION '% has an invalid IPv4 address', what
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Write an IPv4 address as four decimal numbers from 0 to 255, e.g. 192.0.2.10.';
            END IF;
        ELSIF length(host) > 253
              OR host !~ '^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$' THEN
            RAISE EXCEPTION '% has an invalid host name', what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A host name is made of labels of letters, digits, "_" and "-", separated by dots, e.g. ''ingest.example.com''.';
        END IF;
    END IF;

    IF hostport[2] IS NOT NULL THEN
        IF hostport[2] !~ '^[0-9]{1,5}$' OR hostport[2]::int NOT BETWEEN 1 AND 65535 THEN
            RAISE EXCEPTION '% has an invalid port', what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A port is a number from 1 to 65535; leave it out for the scheme''s default.';
        END IF;
        port := hostport[2]::int;
    END IF;
END
$$;

-- Refuses a host (as _parse_url returns it) that is a literal address, or
-- localhost, that calabi_push.allowed_hosts does not let syncs reach; a host
-- name is judged at every connection instead (src/egress.c).
CREATE FUNCTION _check_egress(what text, host text)
RETURNS void
AS 'MODULE_PATHNAME', 'calabi_push_check_egress'
LANGUAGE C STABLE;

-- The highest gzip compression_level of the library that compresses
-- (calabi_push.gzip_library): 3 for ISA-L, 9 for zlib (src/compressor.c).
CREATE FUNCTION _gzip_max_level()
RETURNS integer
AS 'MODULE_PATHNAME', 'calabi_push_gzip_max_level'
LANGUAGE C STABLE;

-- The options a destination is stored with unless it gives them
-- (src/destination.h).
CREATE FUNCTION _destination_defaults()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'calabi_push_destination_defaults'
LANGUAGE C IMMUTABLE;

-- The rules on a whole configuration (src/destination.c): the schemes of
-- the URL, token_url and proxy, the options that go together or exclude
-- each other, a token that can follow "Bearer ".  The worker checks the
-- same before it connects.  A rule about arguments left NULL holds, so
-- that a rule is checked as soon as its values are known (where it was
-- given, for the first error of a call to be the one a user fixes first).
CREATE FUNCTION _check_destination(url text DEFAULT NULL, allow_http boolean DEFAULT NULL,
                                   proxy text DEFAULT NULL, ca_file text DEFAULT NULL,
                                   ca_pem text DEFAULT NULL, client_cert text DEFAULT NULL,
                                   client_key text DEFAULT NULL, token text DEFAULT NULL,
                                   token_url text DEFAULT NULL, client_id text DEFAULT NULL,
                                   client_secret text DEFAULT NULL, scope text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'calabi_push_check_destination'
LANGUAGE C STABLE;

-- One of those rules, once the URL (key 'url') or token_url is parsed:
-- https, or http with allow_http to a loopback host.
CREATE FUNCTION _check_endpoint(key text, url text, allow_http boolean)
RETURNS void
AS 'MODULE_PATHNAME', 'calabi_push_check_endpoint'
LANGUAGE C STABLE;

-- Checks an https URL (destination URL, token_url) and returns it with its
-- scheme and host in lower case.  http:// is accepted only with allow_http
-- and a loopback host; the host must be one calabi_push.allowed_hosts allows.
-- key is 'url' or 'token_url'.
CREATE FUNCTION _check_endpoint_url(key text, what text, url text, allow_http boolean,
                                    example text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    u record;
    checked text;
BEGIN
    SELECT * INTO u FROM _parse_url(what, url, example,
        'Remove the credentials from the URL; give a bearer token with token => ''...'' or OAuth2 client credentials in the options.');
    checked := u.scheme || '://' || u.host || coalesce(':' || u.port, '') || u.rest;
    PERFORM _check_endpoint(key, checked, allow_http);
    PERFORM _check_egress(what, u.host);
    RETURN checked;
END
$$;

-- PEM texts.  The value is never part of a message.
CREATE FUNCTION _check_pem_certificate(what text, key text, value text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
BEGIN
    IF value !~ '^\s*-----BEGIN CERTIFICATE-----' OR position('-----END CERTIFICATE-----' IN value) = 0 THEN
        RAISE EXCEPTION '% option "%" is not a PEM certificate', what, key
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the certificate text itself, from "-----BEGIN CERTIFICATE-----" to "-----END CERTIFICATE-----" (several certificates may follow each other).';
    END IF;
END
$$;

CREATE FUNCTION _check_pem_private_key(what text, key text, value text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
BEGIN
    IF value ~ '^\s*-----BEGIN ENCRYPTED PRIVATE KEY-----' THEN
        RAISE EXCEPTION '% option "%" is an encrypted private key', what, key
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the key unencrypted (e.g. the output of "openssl pkey -in key.pem"); calabi_push keeps it in a table no role but the superuser can read.';
    END IF;
    IF value !~ '^\s*-----BEGIN (RSA |EC |DSA )?PRIVATE KEY-----'
       OR value !~ '-----END (RSA |EC |DSA )?PRIVATE KEY-----' THEN
        RAISE EXCEPTION '% option "%" is not a PEM private key', what, key
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the key text itself, from "-----BEGIN PRIVATE KEY-----" (or "-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----") to its END line.';
    END IF;
END
$$;

-- ca_file: an absolute path to a PEM bundle the server can read.  Setting it
-- makes the server open a file of the caller's choosing, so it takes the
-- privileges of pg_read_server_files (as COPY FROM a file does).
CREATE FUNCTION _check_ca_file(path text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    st record;
    content bytea;
BEGIN
    IF NOT pg_has_role(_caller(), 'pg_read_server_files', 'USAGE') THEN
        RAISE EXCEPTION 'permission denied to set destination option "ca_file"'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Only roles with the privileges of pg_read_server_files may make the server read a file.',
                  HINT = 'Give the CA certificates as text with the option "ca_pem" instead.';
    END IF;
    IF path !~ '^/' THEN
        RAISE EXCEPTION 'destination option "ca_file" must be an absolute path'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the full path of a PEM file on the database server, e.g. ''/etc/ssl/certs/ca-certificates.crt''.';
    END IF;
    BEGIN
        SELECT * INTO st FROM pg_stat_file(path, true);
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'destination option "ca_file": could not access file "%"', path
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = SQLERRM,
                  HINT = 'The file must be readable by the operating system user the database server runs as.';
    END;
    IF st.size IS NULL THEN
        RAISE EXCEPTION 'destination option "ca_file": file "%" does not exist', path
            USING ERRCODE = 'undefined_file',
                  HINT = 'Give the full path of a PEM file on the database server (not on the client).';
    END IF;
    IF st.isdir THEN
        RAISE EXCEPTION 'destination option "ca_file": "%" is a directory', path
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the path of a PEM file that holds the CA certificates.';
    END IF;
    BEGIN
        content := pg_read_binary_file(path);
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'destination option "ca_file": could not read file "%"', path
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = SQLERRM,
                  HINT = 'The file must be readable by the operating system user the database server runs as.';
    END;
    IF position(convert_to('-----BEGIN CERTIFICATE-----', 'UTF8') IN content) = 0 THEN
        RAISE EXCEPTION 'destination option "ca_file": file "%" holds no PEM certificate', path
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a PEM file with one or more "-----BEGIN CERTIFICATE-----" blocks.';
    END IF;
END
$$;

-- Validates and normalizes a destination's whole configuration, given as
-- create_destination takes it: url, token, and options with the secrets
-- client_secret and client_key among them.  Returns the normalized URL, the
-- options to store (no secret; defaults filled in; durations as *_ms
-- integers) and the three secrets.  checked_keys: the options whose value is
-- new in this call (NULL: all); only those get the checks that depend on the
-- caller or on the server's files (ca_file).
CREATE FUNCTION _destination_config(url text, token text, options jsonb,
                                    checked_keys text[],
                                    OUT r_url text, OUT r_options jsonb,
                                    OUT r_token text, OUT r_client_secret text,
                                    OUT r_client_key text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    known constant text[] := ARRAY['allow_http', 'ca_file', 'ca_pem', 'client_cert',
        'client_id', 'client_key', 'client_secret', 'compression', 'compression_level',
        'connect_timeout', 'proxy', 'request_timeout', 'scope', 'token_url'];
    o jsonb;
    w constant text := 'destination';
    defaults constant jsonb := _destination_defaults();
    allow_http boolean := (defaults->'allow_http')::boolean;
    compression text := defaults->>'compression';
    compression_level integer;
    max_level integer;
    connect_timeout_ms bigint := (defaults->'connect_timeout_ms')::bigint;
    request_timeout_ms bigint := (defaults->'request_timeout_ms')::bigint;
    proxy text;
    ca_file text;
    ca_pem text;
    client_cert text;
    token_url text;
    client_id text;
    scope text;
    p record;
BEGIN
    o := coalesce(options, '{}');
    PERFORM _check_option_keys(w, o, known,
        '{"connect_timeout_ms": "connect_timeout", "request_timeout_ms": "request_timeout"}');
    o := jsonb_strip_nulls(o);

    IF o ? 'allow_http' THEN
        allow_http := _boolean_option(w, 'allow_http', o->'allow_http');
    END IF;

    IF url IS NULL THEN
        RAISE EXCEPTION 'destination URL must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give the full URL of the ingest endpoint, e.g. ''https://ingest.example.com/v1/batches''.';
    END IF;
    r_url := _check_endpoint_url('url', 'destination URL', url, allow_http,
                                 'https://ingest.example.com/v1/batches');

    IF o ? 'compression' THEN
        compression := _string_option(w, 'compression', o->'compression');
        IF compression NOT IN ('gzip', 'none') THEN
            RAISE EXCEPTION 'destination option "compression" must be "gzip" or "none"'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Batches are gzip-compressed by default; "none" sends them as they are.';
        END IF;
    END IF;
    IF o ? 'compression_level' THEN
        max_level := _gzip_max_level();
        IF (CASE WHEN jsonb_typeof(o->'compression_level') <> 'number' THEN true
                 ELSE (o->>'compression_level')::numeric NOT BETWEEN 1 AND max_level
                      OR (o->>'compression_level')::numeric % 1 <> 0 END) THEN
            RAISE EXCEPTION 'destination option "compression_level" must be an integer from 1 to %', max_level
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Batches are compressed with %s, whose levels are 1 (the fastest, the default) to %s; '
                                    'leave the option out for the fastest.',
                                    current_setting('calabi_push.gzip_library'), max_level);
        END IF;
        IF compression <> 'gzip' THEN
            RAISE EXCEPTION 'destination option "compression_level" applies to gzip only'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave compression_level out (or give it as null) with "compression": "none".';
        END IF;
        compression_level := (o->>'compression_level')::integer;
    END IF;
    IF o ? 'connect_timeout' THEN
        connect_timeout_ms := _duration_ms(w, 'connect_timeout', o->'connect_timeout', 100, 300000, '10s');
    END IF;
    IF o ? 'request_timeout' THEN
        request_timeout_ms := _duration_ms(w, 'request_timeout', o->'request_timeout', 1000, 3600000, '2 minutes');
    END IF;

    IF o ? 'proxy' THEN
        proxy := _string_option(w, 'proxy', o->'proxy');
        SELECT * INTO p FROM _parse_url('destination option "proxy"', proxy,
            'http://proxy.example.com:3128',
            'Proxy credentials are not supported: use a proxy that does not need them.');
        PERFORM _check_destination(proxy => p.scheme || '://' || p.host);
        IF p.rest NOT IN ('', '/') THEN
            RAISE EXCEPTION 'destination option "proxy" must not have a path'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give the proxy as scheme://host[:port], e.g. ''http://proxy.example.com:3128''.';
        END IF;
        PERFORM _check_egress('destination option "proxy"', p.host);
        proxy := p.scheme || '://' || p.host || coalesce(':' || p.port, '');
    END IF;

    -- TLS: trusted CAs (system ones unless ca_file or ca_pem), client certificate
    IF o ? 'ca_file' THEN
        ca_file := _string_option(w, 'ca_file', o->'ca_file');
        IF checked_keys IS NULL OR 'ca_file' = ANY (checked_keys) THEN
            PERFORM _check_ca_file(ca_file);
        END IF;
    END IF;
    IF o ? 'ca_pem' THEN
        ca_pem := _string_option(w, 'ca_pem', o->'ca_pem');
        PERFORM _check_pem_certificate(w, 'ca_pem', ca_pem);
    END IF;
    PERFORM _check_destination(ca_file => ca_file, ca_pem => ca_pem);
    IF o ? 'client_cert' THEN
        client_cert := _string_option(w, 'client_cert', o->'client_cert');
        PERFORM _check_pem_certificate(w, 'client_cert', client_cert);
    END IF;
    IF o ? 'client_key' THEN
        r_client_key := _string_option(w, 'client_key', o->'client_key');
        PERFORM _check_pem_private_key(w, 'client_key', r_client_key);
    END IF;
    PERFORM _check_destination(client_cert => client_cert, client_key => r_client_key);

    -- authentication: a static bearer token, or OAuth2 client credentials
    IF o ? 'token_url' THEN
        token_url := _check_endpoint_url('token_url', 'destination option "token_url"',
                                         _string_option(w, 'token_url', o->'token_url'),
                                         allow_http, 'https://auth.example.com/oauth2/token');
    END IF;
    IF o ? 'client_id' THEN
        client_id := _string_option(w, 'client_id', o->'client_id');
        IF client_id ~ '[[:cntrl:]]' THEN
            RAISE EXCEPTION 'destination option "client_id" must not contain control characters'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give the client identifier the authorization server issued, without line breaks.';
        END IF;
    END IF;
    IF o ? 'client_secret' THEN
        r_client_secret := _string_option(w, 'client_secret', o->'client_secret');
        IF r_client_secret ~ '[[:cntrl:]]' THEN
            RAISE EXCEPTION 'destination option "client_secret" must not contain control characters'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give the client secret the authorization server issued, without line breaks.';
        END IF;
    END IF;
    IF o ? 'scope' THEN
        scope := _string_option(w, 'scope', o->'scope');
        IF scope ~ '[[:cntrl:]]' THEN
            RAISE EXCEPTION 'destination option "scope" must not contain control characters'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give the scopes separated by spaces, e.g. ''{"scope": "ingest:write"}''.';
        END IF;
    END IF;
    PERFORM _check_destination(allow_http => allow_http, token_url => token_url,
                               client_id => client_id, client_secret => r_client_secret,
                               scope => scope);

    IF token IS NOT NULL THEN
        IF token = '' THEN
            RAISE EXCEPTION 'token must not be empty'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave token out (or NULL) for a destination without a bearer token.';
        END IF;
        r_token := token;
    END IF;

    -- every rule on the whole configuration, as the worker checks it
    PERFORM _check_destination(r_url, allow_http, proxy, ca_file, ca_pem, client_cert,
                               r_client_key, r_token, token_url, client_id,
                               r_client_secret, scope);

    r_options := jsonb_strip_nulls(jsonb_build_object(
        'allow_http', allow_http,
        'compression', compression,
        'compression_level', compression_level,
        'connect_timeout_ms', connect_timeout_ms,
        'request_timeout_ms', request_timeout_ms,
        'proxy', proxy,
        'ca_file', ca_file,
        'ca_pem', ca_pem,
        'client_cert', client_cert,
        'token_url', token_url,
        'client_id', client_id,
        'scope', scope));
END
$$;

-- The names of the secrets that are set, in a fixed order: what
-- destination.secrets records (it is dumped, the secrets are not).
CREATE FUNCTION _secret_names(token text, client_secret text, client_key text)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
  SELECT array_remove(ARRAY[CASE WHEN token IS NOT NULL THEN 'token' END,
                            CASE WHEN client_secret IS NOT NULL THEN 'client_secret' END,
                            CASE WHEN client_key IS NOT NULL THEN 'client_key' END], NULL)
$$;

------------------------------------------------------------------------------

CREATE FUNCTION _create_destination(name text, url text, token text DEFAULT NULL,
                                   options jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, calabi_push, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    cfg record;
BEGIN
    PERFORM _check_name('destination', _create_destination.name);
    IF EXISTS (SELECT 1 FROM destination d WHERE d.name = _create_destination.name) THEN
        RAISE EXCEPTION 'destination "%" already exists', _create_destination.name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another name, or change it with calabi_push.alter_destination().';
    END IF;
    SELECT * INTO cfg
      FROM _destination_config(_create_destination.url, _create_destination.token,
                               _create_destination.options, NULL);
    INSERT INTO destination (name, url, options, secrets, created_by)
    VALUES (_create_destination.name, cfg.r_url, cfg.r_options,
            _secret_names(cfg.r_token, cfg.r_client_secret, cfg.r_client_key), _caller());
    INSERT INTO destination_secret (destination, token, client_secret, client_key)
    VALUES (_create_destination.name, cfg.r_token, cfg.r_client_secret, cfg.r_client_key);
END
$$;

CREATE FUNCTION create_destination(name text, url text, token text DEFAULT NULL,
                                   options jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'calabi_push_manage'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION create_destination(text, text, text, jsonb) IS
'creates a destination: an ingest endpoint URL, its token or OAuth2 client credentials, and its TLS and HTTP options';

-- The destination name, locked, after checking that the caller may change
-- it (a superuser, or a member of the role that created it).
CREATE FUNCTION _destination_for_update(name text)
RETURNS destination
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    d destination;
BEGIN
    IF _destination_for_update.name IS NULL THEN
        RAISE EXCEPTION 'destination name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Name a destination; calabi_push.destinations lists them.';
    END IF;
    SELECT * INTO d FROM destination x WHERE x.name = _destination_for_update.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'destination "%" does not exist', _destination_for_update.name
            USING ERRCODE = 'undefined_object',
                  HINT = 'calabi_push.destinations lists the destinations.';
    END IF;
    IF NOT _caller_may_act_as((SELECT r.oid FROM pg_roles r WHERE r.rolname = d.created_by)) THEN
        RAISE EXCEPTION 'permission denied for destination "%"', d.name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('It belongs to role %s; role %s is not a member of it.',
                                  quote_ident(d.created_by), quote_ident(_caller())),
                  HINT = format('Ask a member of %s or a superuser to change or drop it.', quote_ident(d.created_by));
    END IF;
    RETURN d;
END
$$;

-- NULL arguments leave a setting as it is.  options are merged key by key
-- into the current ones; a key given as JSON null goes back to its default
-- (or to unset).  token => '' removes the token.
--
-- The settings that decide which server receives the token and the client
-- secret (url, token_url, proxy, ca_file, ca_pem, allow_http) can be changed
-- by a role other than a superuser only if the call gives those secrets
-- again (or removes them): otherwise any member of the destination's owning
-- role could have the workers send secrets it does not know to a host of
-- its own.  A superuser could read them anyway.  The client key is not
-- sent to the server (TLS only proves its possession, for that handshake),
-- so it stays.
CREATE FUNCTION _alter_destination(name text, url text DEFAULT NULL,
                                  token text DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, calabi_push, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    d destination;
    s destination_secret;
    merged jsonb;
    given_keys text[];
    k text;
    v jsonb;
    new_token text;
    cfg record;
    sync_id uuid;
    moved text[];
    resend text[];
    new_secrets text[];
BEGIN
    d := _destination_for_update(_alter_destination.name);
    SELECT * INTO s FROM destination_secret x WHERE x.destination = d.name FOR UPDATE;

    PERFORM _check_option_keys('destination', _alter_destination.options,
        ARRAY['allow_http', 'ca_file', 'ca_pem', 'client_cert', 'client_id', 'client_key',
              'client_secret', 'compression', 'compression_level', 'connect_timeout', 'proxy', 'request_timeout',
              'scope', 'token_url'],
        '{"connect_timeout_ms": "connect_timeout", "request_timeout_ms": "request_timeout"}');

    -- the current configuration, in the form create_destination takes it
    merged := d.options - 'connect_timeout_ms' - 'request_timeout_ms';
    IF d.options ? 'connect_timeout_ms' THEN
        merged := merged || jsonb_build_object('connect_timeout',
                                               (d.options->>'connect_timeout_ms')::numeric / 1000);
    END IF;
    IF d.options ? 'request_timeout_ms' THEN
        merged := merged || jsonb_build_object('request_timeout',
                                               (d.options->>'request_timeout_ms')::numeric / 1000);
    END IF;
    IF s.client_secret IS NOT NULL THEN
        merged := merged || jsonb_build_object('client_secret', s.client_secret);
    END IF;
    IF s.client_key IS NOT NULL THEN
        merged := merged || jsonb_build_object('client_key', s.client_key);
    END IF;

    -- with the changes
    given_keys := '{}';
    FOR k, v IN SELECT * FROM jsonb_each(coalesce(_alter_destination.options, '{}')) LOOP
        IF jsonb_typeof(v) = 'null' THEN
            merged := merged - k;
        ELSE
            merged := merged || jsonb_build_object(k, v);
            given_keys := given_keys || k;
        END IF;
    END LOOP;
    new_token := CASE WHEN _alter_destination.token IS NULL THEN s.token
                      WHEN _alter_destination.token = '' THEN NULL
                      ELSE _alter_destination.token END;

    SELECT * INTO cfg
      FROM _destination_config(coalesce(_alter_destination.url, d.url), new_token,
                               merged, given_keys);

    -- where the secrets go: see the comment above the function
    moved := array_remove(ARRAY[
        CASE WHEN cfg.r_url IS DISTINCT FROM d.url THEN 'url' END,
        CASE WHEN cfg.r_options->'token_url' IS DISTINCT FROM d.options->'token_url' THEN 'token_url' END,
        CASE WHEN cfg.r_options->'proxy' IS DISTINCT FROM d.options->'proxy' THEN 'proxy' END,
        CASE WHEN cfg.r_options->'ca_file' IS DISTINCT FROM d.options->'ca_file' THEN 'ca_file' END,
        CASE WHEN cfg.r_options->'ca_pem' IS DISTINCT FROM d.options->'ca_pem' THEN 'ca_pem' END,
        CASE WHEN cfg.r_options->'allow_http' IS DISTINCT FROM d.options->'allow_http' THEN 'allow_http' END],
        NULL);
    -- the stored secrets that would go there without having been given again
    resend := array_remove(ARRAY[
        CASE WHEN s.token IS NOT NULL AND cfg.r_token IS NOT NULL
                  AND _alter_destination.token IS NULL THEN 'token' END,
        CASE WHEN s.client_secret IS NOT NULL AND cfg.r_client_secret IS NOT NULL
                  AND NOT ('client_secret' = ANY (given_keys)) THEN 'client_secret' END],
        NULL);
    IF cardinality(moved) > 0 AND cardinality(resend) > 0
       AND NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = _caller()), false) THEN
        RAISE EXCEPTION 'changing where destination "%" sends its secrets requires giving them again', d.name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('The call changes %s; the stored %s would be sent there. Only a superuser may keep secrets across such a change.',
                                  array_to_string(moved, ', '), array_to_string(resend, ' and ')),
                  HINT = format('Give them again in the same call (%s), or remove them; or ask a superuser to make the change.',
                                array_to_string(array_remove(ARRAY[
                                    CASE WHEN 'token' = ANY (resend) THEN 'token => ''...''' END,
                                    CASE WHEN 'client_secret' = ANY (resend) THEN 'options => ''{"client_secret": "..."}''' END],
                                    NULL), ', '));
    END IF;

    -- the secrets it has, and those a restore left out (destination.secrets
    -- lists them, destination_secret lacks them) until entered again or
    -- removed explicitly
    new_secrets := _secret_names(cfg.r_token, cfg.r_client_secret, cfg.r_client_key);
    IF 'token' = ANY (d.secrets) AND s.token IS NULL AND cfg.r_token IS NULL
       AND _alter_destination.token IS DISTINCT FROM '' THEN
        new_secrets := new_secrets || 'token'::text;
    END IF;
    FOREACH k IN ARRAY ARRAY['client_secret', 'client_key'] LOOP
        IF k = ANY (d.secrets) AND NOT (k = ANY (new_secrets))
           AND NOT (k = ANY (_secret_names(s.token, s.client_secret, s.client_key)))
           AND jsonb_typeof(_alter_destination.options->k) IS DISTINCT FROM 'null' THEN
            new_secrets := new_secrets || k;
        END IF;
    END LOOP;
    new_secrets := ARRAY(SELECT x FROM unnest(ARRAY['token', 'client_secret', 'client_key']) x
                          WHERE x = ANY (new_secrets));

    IF cfg.r_url IS NOT DISTINCT FROM d.url
       AND cfg.r_options IS NOT DISTINCT FROM d.options
       AND new_secrets IS NOT DISTINCT FROM d.secrets
       AND cfg.r_token IS NOT DISTINCT FROM s.token
       AND cfg.r_client_secret IS NOT DISTINCT FROM s.client_secret
       AND cfg.r_client_key IS NOT DISTINCT FROM s.client_key THEN
        RETURN;
    END IF;

    UPDATE destination x SET url = cfg.r_url, options = cfg.r_options, secrets = new_secrets
     WHERE x.name = d.name;
    INSERT INTO destination_secret (destination, token, client_secret, client_key)
    VALUES (d.name, cfg.r_token, cfg.r_client_secret, cfg.r_client_key)
    ON CONFLICT (destination) DO UPDATE
       SET token = excluded.token, client_secret = excluded.client_secret,
           client_key = excluded.client_key;

    -- running syncs of this destination start again with the new settings
    -- (the others read them when they start)
    FOR sync_id IN SELECT y.id FROM sync y
                    WHERE y.destination = d.name AND _sync_is_running(y)
                    ORDER BY y.name COLLATE "C" LOOP
        PERFORM calabi_push._sync_changed(sync_id, true, true);
    END LOOP;
END
$$;

CREATE FUNCTION alter_destination(name text, url text DEFAULT NULL,
                                  token text DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'calabi_push_manage'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION alter_destination(text, text, text, jsonb) IS
'changes a destination: NULL leaves a setting as it is, options are merged (a JSON null resets a key), token => '''' removes the token';

CREATE FUNCTION _drop_destination(name text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, calabi_push, pg_temp
AS $$
DECLARE
    d destination;
    users text;
BEGIN
    d := _destination_for_update(_drop_destination.name);
    SELECT string_agg(y.name, ', ' ORDER BY y.name COLLATE "C") INTO users
      FROM sync y WHERE y.destination = d.name;
    IF users IS NOT NULL THEN
        RAISE EXCEPTION 'destination "%" is used by syncs', d.name
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = format('Syncs using it: %s.', users),
                  HINT = 'Drop those syncs first with calabi_push.drop_sync(), or recreate them with another destination; to point this destination elsewhere, use calabi_push.alter_destination().';
    END IF;
    DELETE FROM destination x WHERE x.name = d.name;   -- and its secrets
END
$$;

CREATE FUNCTION drop_destination(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'calabi_push_manage'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION drop_destination(text) IS
'drops a destination and its secrets; refused while a sync uses it';

-- Destinations without their secrets: has_* says whether each is set;
-- missing_secrets, which ones the destination was given but lacks (a
-- restored dump holds no secret): alter_destination enters them again.
CREATE VIEW destinations AS
SELECT d.name,
       d.url,
       d.options,
       s.token IS NOT NULL AS has_token,
       s.client_key IS NOT NULL AS has_client_key,
       s.client_secret IS NOT NULL AS has_client_secret,
       ARRAY(SELECT x FROM unnest(d.secrets) x
              WHERE CASE x WHEN 'token' THEN s.token
                           WHEN 'client_secret' THEN s.client_secret
                           WHEN 'client_key' THEN s.client_key END IS NULL) AS missing_secrets,
       d.created_by,
       d.created_at
  FROM destination d
  LEFT JOIN destination_secret s ON s.destination = d.name;

COMMENT ON VIEW destinations IS
'destinations with their options; never a secret (has_token, has_client_key, has_client_secret say whether one is set; missing_secrets lists those to enter again after a restore)';

REVOKE ALL ON destinations FROM PUBLIC;
REVOKE ALL ON FUNCTION
    create_destination(text, text, text, jsonb),
    alter_destination(text, text, text, jsonb),
    drop_destination(text),
    _create_destination(text, text, text, jsonb),
    _alter_destination(text, text, text, jsonb),
    _drop_destination(text),
    _caller(),
    _caller_may_act_as(oid),
    _check_name(text, text),
    _check_option_keys(text, jsonb, text[], jsonb),
    _ms_text(bigint),
    _duration_ms(text, text, jsonb, bigint, bigint, text),
    _string_option(text, text, jsonb),
    _boolean_option(text, text, jsonb),
    _parse_url(text, text, text, text),
    _check_egress(text, text),
    _gzip_max_level(),
    _gzip_max_level(),
    _destination_defaults(),
    _check_destination(text, boolean, text, text, text, text, text, text, text, text, text, text),
    _check_endpoint(text, text, boolean),
    _check_endpoint_url(text, text, text, boolean, text),
    _check_pem_certificate(text, text, text),
    _check_pem_private_key(text, text, text),
    _check_ca_file(text),
    _destination_config(text, text, jsonb, text[]),
    _secret_names(text, text, text),
    _destination_for_update(text)
FROM PUBLIC;
