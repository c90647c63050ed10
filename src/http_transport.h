/*-------------------------------------------------------------------------
 *
 * http_transport.h
 *	  A destination's client as libcurl sees it, and the driver that runs
 *	  its transfers while the worker stays responsive: shared by the files
 *	  of the HTTPS client (http*.c, oauth.c), not by the rest of the tree.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_HTTP_TRANSPORT_H
#define CALABI_PUSH_HTTP_TRANSPORT_H

#include "postgres.h"

#include <curl/curl.h>

#include "storage/latch.h"
#include "utils/timestamp.h"

#include "egress.h"
#include "http.h"
#include "http_answer.h"
#include "http_egress.h"
/* One transfer uses a socket or two (three with a proxy); room to spare. */
#define CP_HTTP_MAX_SOCKETS		16

/*
 * Longest single wait.  curl's timer callback tells us when it needs to run
 * again; this only bounds the damage if we ever missed an update.
 */
#define CP_HTTP_MAX_WAIT_MS		1000

/* The body curl reads for the request in flight: body, then tail. */
typedef struct CpHttpUpload
{
	const char *body;
	size_t		body_len;
	const char *tail;
	size_t		tail_len;
	size_t		pos;			/* next byte curl reads */
} CpHttpUpload;

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

	/* OAuth2 (oauth.c): the access token in use, NULL when there is none */
	char	   *access_token;
	bool		access_token_expires;
	TimestampTz access_token_refresh_at;

	/*
	 * calabi_push.allowed_hosts as of the last call's start (http_egress.c);
	 * only replaced while no transfer of the client is in flight.  The
	 * open-socket callback writes egress_refusal (why it refused an
	 * address), which is read after the transfer is over.
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

/* A socket a wait found ready, and for what (CURL_CSELECT_*). */
typedef struct CpReadySocket
{
	curl_socket_t fd;
	int			mask;
} CpReadySocket;

/* Every setopt is checked, and the error names the option. */
#define CP_SETOPT(client, easy, option, value) \
	cp_http_check_setopt((client), curl_easy_setopt((easy), (option), (value)), \
						 #option)
extern void cp_http_check_setopt(const CpHttpClient *client, CURLcode rc,
								 const char *option);

/* Wipe a string that may hold a secret (NULL is fine). */
extern void cp_http_wipe_string(char *s);
/* Free a header list curl no longer references, wiping Authorization. */
extern void cp_http_free_headers(struct curl_slist **list);
/* Point easy at a new header list (the previous one is freed). */
extern void cp_http_set_headers(CpHttpClient *client, CURL *easy,
								struct curl_slist *list);
/* curl_slist_append that errors, outside any callback, when out of memory */
extern void cp_http_add_header(struct curl_slist **list, const char *header);

/*
 * A new multi handle for the client (its connection cache empty), in place
 * of the one it had, if any.  Only while no transfer is attached.
 */
extern void cp_http_make_multi(CpHttpClient *client);
/*
 * An easy handle for url with everything that does not change from one
 * request to the next, stored in *slot at once.
 */
extern void cp_http_setup_easy(CpHttpClient *client, CURL **slot,
							   const char *url, char *errbuf,
							   CpHttpResponse *resp, CpConnectTarget *target);

/* After a transfer: curl keeps no pointer into memory about to be freed. */
extern void cp_http_end_transfer(CpHttpClient *client, CURL *easy);
/* Take an unfinished transfer out of the multi handle, if there is one. */
extern void cp_http_detach(CpHttpClient *client);

/* Attach easy to the multi handle. */
extern CURLcode cp_http_transfer_begin(CpHttpClient *client, CURL *easy,
									   char *errbuf);
/*
 * The caller's limit on a wait (cp_http_wait_limit): -1 none, 0 give up
 * now, else at most that many ms.  Worker side only: the sending thread
 * never calls it.
 */
extern long cp_http_caller_wait_limit(void);
/* Let the attached transfer start without waiting for it. */
extern void cp_http_transfer_kick(CpHttpClient *client);
/* Drive the attached transfer to its end; may longjmp (interrupts). */
extern CURLcode cp_http_transfer_wait(CpHttpClient *client, CURL *easy,
									  char *errbuf);
/* Both: one transfer of easy from start to end. */
extern CURLcode cp_http_run_transfer(CpHttpClient *client, CURL *easy,
									 char *errbuf);

/*
 * For whoever waits for curl's sockets (the worker here, or the sending
 * thread): how long to wait at most; note a socket found ready; then one
 * round of curl's work.  Plain C and curl only.
 */
extern long cp_http_wait_timeout_ms(CpHttpClient *client);
extern void cp_http_note_ready(CpReadySocket *ready, int *nready,
							   curl_socket_t fd, bool in, bool out);
extern bool cp_http_drive_round(CpHttpClient *client, CURL *easy,
								const CpReadySocket *ready, int nready,
								bool timed_out, CURLcode *rc, char *errbuf);

#endif							/* CALABI_PUSH_HTTP_TRANSPORT_H */
