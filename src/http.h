/*-------------------------------------------------------------------------
 *
 * http.h
 *	  The HTTPS client of a destination: one libcurl handle per destination,
 *	  reused for keep-alive; TLS always verified; custom CA, client
 *	  certificates, proxies, bearer tokens and OAuth2 client credentials.
 *
 * One call of cp_http_post is one attempt (plus, with OAuth2, one retry
 * after a 401 with a fresh token): the retry policy (backoff, Retry-After,
 * 413 splitting) belongs to the caller.  While a request is in flight the
 * caller's latch and postmaster death are watched together with curl's
 * sockets, and CHECK_FOR_INTERRUPTS() runs between curl calls (never inside
 * a curl callback), so SIGTERM stops a worker promptly even when the
 * endpoint stalls.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_HTTP_H
#define CALABI_PUSH_HTTP_H

#include "postgres.h"

#include "destination.h"

typedef enum CpHttpOutcome
{
	CP_HTTP_ACCEPTED,			/* 2xx, or 409 (already accepted) */
	CP_HTTP_TRANSIENT,			/* 408 425 429 5xx-retryable, transport
								 * failure, timeout: retry the same bytes */
	CP_HTTP_TOO_LARGE,			/* 413: split the batch */
	CP_HTTP_REFUSED,			/* any other 4xx (and 401 without OAuth2,
								 * or after one token refresh): stop */
	CP_HTTP_ABANDONED			/* given up unanswered (cp_http_wait_limit):
								 * what the endpoint did with it is unknown */
} CpHttpOutcome;

typedef struct CpHttpResult
{
	CpHttpOutcome outcome;
	long		status;			/* HTTP status; 0 when no response */
	int			retry_after_ms; /* from Retry-After (seconds or HTTP date);
								 * -1 when absent or unparsable */
	/* for a person: "HTTP 400: {"error":"..."}" (start of the body), or the
	 * transport error ("connection refused", "timed out after 30000 ms") */
	char		message[512];

	/*
	 * The same without anything the endpoint sent (body excerpt, Location):
	 * what sync_status shows to roles other than the destination's owner
	 * and superusers, since a response may hold another service's secrets.
	 */
	char		message_redacted[512];
} CpHttpResult;

/*
 * One protocol request: the body and the Calabi headers' values.  The body
 * sent is body then tail (tail may be NULL): an uncompressed batch is sent
 * from where its lines were written, its STATE line apart.
 */
typedef struct CpHttpRequest
{
	const char *body;
	size_t		body_len;
	const char *tail;
	size_t		tail_len;
	bool		gzip;			/* body is gzip: Content-Encoding: gzip */
	const char *sync_name;
	const char *sync_id;		/* uuid text */
	int64		batch_seq;
} CpHttpRequest;

typedef struct CpHttpClient CpHttpClient;

/*
 * How much longer, in milliseconds, a request may wait for its answer (-1:
 * as long as its own timeouts allow), asked after every wake-up of the wait
 * (a latch set by a signal included).  At 0 the request is given up and
 * the call returns CP_HTTP_ABANDONED.  A worker that is asked to stop sets
 * it, so that a slow endpoint holds its stop for a bounded time only.
 */
typedef long (*CpHttpWaitLimit) (void);
extern CpHttpWaitLimit cp_http_wait_limit;

/*
 * Creates a client for cfg (copied into mcxt).  Errors (ereport) on a
 * configuration libcurl rejects.  The client lives until destroyed or the
 * process exits.
 */
extern CpHttpClient *cp_http_client_create(const CpDestinationConfig *cfg,
										   MemoryContext mcxt);
extern void cp_http_client_destroy(CpHttpClient *client);

/*
 * POST one batch per the ingest protocol (all headers, User-Agent,
 * Authorization) and classify the answer.  Never errors for anything the
 * endpoint or the network does; may ERROR/FATAL out of CHECK_FOR_INTERRUPTS.
 */
extern void cp_http_post(CpHttpClient *client, const CpHttpRequest *req,
						 CpHttpResult *result);

/*
 * The same in two steps, so that the caller works while the endpoint
 * reads and answers: start sends what the socket takes now and returns;
 * finish completes it and classifies the answer.  req (and the body) must
 * stay as they are in between, and nothing else may use the client.  An
 * interrupt in between is harmless: the next call starts afresh.
 */
extern void cp_http_post_start(CpHttpClient *client, const CpHttpRequest *req);
extern void cp_http_post_finish(CpHttpClient *client, const CpHttpRequest *req,
								CpHttpResult *result);

#endif							/* CALABI_PUSH_HTTP_H */
