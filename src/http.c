/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The HTTPS client of a destination: one POST per batch, per
 *	  shared/ingest-protocol.md ("Transport" and "Responses").
 *
 * This file makes and destroys a client and sends a batch.  The rest of the
 * client is split by concept: http_transport.c drives libcurl while the
 * worker stays responsive (and says what may happen inside a curl
 * callback), http_sender.c is the thread that sends a started batch,
 * http_answer.c reads the endpoint's answer, http_egress.c judges every
 * connection by calabi_push.allowed_hosts, and oauth.c fetches OAuth2
 * access tokens.
 *
 * Secrets (the static token, the OAuth2 client secret and access tokens, the
 * client key) never appear in a message; buffers that held one are wiped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>

#include <curl/curl.h>

#include "utils/guc.h"
#include "utils/memutils.h"

#include "destination.h"
#include "http.h"
#include "http_answer.h"
#include "http_egress.h"
#include "http_sender.h"
#include "http_transport.h"
#include "oauth.h"

/* What we keep of an ingest response: enough for a message. */
#define CP_HTTP_BODY_KEEP		4096

static bool curl_initialized = false;

/* Text that may go into a header: no control characters (CR/LF above all). */
static bool
header_safe(const char *s)
{
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

/* ---------------------------------------------------------------------
 * The request body: curl's read and seek callbacks.  No ereport, elog or
 * palloc in here (see http_transport.c).
 * ---------------------------------------------------------------------
 */

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


/* ---------------------------------------------------------------------
 * Creating and destroying a client
 * ---------------------------------------------------------------------
 */

static char *
copy_string(MemoryContext cxt, const char *s)
{
	return s ? MemoryContextStrdup(cxt, s) : NULL;
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
						cp_destination_name(&client->cfg)),
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
 * The client's memory context is going away (cp_http_client_destroy, or its
 * parent was reset or deleted): release everything libcurl and the kernel
 * hold for it, and wipe the secrets.  Must not error.
 */
static void
client_cleanup(void *arg)
{
	CpHttpClient *client = (CpHttpClient *) arg;

	if (client->multi != NULL)
		cp_http_detach(client);
	if (client->easy != NULL)
		curl_easy_cleanup(client->easy);
	if (client->token_easy != NULL)
		curl_easy_cleanup(client->token_easy);
	if (client->multi != NULL)
		curl_multi_cleanup(client->multi);
	client->easy = client->token_easy = NULL;
	client->multi = NULL;
	if (client->headers != NULL)
		cp_http_free_headers(&client->headers);
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
	cp_http_wipe_string(client->cfg.token);
	cp_http_wipe_string(client->cfg.client_secret);
	cp_http_wipe_string(client->cfg.client_key);
	cp_http_wipe_string(client->access_token);
	cp_http_response_wipe(&client->token_response);
}

CpHttpClient *
cp_http_client_create(const CpDestinationConfig *cfg, MemoryContext mcxt)
{
	MemoryContext cxt;
	CpHttpClient *client;

	/* a rule broken in the catalog stops the sync with the rule's message */
	cp_destination_check(cfg);

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
		cp_http_response_alloc(&client->response, cxt, CP_HTTP_BODY_KEEP);

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
		cp_http_make_multi(client);

		cp_http_setup_easy(client, &client->easy, c->url, client->errbuf,
						   &client->response, &client->target);
		CP_SETOPT(client, client->easy, CURLOPT_READFUNCTION, read_cb);
		CP_SETOPT(client, client->easy, CURLOPT_READDATA, (void *) &client->upload);
		CP_SETOPT(client, client->easy, CURLOPT_SEEKFUNCTION, seek_cb);
		CP_SETOPT(client, client->easy, CURLOPT_SEEKDATA, (void *) &client->upload);
		/* batches are megabytes: fewer, larger reads */
		CP_SETOPT(client, client->easy, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024);
		if (client->oauth)
		{
			cp_http_response_alloc(&client->token_response, cxt,
								   CP_HTTP_TOKEN_BODY_MAX);
			cp_http_setup_easy(client, &client->token_easy, c->token_url,
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

/*
 * Start of every cp_http_post: undo whatever an interrupted call left, so
 * that nothing of it survives into this one.
 */
static void
begin_call(CpHttpClient *client)
{
	cp_http_detach(client);
	if (client->headers != NULL)
	{
		/* clearing an option cannot fail */
		(void) curl_easy_setopt(client->easy, CURLOPT_HTTPHEADER, NULL);
		if (client->token_easy)
			(void) curl_easy_setopt(client->token_easy, CURLOPT_HTTPHEADER,
									NULL);
		cp_http_free_headers(&client->headers);
	}
	/* an interrupted token request may have left part of a token */
	cp_http_response_wipe(&client->token_response);
	MemoryContextReset(client->request_cxt);
	cp_http_refresh_egress(client);
}

static void
check_request(const CpHttpClient *client, const CpHttpRequest *req)
{
	if (req->sync_name == NULL || !header_safe(req->sync_name) ||
		req->sync_id == NULL || !header_safe(req->sync_id) ||
		req->batch_seq <= 0 || (req->body == NULL && req->body_len > 0) ||
		(req->tail == NULL && req->tail_len > 0))
		elog(ERROR, "invalid HTTP request for destination \"%s\"",
			 cp_destination_name(&client->cfg));
}

/* Headers and body of a batch request, on client->easy. */
static void
prepare_batch(CpHttpClient *client, const CpHttpRequest *req)
{
	struct curl_slist *list = NULL;
	const char *bearer;

	cp_http_add_header(&list, "Content-Type: application/x-ndjson");
	if (req->gzip)
		cp_http_add_header(&list, "Content-Encoding: gzip");
	cp_http_add_header(&list, "Calabi-Protocol: 1");
	cp_http_add_header(&list, psprintf("Calabi-Sync: %s", req->sync_name));
	cp_http_add_header(&list, psprintf("Calabi-Sync-Id: %s", req->sync_id));
	cp_http_add_header(&list, psprintf("Calabi-Batch-Seq: " INT64_FORMAT,
							   req->batch_seq));
	cp_http_add_header(&list, psprintf("Idempotency-Key: %s:" INT64_FORMAT,
							   req->sync_id, req->batch_seq));
	/* no 100-continue round trip: the body goes with the headers */
	cp_http_add_header(&list, "Expect:");
	cp_http_set_headers(client, client->easy, list);

	bearer = client->oauth ? client->access_token : client->cfg.token;
	if (bearer != NULL)
	{
		char	   *auth = psprintf("Authorization: Bearer %s", bearer);

		cp_http_add_header(&client->headers, auth);
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
			rc = cp_http_transfer_wait(client, client->easy, client->errbuf);
			started = false;
		}
		else
		{
			if (client->oauth && !cp_oauth_token_usable(client) &&
				!cp_oauth_fetch_token(client, result))
				break;
			prepare_batch(client, req);
			cp_http_response_reset(&client->response);
			rc = cp_http_run_transfer(client, client->easy, client->errbuf);
		}
		cp_http_end_transfer(client, client->easy);

		if (rc != CURLE_OK)
		{
			cp_http_describe_transfer_error(result, "", rc, client->errbuf,
											client->egress_refusal,
											&client->cfg);
			break;
		}

		curl_easy_getinfo(client->easy, CURLINFO_RESPONSE_CODE, &status);
		result->status = status;
		result->retry_after_ms = cp_http_retry_after(&client->response);

		/* 401 with OAuth2: the token may have been revoked; one more go */
		if (status == 401 && client->oauth && !retried)
		{
			cp_oauth_drop_token(client);
			retried = true;
			continue;
		}

		result->outcome = cp_http_classify_status(status);
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
				cp_http_append_excerpt(&buf, location, strlen(location), false);
			}
			strlcpy(result->message, buf.data, sizeof(result->message));
			snprintf(result->message_redacted, sizeof(result->message_redacted),
					 "HTTP %ld: redirects are not followed", status);
		}
		else
			cp_http_describe_status(result, "", status, &client->response,
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
	else if (client->oauth && !cp_oauth_token_usable(client) &&
		!cp_oauth_fetch_token(client, &client->start_result))
		client->start_failed = true;
	else
	{
		prepare_batch(client, req);
		cp_http_response_reset(&client->response);
		/* the thread drives it; without one, the worker starts it */
		rc = cp_http_transfer_begin(client, client->easy, client->errbuf);
		if (rc == CURLE_OK && !cp_http_sender_hand_over(client))
			cp_http_transfer_kick(client);
		if (rc != CURLE_OK)
		{
			cp_http_end_transfer(client, client->easy);
			cp_http_describe_transfer_error(&client->start_result, "", rc,
											client->errbuf,
											client->egress_refusal,
											&client->cfg);
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
