/*-------------------------------------------------------------------------
 *
 * http_parse.h
 *	  What the endpoint's answers say: the Retry-After header, a response
 *	  body quoted for a person, and an OAuth2 token response.
 *
 * Everything here reads bytes a remote endpoint chose, so it is kept apart
 * from the transfer machinery of http.c: plain C without any call into the
 * PostgreSQL backend (no palloc, no elog, no GUC or encoding lookup; only
 * PostgreSQL's pure UTF-8 helpers from src/common).  That lets the header
 * callback run it inside libcurl (where nothing may longjmp) and lets the
 * libFuzzer targets in test/fuzz/ call it without a server.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_HTTP_PARSE_H
#define CALABI_PUSH_HTTP_PARSE_H

#include <stddef.h>
#include <time.h>

/* What the header callback keeps of a response's headers. */
typedef struct CpResponseHeaders
{
	bool		have_retry_after;
	char		retry_after[64];	/* the header's value, trimmed */
} CpResponseHeaders;

/* Forget what an earlier response said. */
extern void cp_http_headers_reset(CpResponseHeaders *h);

/*
 * One header line as libcurl hands it over (len bytes, not NUL-terminated,
 * usually ending in CRLF).  A status line starts a new response (after a
 * proxy's CONNECT answer or an interim 1xx): only the last one's headers
 * count.
 */
extern void cp_http_header_line(CpResponseHeaders *h, const char *line,
								size_t len);

/*
 * Retry-After as delta-seconds or an HTTP-date (RFC 9110 10.2.3), in ms
 * after now, capped at INT_MAX; -1 when absent or unparsable.
 */
extern int	cp_http_retry_after_ms(const CpResponseHeaders *h, time_t now);

/* How much of a response body a message quotes. */
#define CP_HTTP_EXCERPT_MAX		200
/*
 * Room for an excerpt: the quoted bytes, "..." and a NUL.  The quoted bytes
 * may run one past CP_HTTP_EXCERPT_MAX: a collapsed space goes out with the
 * character after it, both when the limit is one byte away (the fuzz target
 * fuzz_excerpt found a 4-byte margin one too short).
 */
#define CP_HTTP_EXCERPT_SIZE	(CP_HTTP_EXCERPT_MAX + 1 + 3 + 1)

/*
 * The start of a response body for a person, NUL-terminated into out:
 * whitespace and control characters (NUL too) collapse to one space, bytes
 * that would not be valid text in the database become '?' (any byte above
 * 0x7f unless utf8, the database encoding being UTF-8, and the sequence is
 * legal UTF-8), at most CP_HTTP_EXCERPT_MAX bytes, and "..." if there was
 * more (more: the body was cut before it reached us).
 */
extern void cp_http_excerpt(char out[CP_HTTP_EXCERPT_SIZE], const char *data,
							size_t len, bool more, bool utf8);

/*
 * A 2xx OAuth2 token response (RFC 6749 5.1).  On success returns NULL and
 * fills *tr: access_token points into the parsed tree, lifetime is
 * expires_in in seconds, at most ten years (0 when absent, not positive or
 * not a number: the token is then used until the endpoint answers 401).  On failure
 * returns what is wrong, for a message (never quoting the body: it may hold
 * a token).  Either way the caller must call cp_http_token_release, which
 * wipes the token and frees the tree.
 */
typedef struct CpTokenResponse
{
	void	   *root;			/* the parsed cJSON tree, or NULL */
	const char *access_token;
	double		lifetime;
} CpTokenResponse;

extern const char *cp_http_token_parse(const char *body, size_t len,
									   CpTokenResponse *tr);
extern void cp_http_token_release(CpTokenResponse *tr);

#endif							/* CALABI_PUSH_HTTP_PARSE_H */
