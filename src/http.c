/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The HTTPS client of a destination: one POST per batch, per
 *	  shared/ingest-protocol.md ("Transport" and "Responses").
 *
 * A worker has to stay responsive to SIGTERM, SIGHUP and postmaster death
 * while an endpoint takes its time, so nothing here blocks in libcurl.  A
 * client owns a multi handle and two easy handles (the ingest endpoint's,
 * reused so that its connection is kept alive between batches, and the
 * OAuth2 token endpoint's).  The multi handle drives whichever is in flight
 * with curl_multi_socket_action: curl's socket and timer callbacks tell us
 * which sockets to watch and when curl next needs to run, and we wait for
 * those sockets, curl's timeout and our latch together in one WaitEventSet
 * (rebuilt when curl's socket set changes).  curl_multi_wait or _poll alone
 * would not wake up for the latch.  After every wake we reset the latch and
 * run CHECK_FOR_INTERRUPTS() before giving curl the ready sockets.
 *
 * No ereport, elog or palloc may happen inside a curl callback: each of them
 * can longjmp, and a longjmp across libcurl's frames leaves it corrupt.  The
 * callbacks only copy into buffers allocated with the client (with a size
 * cap) and note sockets and timeouts in plain fields; everything that can
 * fail the PostgreSQL way runs after curl has returned.  What can still
 * longjmp out of cp_http_post is CHECK_FOR_INTERRUPTS(), between curl calls:
 * the interrupted transfer then stays attached to the multi handle
 * (client->attached says which), and the next call, or the client's
 * destruction, detaches it first; per-request memory is in a context that
 * every call resets.
 *
 * A batch started in the background (cp_http_post_start) is driven by a
 * helper thread instead, while the worker reads on; see "The sending
 * thread" below for what it may touch and when the worker takes it back.
 *
 * Secrets (the static token, the OAuth2 client secret and access tokens, the
 * client key) never appear in a message; buffers that held one are wiped.
 *
 * Where a sync may connect is calabi_push.allowed_hosts' decision (egress.c):
 * curl's open-socket callback judges every address it is about to connect
 * to, after name resolution, for the destination, the token endpoint and
 * the proxy alike, and refuses with CURL_SOCKET_BAD.  The callback may run
 * on the sending thread, so it reads no setting: each client judges by its
 * own copy of the parsed list, taken in begin_call (no transfer of the
 * client is in flight then, so nothing reads the copy while it is
 * replaced).  The worker reloads the setting on SIGHUP between batches;
 * when the list changed, the client also drops its open connections, which
 * were judged by the old list.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/base64.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "egress.h"
#include "http.h"
#include "http_parse.h"

/* CURLOPT_PROTOCOLS_STR; the *_BLOB options are older */
#if LIBCURL_VERSION_NUM < 0x075500
#error "calabi_push requires libcurl 7.85 or later"
#endif

#define CP_HTTP_DEFAULT_CONNECT_TIMEOUT_MS	10000
#define CP_HTTP_DEFAULT_REQUEST_TIMEOUT_MS	60000

/* What we keep of an ingest response: enough for a message. */
#define CP_HTTP_BODY_KEEP		4096
/* A token response must fit whole (JWT access tokens can be large). */
#define CP_HTTP_TOKEN_BODY_MAX	65536
/* What replaces it for roles that may not see it (see CpHttpResult). */
#define CP_HTTP_REDACTED	": [response shown only to the destination's owner]"

/* One transfer uses a socket or two (three with a proxy); room to spare. */
#define CP_HTTP_MAX_SOCKETS		16

/*
 * Longest single wait.  curl's timer callback tells us when it needs to run
 * again; this only bounds the damage if we ever missed an update.
 */
#define CP_HTTP_MAX_WAIT_MS		1000

/* What the write and header callbacks collect about one response. */
typedef struct CpHttpResponse
{
	char	   *body;			/* body_cap + 1 bytes, allocated up front */
	size_t		body_cap;
	size_t		body_len;
	bool		body_truncated; /* more arrived than body_cap */
	CpResponseHeaders headers;	/* what header_cb kept (http_parse.c) */
} CpHttpResponse;

/* The body curl reads for the request in flight: body, then tail. */
typedef struct CpHttpUpload
{
	const char *body;
	size_t		body_len;
	const char *tail;
	size_t		tail_len;
	size_t		pos;			/* next byte curl reads */
} CpHttpUpload;

/*
 * What an easy handle connects to, for the open-socket callback: the proxy
 * when there is one, else the URL's host.
 */
typedef struct CpConnectTarget
{
	struct CpHttpClient *client;
	const char *host;			/* name or address, without brackets */
	bool		proxy;
} CpConnectTarget;

/* A socket curl asked us to watch. */
typedef struct CpHttpSocket
{
	curl_socket_t fd;
	uint32		events;			/* WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE */
} CpHttpSocket;

struct CpHttpClient
{
	MemoryContext cxt;			/* the client's own; deleting it cleans up */
	MemoryContext request_cxt;	/* reset by every cp_http_post */
	MemoryContext caller_cxt;	/* current when cp_http_post was called */
	MemoryContextCallback cleanup;

	CpDestinationConfig cfg;	/* copied into cxt */
	bool		oauth;			/* cfg.token_url set */
	char	   *user_agent;

	CURLM	   *multi;
	CURL	   *easy;			/* the ingest endpoint */
	CURL	   *token_easy;		/* the OAuth2 token endpoint, or NULL */
	CURL	   *attached;		/* the easy handle in multi, if any */
	/* a POST started by cp_http_post_start, to be finished */
	bool		started;
	bool		start_failed;	/* before any transfer: start_result says why */
	CpHttpResult start_result;
	bool		abandoned;		/* the last transfer was given up (wait limit) */
	struct curl_slist *headers; /* of the request in flight */
	char		errbuf[CURL_ERROR_SIZE];
	char		token_errbuf[CURL_ERROR_SIZE];
	CpHttpResponse response;
	CpHttpResponse token_response;
	CpHttpUpload upload;		/* of the ingest request in flight */

	/* Written by the socket and timer callbacks, read between curl calls. */
	CpHttpSocket sockets[CP_HTTP_MAX_SOCKETS];
	int			nsockets;
	bool		sockets_overflow;
	bool		sockets_changed;
	bool		timer_armed;
	int64		timer_deadline_us;	/* CLOCK_MONOTONIC */

	WaitEventSet *wes;			/* latch, postmaster death, sockets */
	Latch	   *wes_latch;
	WaitEventSet *sender_wes;	/* latch, postmaster death, the sender's pipe */
	Latch	   *sender_wes_latch;

	/* OAuth2: the access token in use, NULL when there is none */
	char	   *access_token;
	bool		access_token_expires;
	TimestampTz access_token_refresh_at;

	/*
	 * calabi_push.allowed_hosts as of the last begin_call; only replaced
	 * while no transfer of the client is in flight.  The open-socket
	 * callback writes egress_refusal (why it refused an address), which is
	 * read after the transfer is over.
	 */
	CpEgressPolicy *egress;
	uint64		egress_generation;
	CpConnectTarget target;		/* of easy */
	CpConnectTarget token_target;	/* of token_easy */
	char	   *url_host;		/* the URL's host, without brackets */
	char	   *token_url_host; /* token_url's, or NULL */
	char		egress_refusal[CURL_ERROR_SIZE];
	/* with a proxy: why a literal target address is refused, or "" */
	char		target_refusal[CURL_ERROR_SIZE];
};

static bool curl_initialized = false;

CpHttpWaitLimit cp_http_wait_limit = NULL;


/* ---------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------
 */

static const char *
dest_name(const CpDestinationConfig *cfg)
{
	return cfg->name ? cfg->name : "(unnamed)";
}

static int64
monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
wipe_string(char *s)
{
	if (s != NULL)
		explicit_bzero(s, strlen(s));
}

/* Free a header list curl no longer references, wiping Authorization. */
static void
free_header_list(struct curl_slist **list)
{
	for (struct curl_slist *item = *list; item != NULL; item = item->next)
		wipe_string(item->data);
	curl_slist_free_all(*list);
	*list = NULL;
}

/* Text that may go into a header: no control characters (CR/LF above all). */
static bool
header_safe(const char *s)
{
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

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

/*
 * Append the start of a response body for a person (cp_http_excerpt says
 * how), judging bytes above 0x7f by this database's encoding.
 */
static void
append_excerpt(StringInfo buf, const char *data, size_t len, bool more)
{
	char		excerpt[CP_HTTP_EXCERPT_SIZE];

	cp_http_excerpt(excerpt, data, len, more,
					GetDatabaseEncoding() == PG_UTF8);
	appendStringInfoString(buf, excerpt);
}

/* "<prefix>HTTP <status>: <start of the body>" into result->message. */
static void
describe_status(CpHttpResult *result, const char *prefix, long status,
				const CpHttpResponse *resp, const char *suffix)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "%sHTTP %ld", prefix, status);
	if (resp->body_len > 0)
	{
		appendStringInfoString(&buf, ": ");
		append_excerpt(&buf, resp->body, resp->body_len, resp->body_truncated);
	}
	if (suffix)
		appendStringInfoString(&buf, suffix);
	strlcpy(result->message, buf.data, sizeof(result->message));
	pfree(buf.data);

	snprintf(result->message_redacted, sizeof(result->message_redacted),
			 "%sHTTP %ld%s%s", prefix, status,
			 resp->body_len > 0 ? CP_HTTP_REDACTED : "", suffix ? suffix : "");
}

static CpHttpOutcome classify_curl_error(CURLcode rc);
static bool is_certificate_error(CURLcode rc);

/*
 * A transport failure: curl's own text, which names no secret; or, when the
 * open-socket callback refused an address, why.  A refusal is transient:
 * a superuser may allow the address (and reload) while the sync retries.
 */
static void
describe_transfer_error(CpHttpClient *client, CpHttpResult *result,
						const char *prefix, CURLcode rc, const char *errbuf)
{
	if (client->egress_refusal[0] != '\0')
	{
		result->outcome = CP_HTTP_TRANSIENT;
		snprintf(result->message, sizeof(result->message), "%s%s", prefix,
				 client->egress_refusal);
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
				 client->cfg.ca_file != NULL ? "the CA file of option \"ca_file\"" :
				 client->cfg.ca_pem != NULL ? "the CAs of option \"ca_pem\"" :
				 "the system's CAs",
				 dest_name(&client->cfg));
		return;
	}
	snprintf(result->message, sizeof(result->message), "%s%s", prefix,
			 errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
}

/*
 * Retry-After in ms from now; -1 when absent or unparsable (see
 * cp_http_retry_after_ms).
 */
static int
parse_retry_after(const CpHttpResponse *resp)
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
static CpHttpOutcome
classify_status(long status)
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


/* ---------------------------------------------------------------------
 * curl callbacks.  No ereport, elog or palloc in here: see the top.
 * ---------------------------------------------------------------------
 */

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
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

/*
 * curl reads the body from where the caller wrote it, in two parts (an
 * uncompressed batch's lines, then its STATE line): no copy of a batch is
 * made just to send it.
 */
static size_t
read_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	CpHttpUpload *up = (CpHttpUpload *) userdata;
	size_t		room = size * nitems;
	size_t		n = 0;

	while (room > 0 && up->pos < up->body_len + up->tail_len)
	{
		bool		in_body = up->pos < up->body_len;
		const char *from = in_body ? up->body + up->pos :
			up->tail + (up->pos - up->body_len);
		size_t		left = in_body ? up->body_len - up->pos :
			up->body_len + up->tail_len - up->pos;
		size_t		k = Min(left, room);

		memcpy(buffer + n, from, k);
		n += k;
		room -= k;
		up->pos += k;
	}
	return n;
}

/* curl rewinds to resend (a reused connection found closed, say). */
static int
seek_cb(void *userdata, curl_off_t offset, int origin)
{
	CpHttpUpload *up = (CpHttpUpload *) userdata;

	if (origin != SEEK_SET || offset < 0 ||
		(size_t) offset > up->body_len + up->tail_len)
		return CURL_SEEKFUNC_CANTSEEK;
	up->pos = (size_t) offset;
	return CURL_SEEKFUNC_OK;
}

/* Only plain C in http_parse.c: nothing that could longjmp. */
static size_t
header_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	CpHttpResponse *resp = (CpHttpResponse *) userdata;
	size_t		len = size * nitems;

	cp_http_header_line(&resp->headers, buffer, len);
	return len;
}

static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	CpHttpClient *client = (CpHttpClient *) userp;
	uint32		events = 0;
	int			i;

	for (i = 0; i < client->nsockets; i++)
		if (client->sockets[i].fd == fd)
			break;

	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		events |= WL_SOCKET_READABLE;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		events |= WL_SOCKET_WRITEABLE;

	if (events == 0)
	{
		/* CURL_POLL_REMOVE, or CURL_POLL_NONE: stop watching it */
		if (i < client->nsockets)
		{
			client->sockets[i] = client->sockets[--client->nsockets];
			client->sockets_changed = true;
		}
		return 0;
	}

	if (i == client->nsockets)
	{
		if (client->nsockets >= CP_HTTP_MAX_SOCKETS)
		{
			client->sockets_overflow = true;
			return -1;
		}
		client->sockets[i].fd = fd;
		client->sockets[i].events = 0;
		client->nsockets++;
	}
	if (client->sockets[i].events != events)
	{
		client->sockets[i].events = events;
		client->sockets_changed = true;
	}
	return 0;
}

static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	CpHttpClient *client = (CpHttpClient *) userp;

	if (timeout_ms < 0)
		client->timer_armed = false;
	else
	{
		client->timer_armed = true;
		client->timer_deadline_us = monotonic_us() + (int64) timeout_ms * 1000;
	}
	return 0;
}


/*
 * Every connection curl makes, after name resolution: judged by the
 * client's copy of calabi_push.allowed_hosts.  Plain C only (it may run on
 * the sending thread); a refusal is noted for describe_transfer_error.
 */
static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	CpConnectTarget *target = (CpConnectTarget *) clientp;
	CpHttpClient *client = target->client;
	CpEgressVerdict verdict;
	char		addr[INET6_ADDRSTRLEN];

	/*
	 * The suggestion in a refusal is the host as configured: a name entry
	 * allows every address of the name, one address entry might not.
	 */
	verdict = cp_egress_judge(client->egress, target->host, &address->addr);
	if (cp_egress_allowed(verdict))
		return socket(address->family, address->socktype, address->protocol);

	cp_egress_format(&address->addr, addr, sizeof(addr));
	if (cp_egress_always_refused(verdict))
		snprintf(client->egress_refusal, sizeof(client->egress_refusal),
				 "connection to %s\"%s\" (host \"%s\") refused: %s is never allowed",
				 target->proxy ? "proxy " : "", addr, target->host,
				 cp_egress_verdict_text(verdict));
	else
		snprintf(client->egress_refusal, sizeof(client->egress_refusal),
				 "connection to %s\"%s\" (host \"%s\") refused by calabi_push.allowed_hosts: "
				 "%s; a superuser may allow it: ALTER SYSTEM SET calabi_push.allowed_hosts = '..., %s'; SELECT pg_reload_conf()",
				 target->proxy ? "proxy " : "", addr, target->host,
				 cp_egress_verdict_text(verdict), target->host);
	return CURL_SOCKET_BAD;
}

/* Every setopt is checked, and the error names the option. */
#define CP_SETOPT(client, easy, option, value) \
	check_setopt((client), curl_easy_setopt((easy), (option), (value)), \
				 #option)
#define CP_MULTI_SETOPT(client, multi, option, value) \
	check_multi_setopt((client), curl_multi_setopt((multi), (option), (value)), \
					   #option)

static void
check_setopt(const CpHttpClient *client, CURLcode rc, const char *option)
{
	if (likely(rc == CURLE_OK))
		return;
	if (rc == CURLE_OUT_OF_MEMORY)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory setting %s for destination \"%s\"",
						option, dest_name(&client->cfg))));
	if (rc == CURLE_UNKNOWN_OPTION || rc == CURLE_NOT_BUILT_IN)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("libcurl does not support %s, needed by destination \"%s\": %s",
						option, dest_name(&client->cfg),
						curl_easy_strerror(rc)),
				 errdetail("The server uses libcurl %s.",
						   curl_version_info(CURLVERSION_NOW)->version),
				 errhint("calabi_push needs libcurl 7.85 or later, built with OpenSSL.")));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("libcurl rejected %s for destination \"%s\": %s",
					option, dest_name(&client->cfg), curl_easy_strerror(rc)),
			 errhint("Check the destination's URL, proxy and TLS settings.")));
}

static void
check_multi_setopt(const CpHttpClient *client, CURLMcode rc,
				   const char *option)
{
	if (likely(rc == CURLM_OK))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INTERNAL_ERROR),
			 errmsg("libcurl rejected %s for destination \"%s\": %s",
					option, dest_name(&client->cfg),
					curl_multi_strerror(rc)),
			 errhint("calabi_push needs libcurl 7.85 or later.")));
}

/* ---------------------------------------------------------------------
 * Driving a transfer
 * ---------------------------------------------------------------------
 */

static bool sender_has(CpHttpClient *client);
static bool sender_take_back(CURLcode *rc);

/*
 * Take out of the multi handle a transfer that an interrupt left there.
 * curl closes its connection (it was mid-request) and tells the socket
 * callback; the easy handle is ready for a new request.
 */
static void
detach_transfer(CpHttpClient *client)
{
	CURLcode	rc;

	/* the sending thread may be driving it: curl must be ours first */
	if (sender_has(client))
		(void) sender_take_back(&rc);
	if (client->attached != NULL)
	{
		curl_multi_remove_handle(client->multi, client->attached);
		client->attached = NULL;
	}
}

static void
rebuild_wait_set(CpHttpClient *client)
{
	if (client->wes != NULL)
	{
		FreeWaitEventSet(client->wes);
		client->wes = NULL;
	}
	client->wes = cp_create_wait_event_set(client->cxt, client->nsockets + 2);
	AddWaitEventToSet(client->wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch,
					  NULL);
	if (IsUnderPostmaster)
		AddWaitEventToSet(client->wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET,
						  NULL, NULL);
	for (int i = 0; i < client->nsockets; i++)
		AddWaitEventToSet(client->wes, client->sockets[i].events,
						  client->sockets[i].fd, NULL, NULL);
	client->wes_latch = MyLatch;
	client->sockets_changed = false;
}

static long
wait_timeout_ms(CpHttpClient *client)
{
	int64		remaining_us;

	if (!client->timer_armed)
		return CP_HTTP_MAX_WAIT_MS;
	remaining_us = client->timer_deadline_us - monotonic_us();
	if (remaining_us <= 0)
		return 0;
	return (long) Min((remaining_us + 999) / 1000, CP_HTTP_MAX_WAIT_MS);
}

/*
 * The caller's limit on the wait (cp_http_wait_limit): -1 none, 0 give up
 * now, else at most that many ms.  Worker side only: the sending thread
 * never calls it.
 */
static long
caller_wait_limit(void)
{
	return cp_http_wait_limit != NULL ? cp_http_wait_limit() : -1;
}

/*
 * Block every signal of this thread, the old mask into *old, around a call
 * into curl that may connect: curl's threaded resolver starts its thread
 * there, and a thread inherits its creator's mask, so that the backend's
 * signals can then only reach the worker's own thread (one arriving
 * meanwhile waits until the mask is restored).
 */
static void
block_signals(sigset_t *old)
{
	sigset_t	all;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, old);
}

/* Attach easy to the multi handle. */
static CURLcode
transfer_begin(CpHttpClient *client, CURL *easy, char *errbuf)
{
	CURLMcode	mrc;

	Assert(client->attached == NULL);
	errbuf[0] = '\0';
	client->egress_refusal[0] = '\0';
	client->sockets_overflow = false;

	mrc = curl_multi_add_handle(client->multi, easy);
	if (mrc != CURLM_OK)
	{
		snprintf(errbuf, CURL_ERROR_SIZE, "curl_multi_add_handle: %s",
				 curl_multi_strerror(mrc));
		return CURLE_FAILED_INIT;
	}
	client->attached = easy;
	return CURLE_OK;
}

/*
 * Start the attached transfer without waiting: let curl connect (or reuse
 * its connection) and write what the socket takes now; the rest, and the
 * answer, wait for transfer_wait.  Errors show there.
 */
static void
transfer_kick(CpHttpClient *client)
{
	int			running;
	sigset_t	old;

	block_signals(&old);
	(void) curl_multi_socket_action(client->multi, CURL_SOCKET_TIMEOUT, 0,
									&running);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Has curl finished easy?  Then *rc is its result. */
static bool
collect_done(CpHttpClient *client, CURL *easy, CURLcode *rc)
{
	CURLMsg    *msg;
	int			left;
	bool		done = false;

	while ((msg = curl_multi_info_read(client->multi, &left)) != NULL)
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy)
		{
			*rc = msg->data.result;
			done = true;
		}
	return done;
}

/* A socket a wait found ready, and for what (CURL_CSELECT_*). */
typedef struct CpReadySocket
{
	curl_socket_t fd;
	int			mask;
} CpReadySocket;

/* Note that a wait found fd ready to read and/or write. */
static void
note_ready(CpReadySocket *ready, int *nready, curl_socket_t fd, bool in,
		   bool out)
{
	if (!in && !out)
		return;
	ready[*nready].fd = fd;
	ready[*nready].mask = (in ? CURL_CSELECT_IN : 0) | (out ? CURL_CSELECT_OUT : 0);
	(*nready)++;
}

/*
 * One round of curl's work after a wait: the ready sockets, then its timer
 * when due (or when the wait timed out, when letting curl check its timers
 * is harmless).  Returns true when the transfer of easy is over, *rc its
 * result.  curl and plain C only: the sending thread runs it too.
 */
static bool
drive_round(CpHttpClient *client, CURL *easy, const CpReadySocket *ready,
			int nready, bool timed_out, CURLcode *rc, char *errbuf)
{
	CURLMcode	mrc = CURLM_OK;
	int			running;
	sigset_t	old;

	block_signals(&old);

	for (int i = 0; i < nready && mrc == CURLM_OK; i++)
	{
		mrc = curl_multi_socket_action(client->multi, ready[i].fd,
									   ready[i].mask, &running);
		/* an earlier event of this round may have closed that socket */
		if (mrc == CURLM_BAD_SOCKET)
			mrc = CURLM_OK;
	}

	if (mrc == CURLM_OK &&
		(timed_out ||
		 (client->timer_armed && monotonic_us() >= client->timer_deadline_us)))
	{
		long		timeout_ms;

		mrc = curl_multi_socket_action(client->multi, CURL_SOCKET_TIMEOUT, 0,
									   &running);

		/*
		 * If our clock ran a little ahead of curl's, its timer has not
		 * expired yet and it has nothing new to tell timer_cb: ask it, so
		 * that we neither spin on a past deadline nor oversleep.
		 */
		if (mrc == CURLM_OK &&
			curl_multi_timeout(client->multi, &timeout_ms) == CURLM_OK)
			timer_cb(client->multi, timeout_ms, client);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	if (mrc != CURLM_OK)
	{
		snprintf(errbuf, CURL_ERROR_SIZE, "curl_multi_socket_action: %s",
				 curl_multi_strerror(mrc));
		*rc = CURLE_FAILED_INIT;
		return true;
	}
	if (client->sockets_overflow)
	{
		strlcpy(errbuf, "libcurl opened more sockets than expected",
				CURL_ERROR_SIZE);
		*rc = CURLE_FAILED_INIT;
		return true;
	}
	return collect_done(client, easy, rc);
}


/* ---------------------------------------------------------------------
 * The sending thread
 *
 * A started POST (cp_http_post_start) is driven to its end by a helper
 * thread while the worker reads on: encrypting and writing a batch of
 * several megabytes, and waiting for the endpoint to read it, would
 * otherwise take the worker's core for a fifth of a CDC sync's time.  As
 * with the compression thread, the thread runs libcurl (and the TLS
 * library under it) and nothing of PostgreSQL's: no palloc, no elog, every
 * signal blocked.  The transfer, its multi handle and everything curl reads
 * (the body, the header list, the response buffers) belong to the thread
 * from the hand-off until the worker takes the transfer back, finished or
 * paused; the worker touches none of it meanwhile.
 *
 * The worker takes it back before anything that could free what curl
 * reads: before an interrupt is serviced (which may longjmp), before a
 * transfer is detached (every new call, the client's destruction), and at
 * process exit (before exit() runs the TLS library's cleanup).  A paused
 * transfer is simply driven on by the worker itself.  One thread serves
 * the process, whichever client hands over; it is never joined.  When it
 * cannot be started, the worker drives everything as before.
 * ---------------------------------------------------------------------
 */

typedef enum CpSenderState
{
	SENDER_IDLE,				/* nothing handed over */
	SENDER_DRIVING,				/* the thread owns the transfer */
	SENDER_FINISHED,			/* over: rc is its result */
	SENDER_PAUSED				/* given back unfinished, on request */
} CpSenderState;

static struct
{
	bool		tried;			/* a thread was started, or could not be */
	bool		running;
	pthread_mutex_t mutex;
	pthread_cond_t cond;
	int			wake_pipe[2];	/* worker -> thread: see pause_requested */
	int			done_pipe[2];	/* thread -> worker: no longer DRIVING */
	/* protected by mutex */
	CpSenderState state;
	bool		pause_requested;
	CpHttpClient *client;		/* whose transfer, unless IDLE */
	CURLcode	rc;
} sender = {.wake_pipe = {-1, -1},.done_pipe = {-1, -1}};

static void
drain_pipe(int fd)
{
	char		buf[64];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

/* Wake whoever polls fd; a full pipe already holds a wake-up. */
static void
poke_pipe(int fd)
{
	if (write(fd, "x", 1) < 0)
		return;					/* EAGAIN: full, so a wake-up is pending */
}

static bool
sender_pause_requested(void)
{
	bool		requested;

	pthread_mutex_lock(&sender.mutex);
	requested = sender.pause_requested;
	pthread_mutex_unlock(&sender.mutex);
	return requested;
}

/*
 * The thread's transfer_wait: poll() on curl's sockets and the wake pipe.
 * Returns true when the transfer is over (*rc), false when asked to pause.
 */
static bool
sender_drive(CpHttpClient *client, CURLcode *rc)
{
	for (;;)
	{
		struct pollfd fds[CP_HTTP_MAX_SOCKETS + 1];
		CpReadySocket ready[CP_HTTP_MAX_SOCKETS];
		int			nfds = 0;
		int			nready = 0;
		int			n;

		if (sender_pause_requested())
			return false;

		fds[nfds].fd = sender.wake_pipe[0];
		fds[nfds++].events = POLLIN;
		for (int i = 0; i < client->nsockets; i++)
		{
			fds[nfds].fd = client->sockets[i].fd;
			fds[nfds].events =
				((client->sockets[i].events & WL_SOCKET_READABLE) ? POLLIN : 0) |
				((client->sockets[i].events & WL_SOCKET_WRITEABLE) ? POLLOUT : 0);
			nfds++;
		}
		n = poll(fds, nfds, (int) wait_timeout_ms(client));
		if (n < 0)
			n = 0;				/* EINTR cannot happen: signals are blocked */
		if (fds[0].revents != 0)
		{
			drain_pipe(sender.wake_pipe[0]);
			n--;
		}
		for (int i = 1; i < nfds; i++)
		{
			/* an error or hangup: let curl try what it asked for, and fail */
			if (fds[i].revents & (POLLERR | POLLHUP | POLLNVAL))
				fds[i].revents |= fds[i].events;
			note_ready(ready, &nready, fds[i].fd, fds[i].revents & POLLIN,
					   fds[i].revents & POLLOUT);
		}
		if (drive_round(client, client->easy, ready, nready, n <= 0 && nready == 0,
						rc, client->errbuf))
			return true;
	}
}

static void *
sender_main(void *arg)
{
#ifdef __linux__
	/*
	 * Yield to the worker (and to the server's backends) when cores are
	 * short: the worker is what the sync's pace depends on, and it waits
	 * for the thread only when a second batch must go.  Linux gives each
	 * thread its own nice value.
	 */
	(void) setpriority(PRIO_PROCESS, (id_t) syscall(SYS_gettid), 5);
#endif
	pthread_mutex_lock(&sender.mutex);
	for (;;)
	{
		CpHttpClient *client;
		CURLcode	rc = CURLE_OK;
		bool		finished;

		while (sender.state != SENDER_DRIVING)
			pthread_cond_wait(&sender.cond, &sender.mutex);
		client = sender.client;
		pthread_mutex_unlock(&sender.mutex);

		finished = sender_drive(client, &rc);

		pthread_mutex_lock(&sender.mutex);
		sender.rc = rc;
		sender.state = finished ? SENDER_FINISHED : SENDER_PAUSED;
		sender.pause_requested = false;
		pthread_cond_broadcast(&sender.cond);
		poke_pipe(sender.done_pipe[1]);
	}
	return NULL;
}

/*
 * Take the transfer back from the thread: at once if it is over, else
 * after asking it to pause (it does between two curl calls, which do not
 * block).  Returns true when the transfer is over, *rc its result.  Safe
 * anywhere, an exit callback included: pthread calls only.
 */
static bool
sender_take_back(CURLcode *rc)
{
	bool		finished;

	pthread_mutex_lock(&sender.mutex);
	if (sender.state == SENDER_DRIVING)
	{
		sender.pause_requested = true;
		poke_pipe(sender.wake_pipe[1]);
		while (sender.state == SENDER_DRIVING)
			pthread_cond_wait(&sender.cond, &sender.mutex);
	}
	finished = sender.state == SENDER_FINISHED;
	if (finished)
		*rc = sender.rc;
	sender.state = SENDER_IDLE;
	sender.client = NULL;
	pthread_mutex_unlock(&sender.mutex);
	if (sender.running)
		drain_pipe(sender.done_pipe[0]);
	return finished;
}

static bool
sender_has(CpHttpClient *client)
{
	return sender.running && sender.client == client;
}

static void
sender_at_exit(int code, Datum arg)
{
	CURLcode	rc;

	if (sender.client != NULL)
		(void) sender_take_back(&rc);
}

static void
close_pipe(int fds[2])
{
	close(fds[0]);
	close(fds[1]);
	fds[0] = fds[1] = -1;
}

static bool
make_nonblocking_pipe(int fds[2])
{
	if (pipe(fds) != 0)
		return false;
	if (fcntl(fds[0], F_SETFL, O_NONBLOCK) != 0 ||
		fcntl(fds[1], F_SETFL, O_NONBLOCK) != 0)
	{
		int			save_errno = errno;

		close_pipe(fds);
		errno = save_errno;
		return false;
	}
	return true;
}

/* Start the thread once per process; false when there is none. */
static bool
sender_start(void)
{
	sigset_t	old;
	int			rc;

	if (sender.tried)
		return sender.running;
	sender.tried = true;

	if (!make_nonblocking_pipe(sender.wake_pipe))
	{
		ereport(LOG,
				(errmsg("calabi_push could not make a pipe for its sending thread: %m; sending from the worker")));
		return false;
	}
	if (!make_nonblocking_pipe(sender.done_pipe))
	{
		ereport(LOG,
				(errmsg("calabi_push could not make a pipe for its sending thread: %m; sending from the worker")));
		close_pipe(sender.wake_pipe);
		return false;
	}
	pthread_mutex_init(&sender.mutex, NULL);
	pthread_cond_init(&sender.cond, NULL);

	/* the thread inherits this mask: every signal stays with the backend */
	block_signals(&old);
	{
		pthread_t	thread;

		rc = pthread_create(&thread, NULL, sender_main, NULL);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
	{
		ereport(LOG,
				(errmsg("calabi_push could not start its sending thread (%s); sending from the worker",
						strerror(rc))));
		close_pipe(sender.wake_pipe);
		close_pipe(sender.done_pipe);
		return false;
	}
	/* early among the exit callbacks: before anything else is let go */
	before_shmem_exit(sender_at_exit, (Datum) 0);
	sender.running = true;
	return true;
}

/* Hand the attached transfer of the ingest handle to the thread. */
static bool
sender_hand_over(CpHttpClient *client)
{
	/* one transfer at a time: while another client's is there, send here */
	if (!sender_start() || sender.client != NULL)
		return false;
	pthread_mutex_lock(&sender.mutex);
	sender.client = client;
	sender.pause_requested = false;
	sender.state = SENDER_DRIVING;
	pthread_cond_broadcast(&sender.cond);
	pthread_mutex_unlock(&sender.mutex);
	return true;
}

/*
 * Wait, responsive to interrupts, until the thread is done with client's
 * transfer.  Returns true when it is over (*rc); false when it was taken
 * back unfinished (an interrupt that did not end the call), for the worker
 * to drive on.
 */
static bool
sender_await(CpHttpClient *client, CURLcode *rc)
{
	if (client->sender_wes == NULL || client->sender_wes_latch != MyLatch)
	{
		if (client->sender_wes != NULL)
			FreeWaitEventSet(client->sender_wes);
		client->sender_wes = cp_create_wait_event_set(client->cxt, 3);
		AddWaitEventToSet(client->sender_wes, WL_LATCH_SET, PGINVALID_SOCKET,
						  MyLatch, NULL);
		if (IsUnderPostmaster)
			AddWaitEventToSet(client->sender_wes, WL_EXIT_ON_PM_DEATH,
							  PGINVALID_SOCKET, NULL, NULL);
		AddWaitEventToSet(client->sender_wes, WL_SOCKET_READABLE,
						  sender.done_pipe[0], NULL, NULL);
		client->sender_wes_latch = MyLatch;
	}

	for (;;)
	{
		WaitEvent	events[3];
		int			nevents;
		bool		over;
		long		limit = caller_wait_limit();

		pthread_mutex_lock(&sender.mutex);
		over = sender.state != SENDER_DRIVING;
		pthread_mutex_unlock(&sender.mutex);
		/* given up: the worker detaches it (transfer_wait) */
		if (over || limit == 0)
			return sender_take_back(rc);

		nevents = WaitEventSetWait(client->sender_wes,
								   limit > 0 ? Min(limit, CP_HTTP_MAX_WAIT_MS) :
								   CP_HTTP_MAX_WAIT_MS,
								   events, lengthof(events), PG_WAIT_EXTENSION);
		for (int i = 0; i < nevents; i++)
			if (events[i].events & WL_LATCH_SET)
				ResetLatch(MyLatch);
		if (InterruptPending)
		{
			/* it may longjmp: curl must be ours first */
			bool		finished = sender_take_back(rc);

			CHECK_FOR_INTERRUPTS();
			return finished;
		}
	}
}

/* Drive the attached transfer to its end (see run_transfer). */
static CURLcode
transfer_wait(CpHttpClient *client, CURL *easy, char *errbuf)
{
	CURLcode	rc = CURLE_OK;
	bool		done;
	MemoryContext oldcxt;

	Assert(client->attached == easy);

	/*
	 * CHECK_FOR_INTERRUPTS() below may longjmp to a caller that does not
	 * restore CurrentMemoryContext: leave it as the caller had it, not
	 * pointing at our request context.
	 */
	oldcxt = MemoryContextSwitchTo(client->caller_cxt);

	/* the thread, or a background start, may have finished it already */
	if (sender_has(client))
	{
		done = sender_await(client, &rc);
		/* curl told the thread of socket changes: watch them afresh */
		client->sockets_changed = true;
	}
	else
		done = collect_done(client, easy, &rc);

	while (!done)
	{
		WaitEvent	events[CP_HTTP_MAX_SOCKETS + 2];
		CpReadySocket ready[CP_HTTP_MAX_SOCKETS + 2];
		int			nevents;
		int			nready = 0;
		long		limit = caller_wait_limit();
		long		timeout = wait_timeout_ms(client);

		if (limit == 0)
		{
			/* curl closes the connection: the answer can no longer come */
			client->abandoned = true;
			rc = CURLE_ABORTED_BY_CALLBACK;
			break;
		}
		if (limit > 0)
			timeout = Min(timeout, limit);

		if (client->sockets_changed || client->wes == NULL ||
			client->wes_latch != MyLatch)
			rebuild_wait_set(client);

		nevents = WaitEventSetWait(client->wes, timeout,
								   events, lengthof(events),
								   PG_WAIT_EXTENSION);

		for (int i = 0; i < nevents; i++)
			if (events[i].events & WL_LATCH_SET)
				ResetLatch(MyLatch);
		/* may longjmp: we are not inside curl */
		CHECK_FOR_INTERRUPTS();

		for (int i = 0; i < nevents; i++)
			note_ready(ready, &nready, events[i].fd,
					   events[i].events & WL_SOCKET_READABLE,
					   events[i].events & WL_SOCKET_WRITEABLE);
		done = drive_round(client, easy, ready, nready, nevents == 0, &rc,
						   errbuf);
	}

	detach_transfer(client);
	MemoryContextSwitchTo(oldcxt);
	return rc;
}

/*
 * Run one transfer of easy to its end.  Returns curl's result for it, with
 * errbuf set by curl; a failure of the multi interface itself is returned
 * as CURLE_FAILED_INIT with its text in errbuf.
 */
static CURLcode
run_transfer(CpHttpClient *client, CURL *easy, char *errbuf)
{
	CURLcode	rc = transfer_begin(client, easy, errbuf);

	if (rc != CURLE_OK)
		return rc;
	return transfer_wait(client, easy, errbuf);
}

/* Point easy at a new header list (the previous one is freed). */
static void
set_headers(CpHttpClient *client, CURL *easy, struct curl_slist *list)
{
	CURLcode	rc;

	rc = curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);
	if (client->headers != NULL && client->headers != list)
		free_header_list(&client->headers);
	/* kept even on failure: the next call frees it */
	client->headers = list;
	check_setopt(client, rc, "CURLOPT_HTTPHEADER");
}

/* curl_slist_append that errors, outside any callback, when out of memory */
static void
add_header(struct curl_slist **list, const char *header)
{
	struct curl_slist *l = curl_slist_append(*list, header);

	if (l == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	*list = l;
}

/* Forget a response that may hold a secret (a token endpoint's). */
static void
wipe_response(CpHttpResponse *resp)
{
	if (resp->body != NULL)
		explicit_bzero(resp->body, resp->body_len + 1);
	resp->body_len = 0;
}

static void
reset_response(CpHttpResponse *resp)
{
	resp->body_len = 0;
	resp->body[0] = '\0';
	resp->body_truncated = false;
	cp_http_headers_reset(&resp->headers);
}

static void make_multi(CpHttpClient *client);

/*
 * With a proxy, curl connects to the proxy only, and the proxy reaches the
 * target: a target given as a literal address is judged here, before any
 * transfer (a target name is resolved by the proxy, out of our sight).
 */
static void
judge_proxied_target(CpHttpClient *client, const char *what, const char *host)
{
	struct sockaddr_storage ss;
	CpEgressVerdict verdict;
	char		addr[INET6_ADDRSTRLEN];
	char		bracketed[INET6_ADDRSTRLEN + 2];

	if (client->target_refusal[0] != '\0' || host == NULL)
		return;
	/* cp_egress_literal takes IPv6 in brackets, as in a URL */
	snprintf(bracketed, sizeof(bracketed), strchr(host, ':') ? "[%s]" : "%s", host);
	if (!cp_egress_literal(bracketed, &ss))
		return;
	verdict = cp_egress_judge(client->egress, NULL, (struct sockaddr *) &ss);
	if (cp_egress_allowed(verdict))
		return;
	cp_egress_format((struct sockaddr *) &ss, addr, sizeof(addr));
	snprintf(client->target_refusal, sizeof(client->target_refusal),
			 "%s \"%s\" (through the proxy) refused%s: %s%s%s%s",
			 what, addr,
			 cp_egress_always_refused(verdict) ? "" : " by calabi_push.allowed_hosts",
			 cp_egress_verdict_text(verdict),
			 cp_egress_always_refused(verdict) ? " is never allowed" :
			 "; a superuser may allow it: ALTER SYSTEM SET calabi_push.allowed_hosts = '..., ",
			 cp_egress_always_refused(verdict) ? "" : addr,
			 cp_egress_always_refused(verdict) ? "" : "'; SELECT pg_reload_conf()");
}

/*
 * Take this process's calabi_push.allowed_hosts, when it changed since the
 * client last did.  Only while no transfer of the client is in flight (the
 * open-socket callback reads client->egress).  Connections opened under
 * the old list are closed with the multi handle that caches them, so that
 * none is reused without being judged by the new one.
 */
static void
refresh_egress(CpHttpClient *client)
{
	uint64		generation;
	const CpEgressPolicy *current = cp_egress_current(&generation);
	CpEgressPolicy *old = client->egress;

	CpEgressPolicy *copy;

	Assert(client->attached == NULL && !sender_has(client));
	if (old != NULL && generation == client->egress_generation)
		return;
	copy = cp_egress_copy(current, client->cxt);
	/* first the new multi handle: if that fails, the next call tries again */
	if (old != NULL)
		make_multi(client);
	client->egress = copy;
	client->egress_generation = generation;
	if (old != NULL)
		pfree(old);
	client->target_refusal[0] = '\0';
	if (client->cfg.proxy != NULL && client->cfg.proxy[0] != '\0')
	{
		judge_proxied_target(client, "destination URL host", client->url_host);
		judge_proxied_target(client, "token_url host", client->token_url_host);
	}
}

/*
 * Start of every cp_http_post: undo whatever an interrupted call left, so
 * that nothing of it survives into this one.
 */
static void
begin_call(CpHttpClient *client)
{
	detach_transfer(client);
	if (client->headers != NULL)
	{
		/* clearing an option cannot fail */
		(void) curl_easy_setopt(client->easy, CURLOPT_HTTPHEADER, NULL);
		if (client->token_easy)
			(void) curl_easy_setopt(client->token_easy, CURLOPT_HTTPHEADER,
									NULL);
		free_header_list(&client->headers);
	}
	/* an interrupted token request may have left part of a token */
	wipe_response(&client->token_response);
	MemoryContextReset(client->request_cxt);
	refresh_egress(client);
}

/* After a transfer: curl keeps no pointer into memory we are about to free. */
static void
end_transfer(CpHttpClient *client, CURL *easy)
{
	/* clearing an option cannot fail */
	(void) curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
	(void) curl_easy_setopt(easy, CURLOPT_POSTFIELDS, NULL);
	memset(&client->upload, 0, sizeof(client->upload));
	free_header_list(&client->headers);
}


/* ---------------------------------------------------------------------
 * OAuth2 client credentials (RFC 6749 4.4)
 * ---------------------------------------------------------------------
 */

static void
drop_access_token(CpHttpClient *client)
{
	if (client->access_token != NULL)
	{
		wipe_string(client->access_token);
		pfree(client->access_token);
		client->access_token = NULL;
	}
}

static bool
access_token_usable(CpHttpClient *client)
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
	enclen = pg_b64_encode(plain.data, plain.len, encoded, enclen);
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
		drop_access_token(client);
		client->access_token = MemoryContextStrdup(client->cxt,
												   tr.access_token);
	}
	cp_http_token_release(&tr);
	wipe_response(resp);

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

/*
 * Fetch a new access token.  On failure fills result (outcome and message,
 * status 0 since the ingest endpoint was not reached) and returns false.
 */
static bool
fetch_access_token(CpHttpClient *client, CpHttpResult *result)
{
	static const char prefix[] = "OAuth2 token endpoint: ";
	const CpDestinationConfig *cfg = &client->cfg;
	StringInfoData form;
	struct curl_slist *list = NULL;
	char	   *auth;
	CURLcode	rc;
	long		status = 0;

	drop_access_token(client);

	initStringInfo(&form);
	appendStringInfoString(&form, "grant_type=client_credentials");
	if (cfg->scope != NULL && cfg->scope[0] != '\0')
	{
		appendStringInfoString(&form, "&scope=");
		append_form_urlencoded(&form, cfg->scope);
	}

	add_header(&list, "Content-Type: application/x-www-form-urlencoded");
	add_header(&list, "Accept: application/json");
	add_header(&list, "Expect:");
	set_headers(client, client->token_easy, list);
	auth = basic_authorization(cfg);
	add_header(&client->headers, auth);
	explicit_bzero(auth, strlen(auth));
	pfree(auth);

	CP_SETOPT(client, client->token_easy, CURLOPT_POSTFIELDS, form.data);
	CP_SETOPT(client, client->token_easy, CURLOPT_POSTFIELDSIZE_LARGE,
			  (curl_off_t) form.len);

	reset_response(&client->token_response);
	rc = run_transfer(client, client->token_easy, client->token_errbuf);
	end_transfer(client, client->token_easy);
	pfree(form.data);

	if (rc != CURLE_OK)
	{
		describe_transfer_error(client, result, prefix, rc,
								client->token_errbuf);
		return false;
	}

	curl_easy_getinfo(client->token_easy, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status > 299)
	{
		/* the same table as for batches, but nothing here is "accepted" */
		result->outcome = (classify_status(status) == CP_HTTP_TRANSIENT) ?
			CP_HTTP_TRANSIENT : CP_HTTP_REFUSED;
		result->retry_after_ms = parse_retry_after(&client->token_response);
		/* an error response (RFC 6749 5.2) holds no token: quote it */
		describe_status(result, prefix, status, &client->token_response, NULL);
		wipe_response(&client->token_response);
		return false;
	}

	return parse_token_response(client, result);
}


/* ---------------------------------------------------------------------
 * Creating and destroying a client
 * ---------------------------------------------------------------------
 */

/* A URL's scheme must be https, or http when the destination allows it. */
static void
check_url(const CpDestinationConfig *cfg, const char *what, const char *url)
{
	CURLU	   *u;
	CURLUcode	uc;
	char	   *scheme = NULL;
	bool		ok;

	if (url == NULL || url[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination \"%s\" has no %s", dest_name(cfg), what)));

	u = curl_url();
	if (u == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	uc = curl_url_set(u, CURLUPART_URL, url, 0);
	if (uc == CURLUE_OK)
		uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	if (uc != CURLUE_OK)
	{
		curl_url_cleanup(u);
		/* the URL itself is not quoted: it may carry credentials */
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the %s of destination \"%s\" is not a valid URL: %s",
						what, dest_name(cfg), curl_url_strerror(uc)),
				 errhint("Give a full URL, e.g. https://ingest.example.com/v1/batches.")));
	}
	ok = (pg_strcasecmp(scheme, "https") == 0 ||
		  (cfg->allow_http && pg_strcasecmp(scheme, "http") == 0));
	curl_free(scheme);
	curl_url_cleanup(u);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the %s of destination \"%s\" must be an https:// URL",
						what, dest_name(cfg)),
				 cfg->allow_http ? 0 :
				 errhint("Plain http:// is only accepted with allow_http, meant for loopback tests.")));
}

static void
check_config(const CpDestinationConfig *cfg)
{
	check_url(cfg, "URL", cfg->url);

	if (cfg->proxy != NULL && cfg->proxy[0] != '\0')
	{
		static const char *const schemes[] = {
			"http://", "https://", "socks5://", "socks5h://"
		};
		bool		ok = false;

		for (int i = 0; i < (int) lengthof(schemes); i++)
			if (pg_strncasecmp(cfg->proxy, schemes[i], strlen(schemes[i])) == 0)
				ok = true;
		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the proxy of destination \"%s\" must be an http://, https://, socks5:// or socks5h:// URL",
							dest_name(cfg)),
					 errhint("For an SSH tunnel (ssh -D 1080 host), use socks5h://127.0.0.1:1080.")));
	}

	if (cfg->ca_file != NULL && cfg->ca_pem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination \"%s\" has both ca_file and ca_pem",
						dest_name(cfg)),
				 errhint("Give the CA certificates one way only.")));
	if (cfg->client_key != NULL && cfg->client_cert == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination \"%s\" has a client_key but no client_cert",
						dest_name(cfg))));

	if (cfg->token != NULL && !header_safe(cfg->token))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the token of destination \"%s\" contains control characters",
						dest_name(cfg)),
				 errhint("Set the token without line breaks.")));

	if (cfg->token_url != NULL)
	{
		check_url(cfg, "token_url", cfg->token_url);
		if (cfg->token != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("destination \"%s\" has both a token and OAuth2 client credentials",
							dest_name(cfg)),
					 errhint("Use either a static token or token_url, client_id and client_secret.")));
		if (cfg->client_id == NULL || cfg->client_secret == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("destination \"%s\" has a token_url but no %s",
							dest_name(cfg),
							cfg->client_id == NULL ? "client_id" : "client_secret"),
					 errhint("OAuth2 client credentials need token_url, client_id and client_secret.")));
	}
}

static char *
copy_string(MemoryContext cxt, const char *s)
{
	return s ? MemoryContextStrdup(cxt, s) : NULL;
}

static void
alloc_response(CpHttpClient *client, CpHttpResponse *resp, size_t cap)
{
	resp->body = MemoryContextAllocZero(client->cxt, cap + 1);
	resp->body_cap = cap;
}

/* "calabi_push/0.1.0 PostgreSQL/15.20" */
static char *
make_user_agent(MemoryContext cxt)
{
	const char *version = GetConfigOption("server_version", true, false);
	MemoryContext oldcxt;
	char	   *ua;
	int			len;

	if (version == NULL)
		version = PG_VERSION;
	len = strcspn(version, " \t");
	oldcxt = MemoryContextSwitchTo(cxt);
	ua = psprintf("calabi_push/%s PostgreSQL/%.*s", CALABI_PUSH_VERSION,
				  len, version);
	MemoryContextSwitchTo(oldcxt);
	return ua;
}

/* The host of a URL curl accepts, without the brackets of IPv6, in cxt. */
static char *
url_host(CpHttpClient *client, const char *url)
{
	CURLU	   *u = curl_url();
	char	   *host = NULL;
	char	   *result;
	size_t		len;

	if (u == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
	{
		curl_url_cleanup(u);
		/* not quoted: a URL may carry credentials */
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a URL of destination \"%s\" has no host libcurl accepts",
						dest_name(&client->cfg)),
				 errhint("Correct the destination with calabi_push.alter_destination().")));
	}
	len = strlen(host);
	if (len >= 2 && host[0] == '[' && host[len - 1] == ']')
	{
		result = MemoryContextAlloc(client->cxt, len - 1);
		memcpy(result, host + 1, len - 2);
		result[len - 2] = '\0';
	}
	else
		result = MemoryContextStrdup(client->cxt, host);
	curl_free(host);
	curl_url_cleanup(u);
	return result;
}

/*
 * A new multi handle for the client (its connection cache empty), in place
 * of the one it had, if any: at creation, and when calabi_push.allowed_hosts
 * changed (the old one's connections were judged by the old list).  Only
 * while no transfer is attached.
 */
static void
make_multi(CpHttpClient *client)
{
	CURLM	   *multi = curl_multi_init();
	CURLM	   *old = client->multi;

	Assert(client->attached == NULL);
	if (multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle for destination \"%s\"",
						dest_name(&client->cfg))));
	if (old != NULL)
	{
		/* closes the old connections; socket_cb forgets their sockets */
		curl_multi_cleanup(old);
		client->timer_armed = false;
		client->sockets_changed = true;
	}
	client->multi = multi;
	CP_MULTI_SETOPT(client, client->multi, CURLMOPT_SOCKETFUNCTION,
					socket_cb);
	CP_MULTI_SETOPT(client, client->multi, CURLMOPT_SOCKETDATA,
					(void *) client);
	CP_MULTI_SETOPT(client, client->multi, CURLMOPT_TIMERFUNCTION,
					timer_cb);
	CP_MULTI_SETOPT(client, client->multi, CURLMOPT_TIMERDATA,
					(void *) client);
}

/*
 * An easy handle with everything that does not change from one request to
 * the next.  Stored in *slot at once, so that an error leaves it to the
 * cleanup callback.
 */
static void
setup_easy(CpHttpClient *client, CURL **slot, const char *url, char *errbuf,
		   CpHttpResponse *resp, CpConnectTarget *target)
{
	const CpDestinationConfig *cfg = &client->cfg;
	int			connect_ms = cfg->connect_timeout_ms > 0 ?
		cfg->connect_timeout_ms : CP_HTTP_DEFAULT_CONNECT_TIMEOUT_MS;
	int			request_ms = cfg->request_timeout_ms > 0 ?
		cfg->request_timeout_ms : CP_HTTP_DEFAULT_REQUEST_TIMEOUT_MS;
	CURL	   *easy;

	easy = curl_easy_init();
	if (easy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl handle for destination \"%s\"",
						dest_name(cfg))));
	*slot = easy;

	CP_SETOPT(client, easy, CURLOPT_ERRORBUFFER, errbuf);
	/* signals are PostgreSQL's; no alarm() for DNS timeouts */
	CP_SETOPT(client, easy, CURLOPT_NOSIGNAL, 1L);
	CP_SETOPT(client, easy, CURLOPT_URL, url);
	CP_SETOPT(client, easy, CURLOPT_PROTOCOLS_STR,
			  cfg->allow_http ? "http,https" : "https");
	CP_SETOPT(client, easy, CURLOPT_FOLLOWLOCATION, 0L);
	CP_SETOPT(client, easy, CURLOPT_POST, 1L);
	CP_SETOPT(client, easy, CURLOPT_USERAGENT, client->user_agent);
	CP_SETOPT(client, easy, CURLOPT_CONNECTTIMEOUT_MS, (long) connect_ms);
	/* libcurl has no total timeout unless told */
	CP_SETOPT(client, easy, CURLOPT_TIMEOUT_MS, (long) request_ms);
	CP_SETOPT(client, easy, CURLOPT_TCP_KEEPALIVE, 1L);
	/* every address, after resolution, against calabi_push.allowed_hosts */
	CP_SETOPT(client, easy, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
	CP_SETOPT(client, easy, CURLOPT_OPENSOCKETDATA, (void *) target);

	CP_SETOPT(client, easy, CURLOPT_WRITEFUNCTION, write_cb);
	CP_SETOPT(client, easy, CURLOPT_WRITEDATA, (void *) resp);
	CP_SETOPT(client, easy, CURLOPT_HEADERFUNCTION, header_cb);
	CP_SETOPT(client, easy, CURLOPT_HEADERDATA, (void *) resp);

	/* verification is never off, whatever else is configured */
	CP_SETOPT(client, easy, CURLOPT_SSL_VERIFYPEER, 1L);
	CP_SETOPT(client, easy, CURLOPT_SSL_VERIFYHOST, 2L);
	CP_SETOPT(client, easy, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);

	/*
	 * A configured CA replaces the system's: CAINFO_BLOB overrides CAINFO,
	 * but the built-in CAPATH would still be searched.
	 */
	if (cfg->ca_file != NULL)
	{
		CP_SETOPT(client, easy, CURLOPT_CAINFO, cfg->ca_file);
		CP_SETOPT(client, easy, CURLOPT_CAPATH, (char *) NULL);
#if LIBCURL_VERSION_NUM >= 0x075700
		/*
		 * Read the file again for every new connection (docs/destinations.md
		 * promises that changes to it count), not once a day.
		 */
		CP_SETOPT(client, easy, CURLOPT_CA_CACHE_TIMEOUT, 0L);
#endif
	}
	else if (cfg->ca_pem != NULL)
	{
		struct curl_blob blob;

		blob.data = cfg->ca_pem;
		blob.len = strlen(cfg->ca_pem);
		blob.flags = CURL_BLOB_COPY;
		CP_SETOPT(client, easy, CURLOPT_CAINFO_BLOB, &blob);
		CP_SETOPT(client, easy, CURLOPT_CAPATH, (char *) NULL);
	}
	if (cfg->client_cert != NULL)
	{
		struct curl_blob blob;

		blob.data = cfg->client_cert;
		blob.len = strlen(cfg->client_cert);
		blob.flags = CURL_BLOB_COPY;
		CP_SETOPT(client, easy, CURLOPT_SSLCERT_BLOB, &blob);
		CP_SETOPT(client, easy, CURLOPT_SSLCERTTYPE, "PEM");
	}
	if (cfg->client_key != NULL)
	{
		struct curl_blob blob;

		blob.data = cfg->client_key;
		blob.len = strlen(cfg->client_key);
		blob.flags = CURL_BLOB_COPY;
		CP_SETOPT(client, easy, CURLOPT_SSLKEY_BLOB, &blob);
		CP_SETOPT(client, easy, CURLOPT_SSLKEYTYPE, "PEM");
	}

	/*
	 * The proxy is the destination's alone: "" also keeps curl from taking
	 * one from the server's environment (https_proxy, ALL_PROXY).  An https
	 * proxy is verified against the system CAs.
	 */
	/*
	 * "" turns off the proxies the server's environment names (http_proxy,
	 * ...), and NOPROXY "" ignores its no_proxy: the connection goes exactly
	 * where the destination says, which is what the egress check judges.
	 */
	CP_SETOPT(client, easy, CURLOPT_PROXY, cfg->proxy ? cfg->proxy : "");
	CP_SETOPT(client, easy, CURLOPT_NOPROXY, "");
	CP_SETOPT(client, easy, CURLOPT_PROXY_SSL_VERIFYPEER, 1L);
	CP_SETOPT(client, easy, CURLOPT_PROXY_SSL_VERIFYHOST, 2L);
}

/*
 * The client's memory context is going away (cp_http_client_destroy, or its
 * parent was reset or deleted): release everything libcurl and the kernel
 * hold for it, and wipe the secrets.  Must not error.
 */
static void
client_cleanup(void *arg)
{
	CpHttpClient *client = (CpHttpClient *) arg;

	if (client->multi != NULL)
		detach_transfer(client);
	if (client->easy != NULL)
		curl_easy_cleanup(client->easy);
	if (client->token_easy != NULL)
		curl_easy_cleanup(client->token_easy);
	if (client->multi != NULL)
		curl_multi_cleanup(client->multi);
	client->easy = client->token_easy = NULL;
	client->multi = NULL;
	if (client->headers != NULL)
		free_header_list(&client->headers);
	if (client->wes != NULL)
	{
		FreeWaitEventSet(client->wes);
		client->wes = NULL;
	}
	if (client->sender_wes != NULL)
	{
		FreeWaitEventSet(client->sender_wes);
		client->sender_wes = NULL;
	}
	wipe_string(client->cfg.token);
	wipe_string(client->cfg.client_secret);
	wipe_string(client->cfg.client_key);
	wipe_string(client->access_token);
	wipe_response(&client->token_response);
}

CpHttpClient *
cp_http_client_create(const CpDestinationConfig *cfg, MemoryContext mcxt)
{
	MemoryContext cxt;
	CpHttpClient *client;

	check_config(cfg);

	if (!curl_initialized)
	{
		CURLcode	rc = curl_global_init(CURL_GLOBAL_ALL);

		if (rc != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not initialize libcurl: %s",
							curl_easy_strerror(rc))));
		curl_initialized = true;
	}

	cxt = AllocSetContextCreate(mcxt, "calabi_push http client",
								ALLOCSET_SMALL_SIZES);
	client = MemoryContextAllocZero(cxt, sizeof(CpHttpClient));
	client->cxt = cxt;
	client->cleanup.func = client_cleanup;
	client->cleanup.arg = client;
	MemoryContextRegisterResetCallback(cxt, &client->cleanup);

	PG_TRY();
	{
		CpDestinationConfig *c = &client->cfg;

		c->name = copy_string(cxt, cfg->name);
		c->url = copy_string(cxt, cfg->url);
		c->token = copy_string(cxt, cfg->token);
		c->ca_file = copy_string(cxt, cfg->ca_file);
		c->ca_pem = copy_string(cxt, cfg->ca_pem);
		c->client_cert = copy_string(cxt, cfg->client_cert);
		c->client_key = copy_string(cxt, cfg->client_key);
		c->proxy = copy_string(cxt, cfg->proxy);
		c->allow_http = cfg->allow_http;
		c->connect_timeout_ms = cfg->connect_timeout_ms;
		c->request_timeout_ms = cfg->request_timeout_ms;
		c->token_url = copy_string(cxt, cfg->token_url);
		c->client_id = copy_string(cxt, cfg->client_id);
		c->client_secret = copy_string(cxt, cfg->client_secret);
		c->scope = copy_string(cxt, cfg->scope);
		client->oauth = (c->token_url != NULL);

		client->request_cxt = AllocSetContextCreate(cxt,
													"calabi_push http request",
													ALLOCSET_DEFAULT_SIZES);
		client->user_agent = make_user_agent(cxt);
		alloc_response(client, &client->response, CP_HTTP_BODY_KEEP);

		client->url_host = url_host(client, c->url);
		client->token_url_host = c->token_url ? url_host(client, c->token_url) : NULL;
		client->target.client = client->token_target.client = client;
		if (c->proxy != NULL && c->proxy[0] != '\0')
		{
			client->target.host = client->token_target.host =
				url_host(client, c->proxy);
			client->target.proxy = client->token_target.proxy = true;
		}
		else
		{
			client->target.host = client->url_host;
			client->token_target.host = client->token_url_host;
		}
		/* client->egress: taken by the first begin_call, before any transfer */
		make_multi(client);

		setup_easy(client, &client->easy, c->url, client->errbuf,
				   &client->response, &client->target);
		CP_SETOPT(client, client->easy, CURLOPT_READFUNCTION, read_cb);
		CP_SETOPT(client, client->easy, CURLOPT_READDATA, (void *) &client->upload);
		CP_SETOPT(client, client->easy, CURLOPT_SEEKFUNCTION, seek_cb);
		CP_SETOPT(client, client->easy, CURLOPT_SEEKDATA, (void *) &client->upload);
		/* batches are megabytes: fewer, larger reads */
		CP_SETOPT(client, client->easy, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024);
		if (client->oauth)
		{
			alloc_response(client, &client->token_response,
						   CP_HTTP_TOKEN_BODY_MAX);
			setup_easy(client, &client->token_easy, c->token_url,
					   client->token_errbuf, &client->token_response,
					   &client->token_target);
		}
	}
	PG_CATCH();
	{
		/* the reset callback releases what was made */
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();

	return client;
}

void
cp_http_client_destroy(CpHttpClient *client)
{
	if (client != NULL)
		MemoryContextDelete(client->cxt);
}


/* ---------------------------------------------------------------------
 * One batch
 * ---------------------------------------------------------------------
 */

static void
check_request(const CpHttpClient *client, const CpHttpRequest *req)
{
	if (req->sync_name == NULL || !header_safe(req->sync_name) ||
		req->sync_id == NULL || !header_safe(req->sync_id) ||
		req->batch_seq <= 0 || (req->body == NULL && req->body_len > 0) ||
		(req->tail == NULL && req->tail_len > 0))
		elog(ERROR, "invalid HTTP request for destination \"%s\"",
			 dest_name(&client->cfg));
}

/* Headers and body of a batch request, on client->easy. */
static void
prepare_batch(CpHttpClient *client, const CpHttpRequest *req)
{
	struct curl_slist *list = NULL;
	const char *bearer;

	add_header(&list, "Content-Type: application/x-ndjson");
	if (req->gzip)
		add_header(&list, "Content-Encoding: gzip");
	add_header(&list, "Calabi-Protocol: 1");
	add_header(&list, psprintf("Calabi-Sync: %s", req->sync_name));
	add_header(&list, psprintf("Calabi-Sync-Id: %s", req->sync_id));
	add_header(&list, psprintf("Calabi-Batch-Seq: " INT64_FORMAT,
							   req->batch_seq));
	add_header(&list, psprintf("Idempotency-Key: %s:" INT64_FORMAT,
							   req->sync_id, req->batch_seq));
	/* no 100-continue round trip: the body goes with the headers */
	add_header(&list, "Expect:");
	set_headers(client, client->easy, list);

	bearer = client->oauth ? client->access_token : client->cfg.token;
	if (bearer != NULL)
	{
		char	   *auth = psprintf("Authorization: Bearer %s", bearer);

		add_header(&client->headers, auth);
		explicit_bzero(auth, strlen(auth));
		pfree(auth);
	}

	client->upload.body = req->body;
	client->upload.body_len = req->body_len;
	client->upload.tail = req->tail;
	client->upload.tail_len = req->tail_len;
	client->upload.pos = 0;
	CP_SETOPT(client, client->easy, CURLOPT_POSTFIELDSIZE_LARGE,
			  (curl_off_t) (req->body_len + req->tail_len));
}

/*
 * The whole POST, from a fresh start or (started) from a transfer that
 * cp_http_post_start left running: token, transfer, one more go after a 401
 * with OAuth2, the answer classified.
 */
static void
post(CpHttpClient *client, const CpHttpRequest *req, CpHttpResult *result,
	 bool started)
{
	MemoryContext oldcxt;
	bool		retried = false;

	memset(result, 0, sizeof(*result));
	result->retry_after_ms = -1;
	client->abandoned = false;
	if (!started)
	{
		check_request(client, req);
		begin_call(client);
		client->caller_cxt = CurrentMemoryContext;
	}
	oldcxt = MemoryContextSwitchTo(client->request_cxt);

	for (;;)
	{
		CURLcode	rc;
		long		status = 0;

		/* the result describes the last attempt only */
		result->status = 0;
		result->retry_after_ms = -1;

		if (started && client->start_failed)
		{
			*result = client->start_result;
			break;
		}
		if (!started && client->target_refusal[0] != '\0')
		{
			result->outcome = CP_HTTP_TRANSIENT;
			strlcpy(result->message, client->target_refusal,
					sizeof(result->message));
			break;
		}
		if (started)
		{
			rc = transfer_wait(client, client->easy, client->errbuf);
			started = false;
		}
		else
		{
			if (client->oauth && !access_token_usable(client) &&
				!fetch_access_token(client, result))
				break;
			prepare_batch(client, req);
			reset_response(&client->response);
			rc = run_transfer(client, client->easy, client->errbuf);
		}
		end_transfer(client, client->easy);

		if (rc != CURLE_OK)
		{
			describe_transfer_error(client, result, "", rc, client->errbuf);
			break;
		}

		curl_easy_getinfo(client->easy, CURLINFO_RESPONSE_CODE, &status);
		result->status = status;
		result->retry_after_ms = parse_retry_after(&client->response);

		/* 401 with OAuth2: the token may have been revoked; one more go */
		if (status == 401 && client->oauth && !retried)
		{
			drop_access_token(client);
			retried = true;
			continue;
		}

		result->outcome = classify_status(status);
		if (status >= 300 && status <= 399)
		{
			char	   *location = NULL;
			StringInfoData buf;

			/* curl works the target out even though it does not follow it */
			curl_easy_getinfo(client->easy, CURLINFO_REDIRECT_URL, &location);
			initStringInfo(&buf);
			appendStringInfo(&buf, "HTTP %ld: redirects are not followed", status);
			if (location != NULL)
			{
				appendStringInfoString(&buf, "; Location: ");
				append_excerpt(&buf, location, strlen(location), false);
			}
			strlcpy(result->message, buf.data, sizeof(result->message));
			snprintf(result->message_redacted, sizeof(result->message_redacted),
					 "HTTP %ld: redirects are not followed", status);
		}
		else
			describe_status(result, "", status, &client->response,
							(status == 401 && retried) ?
							" (after fetching a new OAuth2 token)" : NULL);
		break;
	}

	if (client->abandoned)
	{
		/* the token request or the batch's: either way, nothing is known */
		result->outcome = CP_HTTP_ABANDONED;
		result->status = 0;
		strlcpy(result->message, "given up without an answer: the worker is stopping",
				sizeof(result->message));
		result->message_redacted[0] = '\0';
	}

	/* a message without anything the endpoint sent is shown as it is */
	if (result->message_redacted[0] == '\0')
		strlcpy(result->message_redacted, result->message,
				sizeof(result->message_redacted));
	client->started = false;
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(client->request_cxt);
}

void
cp_http_post(CpHttpClient *client, const CpHttpRequest *req,
			 CpHttpResult *result)
{
	post(client, req, result, false);
}

void
cp_http_post_start(CpHttpClient *client, const CpHttpRequest *req)
{
	MemoryContext oldcxt;
	CURLcode	rc;

	check_request(client, req);
	begin_call(client);
	client->caller_cxt = CurrentMemoryContext;
	client->started = true;
	client->start_failed = false;
	oldcxt = MemoryContextSwitchTo(client->request_cxt);

	memset(&client->start_result, 0, sizeof(client->start_result));
	client->start_result.retry_after_ms = -1;
	if (client->target_refusal[0] != '\0')
	{
		client->start_result.outcome = CP_HTTP_TRANSIENT;
		strlcpy(client->start_result.message, client->target_refusal,
				sizeof(client->start_result.message));
		client->start_failed = true;
	}
	else if (client->oauth && !access_token_usable(client) &&
		!fetch_access_token(client, &client->start_result))
		client->start_failed = true;
	else
	{
		prepare_batch(client, req);
		reset_response(&client->response);
		/* the thread drives it; without one, the worker starts it */
		rc = transfer_begin(client, client->easy, client->errbuf);
		if (rc == CURLE_OK && !sender_hand_over(client))
			transfer_kick(client);
		if (rc != CURLE_OK)
		{
			end_transfer(client, client->easy);
			describe_transfer_error(client, &client->start_result, "", rc,
									client->errbuf);
			client->start_failed = true;
		}
	}
	MemoryContextSwitchTo(oldcxt);
}

void
cp_http_post_finish(CpHttpClient *client, const CpHttpRequest *req,
					CpHttpResult *result)
{
	Assert(client->started);
	post(client, req, result, true);
}
