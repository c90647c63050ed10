/*-------------------------------------------------------------------------
 *
 * http_answer.h
 *	  An endpoint's answer: what curl's callbacks collect of a response, and
 *	  what it means for the caller (CpHttpResult), per
 *	  shared/ingest-protocol.md ("Responses").
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_HTTP_ANSWER_H
#define CALABI_PUSH_HTTP_ANSWER_H

#include "postgres.h"

#include <curl/curl.h>

#include "lib/stringinfo.h"

#include "http.h"
#include "http_parse.h"

/* What the write and header callbacks collect about one response. */
typedef struct CpHttpResponse
{
	char	   *body;			/* body_cap + 1 bytes, allocated up front */
	size_t		body_cap;
	size_t		body_len;
	bool		body_truncated; /* more arrived than body_cap */
	CpResponseHeaders headers;	/* what header_cb kept (http_parse.c) */
} CpHttpResponse;

/* Its buffer, in cxt, keeping at most cap bytes of a body. */
extern void cp_http_response_alloc(CpHttpResponse *resp, MemoryContext cxt,
								   size_t cap);
/* Empty it for the next response. */
extern void cp_http_response_reset(CpHttpResponse *resp);
/* Forget a response that may hold a secret (a token endpoint's). */
extern void cp_http_response_wipe(CpHttpResponse *resp);

/* CURLOPT_WRITEFUNCTION and CURLOPT_HEADERFUNCTION, data a CpHttpResponse */
extern size_t cp_http_write_cb(char *ptr, size_t size, size_t nmemb,
							   void *userdata);
extern size_t cp_http_header_cb(char *buffer, size_t size, size_t nitems,
								void *userdata);

/* The ingest protocol's Responses table: what an HTTP status means. */
extern CpHttpOutcome cp_http_classify_status(long status);
/* Retry-After in ms from now; -1 when absent or unparsable. */
extern int	cp_http_retry_after(const CpHttpResponse *resp);

/* The start of a response body, for a person (cp_http_excerpt says how). */
extern void cp_http_append_excerpt(StringInfo buf, const char *data,
								   size_t len, bool more);
/* "<prefix>HTTP <status>: <start of the body><suffix>" into result. */
extern void cp_http_describe_status(CpHttpResult *result, const char *prefix,
									long status, const CpHttpResponse *resp,
									const char *suffix);

/*
 * A failed transfer of a destination (cfg) into result: its outcome and
 * message.  egress_refusal is why the open-socket callback refused an
 * address, or "".
 */
extern void cp_http_describe_transfer_error(CpHttpResult *result,
											const char *prefix, CURLcode rc,
											const char *errbuf,
											const char *egress_refusal,
											const CpDestinationConfig *cfg);

#endif							/* CALABI_PUSH_HTTP_ANSWER_H */
