/*-------------------------------------------------------------------------
 *
 * destination.c
 *	  A destination's configuration: the defaults of its options, and the
 *	  rules a whole configuration must follow.
 *
 * The rules are checked twice: when a destination is created or changed
 * (the SQL functions of sql/install/30_destinations.sql call
 * calabi_push._check_destination), and by the worker before it connects
 * (cp_http_client_create), since the catalog may hold what an older version
 * or a hand-made row put there.  Both go through cp_destination_check, so a
 * rule has one message wherever it is broken.  What concerns one option
 * alone (a PEM text, a duration, the form of a URL) is checked by the SQL
 * functions only, where the option is given.
 *
 * The defaults are given to the SQL functions by
 * calabi_push._destination_defaults(), which fill them into the stored
 * options; the worker falls back on them for a row that lacks one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "destination.h"

PG_FUNCTION_INFO_V1(calabi_push_destination_defaults);
PG_FUNCTION_INFO_V1(calabi_push_check_destination);
PG_FUNCTION_INFO_V1(calabi_push_check_endpoint);

/* What the URLs are called in messages, and an example of each. */
#define URL_WHAT			"destination URL"
#define URL_EXAMPLE			"https://ingest.example.com/v1/batches"
#define TOKEN_URL_WHAT		"destination option \"token_url\""
#define TOKEN_URL_EXAMPLE	"https://auth.example.com/oauth2/token"

const char *
cp_destination_name(const CpDestinationConfig *cfg)
{
	return cfg->name ? cfg->name : "(unnamed)";
}

/*
 * Whether host (as in a URL, IPv6 in brackets, perhaps followed by a port)
 * is a loopback host: localhost, 127.0.0.0/8 or [::1].
 */
static bool
is_loopback(const char *host, size_t len)
{
	char		buf[INET6_ADDRSTRLEN + 2];
	unsigned char addr[sizeof(struct in6_addr)];

	if (len >= sizeof(buf))
		return false;
	memcpy(buf, host, len);
	buf[len] = '\0';
	if (buf[0] == '[')
	{
		char	   *end = strchr(buf, ']');

		if (end == NULL)
			return false;
		*end = '\0';
		return inet_pton(AF_INET6, buf + 1, addr) == 1 &&
			memcmp(addr, &in6addr_loopback, sizeof(struct in6_addr)) == 0;
	}
	buf[strcspn(buf, ":")] = '\0';
	if (pg_strcasecmp(buf, "localhost") == 0 ||
		pg_strcasecmp(buf, "localhost.") == 0)
		return true;
	return inet_pton(AF_INET, buf, addr) == 1 && addr[0] == 127;
}

/*
 * An endpoint (the URL, token_url) is reached with https, or with http when
 * allow_http is set and the host is a loopback host.  No message quotes the
 * URL: a malformed one may hold a credential.
 */
void
cp_destination_check_endpoint(bool token_url, const char *url,
							  bool allow_http)
{
	static const char https[] = "https://";
	static const char http[] = "http://";
	const char *what = token_url ? TOKEN_URL_WHAT : URL_WHAT;
	const char *example = token_url ? TOKEN_URL_EXAMPLE : URL_EXAMPLE;

	if (url == NULL ||
		pg_strncasecmp(url, https, strlen(https)) == 0)
		return;
	if (pg_strncasecmp(url, http, strlen(http)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must use https", what),
				 errhint("Use an https:// URL, e.g. '%s'.", example)));
	if (!allow_http)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must use https", what),
				 errhint("Use an https:// URL. Plain http:// is allowed only to a loopback host (localhost, 127.0.0.0/8, [::1]) with the option \"allow_http\": true.")));
	url += strlen(http);
	if (!is_loopback(url, strcspn(url, "/?#")))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s may use http only with a loopback host", what),
				 errhint("Use an https:// URL; \"allow_http\" permits http:// only to localhost, 127.0.0.0/8 and [::1].")));
}

static void
check_proxy(const char *proxy)
{
	static const char *const schemes[] = {
		"http://", "https://", "socks5://", "socks5h://"
	};

	if (proxy == NULL)
		return;
	for (int i = 0; i < (int) lengthof(schemes); i++)
		if (pg_strncasecmp(proxy, schemes[i], strlen(schemes[i])) == 0)
			return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("destination option \"proxy\" must use the scheme http, https, socks5 or socks5h"),
			 errhint("Give the proxy as a URL, e.g. 'http://proxy.example.com:3128' or 'socks5h://127.0.0.1:1080'.")));
}

/* Printable ASCII without spaces: what may follow "Bearer ". */
static bool
token_printable(const char *token)
{
	if (token[0] == '\0')
		return false;
	for (const unsigned char *p = (const unsigned char *) token; *p; p++)
		if (*p <= ' ' || *p > '~')
			return false;
	return true;
}

void
cp_destination_check(const CpDestinationConfig *cfg)
{
	cp_destination_check_endpoint(false, cfg->url, cfg->allow_http);
	cp_destination_check_endpoint(true, cfg->token_url, cfg->allow_http);
	check_proxy(cfg->proxy);

	/* TLS: trusted CAs (system ones unless ca_file or ca_pem), client cert */
	if (cfg->ca_file != NULL && cfg->ca_pem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination options \"ca_file\" and \"ca_pem\" cannot be used together"),
				 errhint("Give the trusted CA certificates either as a file on the server (ca_file) or as text (ca_pem); remove one with '{\"ca_file\": null}' or '{\"ca_pem\": null}'.")));
	if ((cfg->client_cert == NULL) != (cfg->client_key == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination options \"client_cert\" and \"client_key\" go together"),
				 errhint("For a client certificate (mutual TLS) give both the certificate (client_cert) and its private key (client_key), or neither.")));

	/* authentication: a static bearer token, or OAuth2 client credentials */
	if ((cfg->token_url == NULL || cfg->client_id == NULL ||
		 cfg->client_secret == NULL) &&
		(cfg->token_url != NULL || cfg->client_id != NULL ||
		 cfg->client_secret != NULL))
	{
		StringInfoData missing;

		initStringInfo(&missing);
		if (cfg->token_url == NULL)
			appendStringInfoString(&missing, "token_url");
		if (cfg->client_id == NULL)
			appendStringInfo(&missing, "%sclient_id",
							 missing.len > 0 ? ", " : "");
		if (cfg->client_secret == NULL)
			appendStringInfo(&missing, "%sclient_secret",
							 missing.len > 0 ? ", " : "");
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination options \"token_url\", \"client_id\" and \"client_secret\" go together"),
				 errdetail("Missing: %s.", missing.data),
				 errhint("OAuth2 client credentials need all three: the token endpoint (token_url), client_id and client_secret.")));
	}
	if (cfg->scope != NULL && cfg->token_url == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination option \"scope\" needs OAuth2 client credentials"),
				 errhint("Give \"scope\" together with \"token_url\", \"client_id\" and \"client_secret\", or leave it out.")));
	if (cfg->token != NULL && !token_printable(cfg->token))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("token must be printable ASCII without spaces"),
				 errhint("Give the token itself, without \"Bearer \" and without surrounding spaces or line breaks.")));
	if (cfg->token != NULL && cfg->token_url != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a destination cannot have both a token and OAuth2 client credentials"),
				 errhint("Use either a static token or \"token_url\", \"client_id\" and \"client_secret\"; alter_destination(..., token => '') removes a token.")));
}

/*
 * calabi_push._destination_defaults(): the options a new destination is
 * stored with unless it gives them.
 */
Datum
calabi_push_destination_defaults(PG_FUNCTION_ARGS)
{
	char	   *json;

	json = psprintf("{\"allow_http\": %s, \"compression\": \"%s\", "
					"\"connect_timeout_ms\": %d, \"request_timeout_ms\": %d}",
					CP_DESTINATION_DEFAULT_ALLOW_HTTP ? "true" : "false",
					CP_DESTINATION_DEFAULT_COMPRESSION,
					CP_DESTINATION_DEFAULT_CONNECT_TIMEOUT_MS,
					CP_DESTINATION_DEFAULT_REQUEST_TIMEOUT_MS);
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
}

static char *
text_arg(FunctionCallInfo fcinfo, int n)
{
	return PG_ARGISNULL(n) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(n));
}

/*
 * calabi_push._check_endpoint(key, url, allow_http): the rule on the scheme
 * of the URL (key 'url') or of token_url, as soon as the URL is parsed.
 */
Datum
calabi_push_check_endpoint(PG_FUNCTION_ARGS)
{
	char	   *key = text_arg(fcinfo, 0);

	cp_destination_check_endpoint(key != NULL && strcmp(key, "token_url") == 0,
								  text_arg(fcinfo, 1),
								  !PG_ARGISNULL(2) && PG_GETARG_BOOL(2));
	PG_RETURN_VOID();
}

/*
 * calabi_push._check_destination(url, allow_http, proxy, ca_file, ca_pem,
 * client_cert, client_key, token, token_url, client_id, client_secret,
 * scope): cp_destination_check on the values given; a rule about a value
 * that is NULL holds.
 */
Datum
calabi_push_check_destination(PG_FUNCTION_ARGS)
{
	CpDestinationConfig cfg = {0};

	cfg.url = text_arg(fcinfo, 0);
	cfg.allow_http = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
	cfg.proxy = text_arg(fcinfo, 2);
	cfg.ca_file = text_arg(fcinfo, 3);
	cfg.ca_pem = text_arg(fcinfo, 4);
	cfg.client_cert = text_arg(fcinfo, 5);
	cfg.client_key = text_arg(fcinfo, 6);
	cfg.token = text_arg(fcinfo, 7);
	cfg.token_url = text_arg(fcinfo, 8);
	cfg.client_id = text_arg(fcinfo, 9);
	cfg.client_secret = text_arg(fcinfo, 10);
	cfg.scope = text_arg(fcinfo, 11);
	cp_destination_check(&cfg);
	PG_RETURN_VOID();
}
