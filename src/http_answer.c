/*-------------------------------------------------------------------------
 *
 * http_answer.c
 *	  An endpoint's answer: collected by curl's callbacks, classified per
 *	  shared/ingest-protocol.md ("Responses"), and described for a person.
 *
 * The callbacks here run inside curl, possibly on the sending thread: they
 * only copy into the buffer allocated with the client, up to its size cap,
 * and never ereport, elog or palloc (see http_transport.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "mb/pg_wchar.h"
#include "utils/memutils.h"

#include "destination.h"
#include "http_answer.h"

/* What replaces a body for roles that may not see it (see CpHttpResult). */
#define CP_HTTP_REDACTED	": [response shown only to the destination's owner]"

static CpHttpOutcome classify_curl_error(CURLcode rc);
static bool is_certificate_error(CURLcode rc);

void
cp_http_response_alloc(CpHttpResponse *resp, MemoryContext cxt, size_t cap)
{
	resp->body = MemoryContextAllocZero(cxt, cap + 1);
	resp->body_cap = cap;
}

void
cp_http_response_reset(CpHttpResponse *resp)
{
	resp->body_len = 0;
	resp->body[0] = '\0';
	resp->body_truncated = false;
	cp_http_headers_reset(&resp->headers);
}

void
cp_http_response_wipe(CpHttpResponse *resp)
{
	if (resp->body != NULL)
		explicit_bzero(resp->body, resp->body_len + 1);
	resp->body_len = 0;
}

/* ---------------------------------------------------------------------
 * curl callbacks.  No ereport, elog or palloc in here: see the top.
 * ---------------------------------------------------------------------
 */

size_t
cp_http_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	CpHttpResponse *resp = (CpHttpResponse *) userdata;
	size_t		n = size * nmemb;
	size_t		room = resp->body_cap - resp->body_len;

	if (n > room)
	{
		resp->body_truncated = true;
		memcpy(resp->body + resp->body_len, ptr, room);
		resp->body_len += room;
	}
	else
	{
		memcpy(resp->body + resp->body_len, ptr, n);
		resp->body_len += n;
	}
	resp->body[resp->body_len] = '\0';
	/* what we do not keep is read and dropped, not an error */
	return n;
}

/* Only plain C in http_parse.c: nothing that could longjmp. */
size_t
cp_http_header_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	CpHttpResponse *resp = (CpHttpResponse *) userdata;
	size_t		len = size * nitems;

	cp_http_header_line(&resp->headers, buffer, len);
	return len;
}

/* ---------------------------------------------------------------------
 * What the answer means
 * ---------------------------------------------------------------------
 */

/*
 * Append the start of a response body for a person (cp_http_excerpt says
 * how), judging bytes above 0x7f by this database's encoding.
 */
void
cp_http_append_excerpt(StringInfo buf, const char *data, size_t len,
					   bool more)
{
	char		excerpt[CP_HTTP_EXCERPT_SIZE];

	cp_http_excerpt(excerpt, data, len, more,
					GetDatabaseEncoding() == PG_UTF8);
	appendStringInfoString(buf, excerpt);
}

/* "<prefix>HTTP <status>: <start of the body>" into result->message. */
void
cp_http_describe_status(CpHttpResult *result, const char *prefix, long status,
						const CpHttpResponse *resp, const char *suffix)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "%sHTTP %ld", prefix, status);
	if (resp->body_len > 0)
	{
		appendStringInfoString(&buf, ": ");
		cp_http_append_excerpt(&buf, resp->body, resp->body_len,
							   resp->body_truncated);
	}
	if (suffix)
		appendStringInfoString(&buf, suffix);
	strlcpy(result->message, buf.data, sizeof(result->message));
	pfree(buf.data);

	snprintf(result->message_redacted, sizeof(result->message_redacted),
			 "%sHTTP %ld%s%s", prefix, status,
			 resp->body_len > 0 ? CP_HTTP_REDACTED : "", suffix ? suffix : "");
}

/*
 * A transport failure: curl's own text, which names no secret; or, when the
 * open-socket callback refused an address, why.  A refusal is transient:
 * a superuser may allow the address (and reload) while the sync retries.
 */
void
cp_http_describe_transfer_error(CpHttpResult *result, const char *prefix,
								CURLcode rc, const char *errbuf,
								const char *egress_refusal,
								const CpDestinationConfig *cfg)
{
	if (egress_refusal[0] != '\0')
	{
		result->outcome = CP_HTTP_TRANSIENT;
		snprintf(result->message, sizeof(result->message), "%s%s", prefix,
				 egress_refusal);
		return;
	}
	result->outcome = classify_curl_error(rc);
	if (is_certificate_error(rc))
	{
		/*
		 * The endpoint's certificate is not one this destination trusts:
		 * the CA it names is missing, wrong, or unreadable, or the URL's
		 * host is not the certificate's.  No retry changes that; the way
		 * out is the destination's configuration, so the message says how.
		 */
		snprintf(result->message, sizeof(result->message),
				 "%s%s: the endpoint's TLS certificate cannot be verified with %s, and no retry can change that: give the CA that signed it with the destination's option \"ca_file\" or \"ca_pem\" (SELECT calabi_push.alter_destination('%s', options => '{\"ca_file\": \"/path/to/ca.pem\"}')), or a URL with the host name the certificate names; then calabi_push.start_sync() the sync",
				 prefix, errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc),
				 cfg->ca_file != NULL ? "the CA file of option \"ca_file\"" :
				 cfg->ca_pem != NULL ? "the CAs of option \"ca_pem\"" :
				 "the system's CAs",
				 cp_destination_name(cfg));
		return;
	}
	snprintf(result->message, sizeof(result->message), "%s%s", prefix,
			 errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
}

/*
 * Retry-After in ms from now; -1 when absent or unparsable (see
 * cp_http_retry_after_ms).
 */
int
cp_http_retry_after(const CpHttpResponse *resp)
{
	return cp_http_retry_after_ms(&resp->headers, time(NULL));
}

/*
 * The ingest protocol's Responses table.  Where it is silent: every other
 * 5xx (501, 505, ...) is the endpoint's problem and is retried like a 503,
 * since a retry costs nothing and stopping the sync would need an operator;
 * 1xx and 3xx are refused (redirects are never followed, so a 3xx means the
 * configured URL is wrong), as is anything outside 100-599.
 */
CpHttpOutcome
cp_http_classify_status(long status)
{
	if (status >= 200 && status <= 299)
		return CP_HTTP_ACCEPTED;
	switch (status)
	{
		case 409:
			return CP_HTTP_ACCEPTED;
		case 408:
		case 425:
		case 429:
			return CP_HTTP_TRANSIENT;
		case 413:
			return CP_HTTP_TOO_LARGE;
		default:
			break;
	}
	if (status >= 500 && status <= 599)
		return CP_HTTP_TRANSIENT;
	return CP_HTTP_REFUSED;
}

/*
 * Transport failures are transient (the protocol's "connection failure,
 * timeout"), except those that only our own configuration causes and that
 * no retry can cure: a URL or protocol libcurl will not use, a client
 * certificate or key it cannot load, a CA file it cannot read.  Those stop
 * the sync with the message, as a refusal does, instead of retrying forever.
 * A server certificate that fails verification is one of those: a missing
 * or wrong CA (ca_file, ca_pem) or a URL naming a host the certificate does
 * not are by far the usual causes, and retrying them forever hid the fix;
 * an endpoint that deploys a bad certificate needs an operator as well.
 */
static CpHttpOutcome
classify_curl_error(CURLcode rc)
{
	switch (rc)
	{
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
		case CURLE_NOT_BUILT_IN:
		case CURLE_BAD_FUNCTION_ARGUMENT:
		case CURLE_SSL_CERTPROBLEM:
			return CP_HTTP_REFUSED;
		default:
			return is_certificate_error(rc) ? CP_HTTP_REFUSED : CP_HTTP_TRANSIENT;
	}
}

/*
 * The endpoint's certificate could not be verified against the CAs this
 * destination trusts (CURLE_SSL_CACERT is the same code as
 * CURLE_PEER_FAILED_VERIFICATION, which also covers a host name the
 * certificate does not name), or those CAs could not be loaded.
 */
static bool
is_certificate_error(CURLcode rc)
{
	switch (rc)
	{
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_ISSUER_ERROR:
		case CURLE_SSL_CRL_BADFILE:
		case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
			return true;
		default:
			return false;
	}
}
