/*-------------------------------------------------------------------------
 *
 * http_transport.c
 *	  libcurl under a destination's client: its handles, and the driver
 *	  that runs a transfer while the worker stays responsive.
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
 * longjmp out of a transfer is CHECK_FOR_INTERRUPTS(), between curl calls:
 * the interrupted transfer then stays attached to the multi handle
 * (client->attached says which), and the next call, or the client's
 * destruction, detaches it first; per-request memory is in a context that
 * every call resets.
 *
 * A batch started in the background (cp_http_post_start) is driven by the
 * sending thread instead (http_sender.c), while the worker reads on.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "destination.h"
#include "http_egress.h"
#include "http_sender.h"
#include "http_transport.h"
#include "thread.h"

/* CURLOPT_PROTOCOLS_STR; the *_BLOB options are older */
#if LIBCURL_VERSION_NUM < 0x075500
#error "calabi_push requires libcurl 7.85 or later"
#endif

static int64
monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
cp_http_wipe_string(char *s)
{
	if (s != NULL)
		explicit_bzero(s, strlen(s));
}

/* Free a header list curl no longer references, wiping Authorization. */
void
cp_http_free_headers(struct curl_slist **list)
{
	for (struct curl_slist *item = *list; item != NULL; item = item->next)
		cp_http_wipe_string(item->data);
	curl_slist_free_all(*list);
	*list = NULL;
}

/* ---------------------------------------------------------------------
 * curl callbacks.  No ereport, elog or palloc in here: see the top.
 * ---------------------------------------------------------------------
 */

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


/* As CP_SETOPT, for the multi handle. */
#define CP_MULTI_SETOPT(client, multi, option, value) \
	check_multi_setopt((client), curl_multi_setopt((multi), (option), (value)), \
					   #option)

void
cp_http_check_setopt(const CpHttpClient *client, CURLcode rc,
					 const char *option)
{
	if (likely(rc == CURLE_OK))
		return;
	if (rc == CURLE_OUT_OF_MEMORY)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory setting %s for destination \"%s\"",
						option, cp_destination_name(&client->cfg))));
	if (rc == CURLE_UNKNOWN_OPTION || rc == CURLE_NOT_BUILT_IN)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("libcurl does not support %s, needed by destination \"%s\": %s",
						option, cp_destination_name(&client->cfg),
						curl_easy_strerror(rc)),
				 errdetail("The server uses libcurl %s.",
						   curl_version_info(CURLVERSION_NOW)->version),
				 errhint("calabi_push needs libcurl 7.85 or later, built with OpenSSL.")));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("libcurl rejected %s for destination \"%s\": %s",
					option, cp_destination_name(&client->cfg), curl_easy_strerror(rc)),
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
					option, cp_destination_name(&client->cfg),
					curl_multi_strerror(rc)),
			 errhint("calabi_push needs libcurl 7.85 or later.")));
}

/* Point easy at a new header list (the previous one is freed). */
void
cp_http_set_headers(CpHttpClient *client, CURL *easy,
					struct curl_slist *list)
{
	CURLcode	rc;

	rc = curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);
	if (client->headers != NULL && client->headers != list)
		cp_http_free_headers(&client->headers);
	/* kept even on failure: the next call frees it */
	client->headers = list;
	cp_http_check_setopt(client, rc, "CURLOPT_HTTPHEADER");
}

/* curl_slist_append that errors, outside any callback, when out of memory */
void
cp_http_add_header(struct curl_slist **list, const char *header)
{
	struct curl_slist *l = curl_slist_append(*list, header);

	if (l == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	*list = l;
}

/* ---------------------------------------------------------------------
 * The handles
 * ---------------------------------------------------------------------
 */

/*
 * A new multi handle for the client (its connection cache empty), in place
 * of the one it had, if any: at creation, and when calabi_push.allowed_hosts
 * changed (the old one's connections were judged by the old list).  Only
 * while no transfer is attached.
 */
void
cp_http_make_multi(CpHttpClient *client)
{
	CURLM	   *multi = curl_multi_init();
	CURLM	   *old = client->multi;

	Assert(client->attached == NULL);
	if (multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle for destination \"%s\"",
						cp_destination_name(&client->cfg))));
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

/* A *_BLOB option from PEM text, which curl copies. */
#define CP_SETOPT_PEM(client, easy, option, pem) \
	set_pem(client, easy, option, #option, pem)

static void
set_pem(const CpHttpClient *client, CURL *easy, CURLoption option,
		const char *name, char *pem)
{
	struct curl_blob blob;

	blob.data = pem;
	blob.len = strlen(pem);
	blob.flags = CURL_BLOB_COPY;
	cp_http_check_setopt(client, curl_easy_setopt(easy, option, &blob), name);
}

/*
 * An easy handle with everything that does not change from one request to
 * the next.  Stored in *slot at once, so that an error leaves it to the
 * cleanup callback.
 */
void
cp_http_setup_easy(CpHttpClient *client, CURL **slot, const char *url,
				   char *errbuf, CpHttpResponse *resp,
				   CpConnectTarget *target)
{
	const CpDestinationConfig *cfg = &client->cfg;
	int			connect_ms = cfg->connect_timeout_ms > 0 ?
		cfg->connect_timeout_ms : CP_DESTINATION_DEFAULT_CONNECT_TIMEOUT_MS;
	int			request_ms = cfg->request_timeout_ms > 0 ?
		cfg->request_timeout_ms : CP_DESTINATION_DEFAULT_REQUEST_TIMEOUT_MS;
	CURL	   *easy;

	easy = curl_easy_init();
	if (easy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl handle for destination \"%s\"",
						cp_destination_name(cfg))));
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
	CP_SETOPT(client, easy, CURLOPT_OPENSOCKETFUNCTION, cp_http_opensocket_cb);
	CP_SETOPT(client, easy, CURLOPT_OPENSOCKETDATA, (void *) target);

	CP_SETOPT(client, easy, CURLOPT_WRITEFUNCTION, cp_http_write_cb);
	CP_SETOPT(client, easy, CURLOPT_WRITEDATA, (void *) resp);
	CP_SETOPT(client, easy, CURLOPT_HEADERFUNCTION, cp_http_header_cb);
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
		CP_SETOPT_PEM(client, easy, CURLOPT_CAINFO_BLOB, cfg->ca_pem);
		CP_SETOPT(client, easy, CURLOPT_CAPATH, (char *) NULL);
	}
	if (cfg->client_cert != NULL)
	{
		CP_SETOPT_PEM(client, easy, CURLOPT_SSLCERT_BLOB, cfg->client_cert);
		CP_SETOPT(client, easy, CURLOPT_SSLCERTTYPE, "PEM");
	}
	if (cfg->client_key != NULL)
	{
		CP_SETOPT_PEM(client, easy, CURLOPT_SSLKEY_BLOB, cfg->client_key);
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

/* After a transfer: curl keeps no pointer into memory we are about to free. */
void
cp_http_end_transfer(CpHttpClient *client, CURL *easy)
{
	/* clearing an option cannot fail */
	(void) curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
	(void) curl_easy_setopt(easy, CURLOPT_POSTFIELDS, NULL);
	memset(&client->upload, 0, sizeof(client->upload));
	cp_http_free_headers(&client->headers);
}


/* ---------------------------------------------------------------------
 * Driving a transfer
 * ---------------------------------------------------------------------
 */

/*
 * Take out of the multi handle a transfer that an interrupt left there.
 * curl closes its connection (it was mid-request) and tells the socket
 * callback; the easy handle is ready for a new request.
 */
void
cp_http_detach(CpHttpClient *client)
{
	CURLcode	rc;

	/* the sending thread may be driving it: curl must be ours first */
	if (cp_http_sender_has(client))
		(void) cp_http_sender_take_back(&rc);
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

CpHttpWaitLimit cp_http_wait_limit = NULL;

long
cp_http_caller_wait_limit(void)
{
	return cp_http_wait_limit != NULL ? cp_http_wait_limit() : -1;
}

long
cp_http_wait_timeout_ms(CpHttpClient *client)
{
	int64		remaining_us;

	if (!client->timer_armed)
		return CP_HTTP_MAX_WAIT_MS;
	remaining_us = client->timer_deadline_us - monotonic_us();
	if (remaining_us <= 0)
		return 0;
	return (long) Min((remaining_us + 999) / 1000, CP_HTTP_MAX_WAIT_MS);
}

/* Attach easy to the multi handle. */
CURLcode
cp_http_transfer_begin(CpHttpClient *client, CURL *easy, char *errbuf)
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
 * answer, wait for cp_http_transfer_wait.  Errors show there.
 */
void
cp_http_transfer_kick(CpHttpClient *client)
{
	int			running;
	sigset_t	old;

	cp_block_signals(&old);
	(void) curl_multi_socket_action(client->multi, CURL_SOCKET_TIMEOUT, 0,
									&running);
	cp_restore_signals(&old);
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

/* Note that a wait found fd ready to read and/or write. */
void
cp_http_note_ready(CpReadySocket *ready, int *nready, curl_socket_t fd,
				   bool in, bool out)
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
bool
cp_http_drive_round(CpHttpClient *client, CURL *easy,
					const CpReadySocket *ready, int nready, bool timed_out,
					CURLcode *rc, char *errbuf)
{
	CURLMcode	mrc = CURLM_OK;
	int			running;
	sigset_t	old;

	cp_block_signals(&old);

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
	cp_restore_signals(&old);

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

/* Drive the attached transfer to its end (see cp_http_run_transfer). */
CURLcode
cp_http_transfer_wait(CpHttpClient *client, CURL *easy, char *errbuf)
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
	if (cp_http_sender_has(client))
	{
		done = cp_http_sender_await(client, &rc);
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
		long		limit = cp_http_caller_wait_limit();
		long		timeout = cp_http_wait_timeout_ms(client);

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
			cp_http_note_ready(ready, &nready, events[i].fd,
							   events[i].events & WL_SOCKET_READABLE,
							   events[i].events & WL_SOCKET_WRITEABLE);
		done = cp_http_drive_round(client, easy, ready, nready, nevents == 0,
								   &rc, errbuf);
	}

	cp_http_detach(client);
	MemoryContextSwitchTo(oldcxt);
	return rc;
}

/*
 * Run one transfer of easy to its end.  Returns curl's result for it, with
 * errbuf set by curl; a failure of the multi interface itself is returned
 * as CURLE_FAILED_INIT with its text in errbuf.
 */
CURLcode
cp_http_run_transfer(CpHttpClient *client, CURL *easy, char *errbuf)
{
	CURLcode	rc = cp_http_transfer_begin(client, easy, errbuf);

	if (rc != CURLE_OK)
		return rc;
	return cp_http_transfer_wait(client, easy, errbuf);
}
