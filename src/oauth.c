/*-------------------------------------------------------------------------
 *
 * oauth.c
 *	  OAuth2 client credentials (RFC 6749 4.4): the access token a
 *	  destination's client sends, fetched from the token endpoint with the
 *	  client's second easy handle.
 *
 * The client secret and every access token are secrets: never in a
 * message, and every buffer that held one is wiped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/base64.h"
#include "lib/stringinfo.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "http_answer.h"
#include "http_parse.h"
#include "http_transport.h"
#include "oauth.h"

/*
 * application/x-www-form-urlencoded, as RFC 6749 wants for the client
 * credentials in HTTP Basic (2.3.1) and for the request body (Appendix B).
 */
static void
append_form_urlencoded(StringInfo buf, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			(*p >= '0' && *p <= '9') ||
			*p == '-' || *p == '.' || *p == '_' || *p == '*')
			appendStringInfoChar(buf, (char) *p);
		else if (*p == ' ')
			appendStringInfoChar(buf, '+');
		else
		{
			appendStringInfoChar(buf, '%');
			appendStringInfoChar(buf, hex[*p >> 4]);
			appendStringInfoChar(buf, hex[*p & 0xf]);
		}
	}
}

void
cp_oauth_drop_token(CpHttpClient *client)
{
	if (client->access_token != NULL)
	{
		cp_http_wipe_string(client->access_token);
		pfree(client->access_token);
		client->access_token = NULL;
	}
}

bool
cp_oauth_token_usable(CpHttpClient *client)
{
	if (client->access_token == NULL)
		return false;
	if (!client->access_token_expires)
		return true;
	return GetCurrentTimestamp() < client->access_token_refresh_at;
}

/* "Basic base64(urlencode(id):urlencode(secret))", RFC 6749 2.3.1 */
static char *
basic_authorization(const CpDestinationConfig *cfg)
{
	StringInfoData plain;
	char	   *encoded;
	char	   *header;
	int			enclen;

	/* sized so that it never grows: no stray copy of the secret */
	initStringInfo(&plain);
	enlargeStringInfo(&plain,
					  3 * (strlen(cfg->client_id) +
						   strlen(cfg->client_secret)) + 2);
	append_form_urlencoded(&plain, cfg->client_id);
	appendStringInfoChar(&plain, ':');
	append_form_urlencoded(&plain, cfg->client_secret);

	enclen = pg_b64_enc_len(plain.len);
	encoded = palloc(enclen + 1);
	enclen = cp_b64_encode(plain.data, plain.len, encoded, enclen);
	explicit_bzero(plain.data, plain.len);
	pfree(plain.data);
	if (enclen < 0)
		elog(ERROR, "could not encode the OAuth2 client credentials");
	encoded[enclen] = '\0';

	header = psprintf("Authorization: Basic %s", encoded);
	explicit_bzero(encoded, enclen);
	pfree(encoded);
	return header;
}

/*
 * Take access_token and expires_in from a 2xx token response.  On failure
 * sets result (never quoting the body: it may hold a token).
 */
static bool
parse_token_response(CpHttpClient *client, CpHttpResult *result)
{
	static const char prefix[] = "OAuth2 token endpoint: ";
	CpHttpResponse *resp = &client->token_response;
	CpTokenResponse tr;
	const char *problem;
	double		lifetime = 0;

	if (resp->body_truncated)
	{
		snprintf(result->message, sizeof(result->message),
				 "%sresponse larger than %d bytes", prefix,
				 CP_HTTP_TOKEN_BODY_MAX);
		result->outcome = CP_HTTP_REFUSED;
		return false;
	}

	problem = cp_http_token_parse(resp->body, resp->body_len, &tr);
	if (problem == NULL)
	{
		lifetime = tr.lifetime;
		cp_oauth_drop_token(client);
		client->access_token = MemoryContextStrdup(client->cxt,
												   tr.access_token);
	}
	cp_http_token_release(&tr);
	cp_http_response_wipe(resp);

	if (problem != NULL)
	{
		snprintf(result->message, sizeof(result->message), "%s%s", prefix,
				 problem);
		result->outcome = CP_HTTP_REFUSED;
		return false;
	}

	/*
	 * Refresh before the token expires: 30 s early, or a tenth of its life
	 * when that is shorter.  Without expires_in it is used until the ingest
	 * endpoint answers 401.
	 */
	if (lifetime > 0)
	{
		double		margin;

		margin = Min(30.0, lifetime / 10);
		client->access_token_expires = true;
		client->access_token_refresh_at = GetCurrentTimestamp() +
			(TimestampTz) ((lifetime - margin) * USECS_PER_SEC);
	}
	else
		client->access_token_expires = false;
	return true;
}

/* See oauth.h. */
bool
cp_oauth_fetch_token(CpHttpClient *client, CpHttpResult *result)
{
	static const char prefix[] = "OAuth2 token endpoint: ";
	const CpDestinationConfig *cfg = &client->cfg;
	StringInfoData form;
	struct curl_slist *list = NULL;
	char	   *auth;
	CURLcode	rc;
	long		status = 0;

	cp_oauth_drop_token(client);

	initStringInfo(&form);
	appendStringInfoString(&form, "grant_type=client_credentials");
	if (cfg->scope != NULL && cfg->scope[0] != '\0')
	{
		appendStringInfoString(&form, "&scope=");
		append_form_urlencoded(&form, cfg->scope);
	}

	cp_http_add_header(&list, "Content-Type: application/x-www-form-urlencoded");
	cp_http_add_header(&list, "Accept: application/json");
	cp_http_add_header(&list, "Expect:");
	cp_http_set_headers(client, client->token_easy, list);
	auth = basic_authorization(cfg);
	cp_http_add_header(&client->headers, auth);
	explicit_bzero(auth, strlen(auth));
	pfree(auth);

	CP_SETOPT(client, client->token_easy, CURLOPT_POSTFIELDS, form.data);
	CP_SETOPT(client, client->token_easy, CURLOPT_POSTFIELDSIZE_LARGE,
			  (curl_off_t) form.len);

	cp_http_response_reset(&client->token_response);
	rc = cp_http_run_transfer(client, client->token_easy, client->token_errbuf);
	cp_http_end_transfer(client, client->token_easy);
	pfree(form.data);

	if (rc != CURLE_OK)
	{
		cp_http_describe_transfer_error(result, prefix, rc,
										client->token_errbuf,
										client->egress_refusal, &client->cfg);
		return false;
	}

	curl_easy_getinfo(client->token_easy, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status > 299)
	{
		/* the same table as for batches, but nothing here is "accepted" */
		result->outcome = (cp_http_classify_status(status) == CP_HTTP_TRANSIENT) ?
			CP_HTTP_TRANSIENT : CP_HTTP_REFUSED;
		result->retry_after_ms = cp_http_retry_after(&client->token_response);
		/* an error response (RFC 6749 5.2) holds no token: quote it */
		cp_http_describe_status(result, prefix, status,
								&client->token_response, NULL);
		cp_http_response_wipe(&client->token_response);
		return false;
	}

	return parse_token_response(client, result);
}
