/*-------------------------------------------------------------------------
 *
 * delivery.c
 *	  Send a batch per the ingest protocol and checkpoint it once, and only
 *	  once, the endpoint acknowledged it.
 *
 * The order is the whole point: build the body (lines + STATE), POST it,
 * and only on 2xx/409 commit the states the STATE line carried.  A crash
 * anywhere before that commit re-sends the same records after restart under
 * new batch numbers (at least once, never lost); numbers themselves are
 * reserved in the catalog before use, so a number is never reused for a
 * different body.
 *
 * Transient failures retry the same bytes under the same number with
 * exponential backoff and jitter, honouring Retry-After; a 413 splits the
 * range in two, each half with a new number and a STATE reaching exactly
 * its own last line; any other refusal stops the sync in error.
 *
 * Pipelining: when a batch is full it becomes the batch "in flight" and its
 * lines are compressed on the second core (compressor.c) while the worker
 * reads the next one; when that next one is full, it is sent, and the
 * worker reads on while the endpoint reads and answers (the answer is
 * awaited when the one after must go, or at the end of the run).  Its
 * number, and so its STATE line, is decided only when it is sent, so
 * numbers keep increasing in sending order whatever a 413 did to the batch
 * before it; and a batch is acknowledged, retried or split before the next
 * is sent.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "compressor.h"
#include "test_point.h"
#include "reader.h"
#include "worker.h"

/* batch numbers reserved per catalog round trip */
#define SEQ_RESERVATION 100
#define FIRST_RETRY_DELAY_MS 1000
#define RETRY_AFTER_MAX_MS (60 * 60 * 1000)

bool
cp_delivery_batch_at_limit(CpRun *run)
{
	CpBatch    *batch = run->batch;

	return batch->nitems > 0 &&
		(batch->nrecords >= run->sync->batch_rows ||
		 batch->lines.len >= run->sync->batch_bytes);
}

bool
cp_delivery_unsent(CpRun *run)
{
	return run->batch->nitems > 0 || run->inflight->nitems > 0 ||
		run->send.active;
}

bool
cp_delivery_pending(CpRun *run)
{
	return cp_delivery_unsent(run) || run->deferred.pending;
}

bool
cp_delivery_batch_full(CpRun *run)
{
	CpBatch    *batch = run->batch;

	if (batch->nitems == 0)
		return false;
	return batch->nrecords >= run->sync->batch_rows ||
		batch->lines.len >= run->sync->batch_bytes ||
		TimestampDifferenceExceeds(batch->first_at, GetCurrentTimestamp(),
								   run->sync->batch_linger_ms);
}

void
cp_delivery_reserve(CpRun *run, int n)
{
	if (run->seq_limit - run->seq_next >= n)
		return;
	Assert(!run->in_decoding);

	/*
	 * Twice what is asked, so that this is not a catalog write per call.
	 * Numbers left over are skipped: gaps are allowed, and a new block
	 * keeps them in sending order.
	 */
	run->seq_next = cp_catalog_reserve_batch_seq(run->sync, Max(2 * n, SEQ_RESERVATION));
	run->seq_limit = run->seq_next + Max(2 * n, SEQ_RESERVATION);
}

static int64
next_batch_seq(CpRun *run)
{
	if (run->seq_next >= run->seq_limit)
	{
		/* the reservation commits a transaction: impossible mid-replay */
		if (run->in_decoding)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("a decoded transaction used every batch number reserved for it"),
					 errhint("Raise the sync's batch_rows or batch_bytes: the transaction is read again after a restart.")));
		cp_delivery_reserve(run, SEQ_RESERVATION);
	}
	return run->seq_next++;
}

static int64
backoff_ms(CpRun *run, int attempt)
{
	int64		delay = FIRST_RETRY_DELAY_MS;

	for (int i = 1; i < attempt && delay < run->sync->max_backoff_ms; i++)
		delay *= 2;
	delay = Min(delay, run->sync->max_backoff_ms);
	/* jitter: 75% to 125%, so that many senders do not retry in step */
	return delay * 3 / 4 + (int64) (cp_random_fraction() * delay / 2);
}

/* Checkpoint what [from, to) reached. */
static void
commit_ack(CpRun *run, CpBatch *batch, int from, int to, int records,
		   int64 bytes, int64 retries)
{
	int		   *last = palloc(sizeof(int) * run->nstreams);
	CpStreamAck *acks = palloc(sizeof(CpStreamAck) * run->nstreams);
	int			nacks = 0;

	XLogRecPtr	position = cp_batch_position(batch, from, to);
	CpDeferredAck *deferred = &run->deferred;

	cp_batch_last_states(batch, from, to, last, run->nstreams);

	if (run->in_decoding || run->group_acks)
	{
		/* kept, merged, until cp_delivery_commit_deferred */
		if (deferred->states == NULL)
			deferred->states = MemoryContextAllocZero(run->mcxt,
													  sizeof(char *) * Max(run->nstreams, 1));
		for (int s = 0; s < run->nstreams; s++)
		{
			const CpBatchItem *item;

			if (last[s] < 0)
				continue;
			item = &batch->items[last[s]];
			if (deferred->states[s] != NULL)
				pfree(deferred->states[s]);
			deferred->states[s] = MemoryContextAlloc(run->mcxt, item->state_len + 1);
			memcpy(deferred->states[s], batch->states.data + item->state_off,
				   item->state_len);
			deferred->states[s][item->state_len] = '\0';
		}
		deferred->batches++;
		deferred->records += records;
		deferred->bytes += bytes;
		deferred->retries += retries;
		deferred->position = Max(deferred->position, position);
		if (!deferred->pending)
			deferred->since = GetCurrentTimestamp();
		deferred->pending = true;
		return;
	}

	for (int s = 0; s < run->nstreams; s++)
	{
		const CpBatchItem *item;

		if (last[s] < 0)
			continue;
		item = &batch->items[last[s]];
		acks[nacks].relid = run->streams[s].def->relid;
		acks[nacks].state = pnstrdup(batch->states.data + item->state_off,
									 item->state_len);
		nacks++;
	}
	cp_catalog_commit_ack(run->sync, acks, nacks, 1, records, bytes, retries, position);
	if (run->acknowledged != NULL && position != InvalidXLogRecPtr)
		run->acknowledged(run, position);
}

void
cp_delivery_commit_deferred(CpRun *run)
{
	CpDeferredAck *deferred = &run->deferred;
	CpStreamAck *acks;
	int			nacks = 0;

	if (!deferred->pending)
		return;
	Assert(!run->in_decoding);
	acks = palloc(sizeof(CpStreamAck) * Max(run->nstreams, 1));
	for (int s = 0; s < run->nstreams; s++)
	{
		if (deferred->states[s] == NULL)
			continue;
		acks[nacks].relid = run->streams[s].def->relid;
		acks[nacks].state = deferred->states[s];
		nacks++;
	}
	cp_catalog_commit_ack(run->sync, acks, nacks, deferred->batches, deferred->records,
						  deferred->bytes, deferred->retries, deferred->position);
	if (run->acknowledged != NULL && deferred->position != InvalidXLogRecPtr)
		run->acknowledged(run, deferred->position);
	for (int s = 0; s < run->nstreams; s++)
		if (deferred->states[s] != NULL)
		{
			pfree(deferred->states[s]);
			deferred->states[s] = NULL;
		}
	pfree(acks);
	deferred->batches = deferred->records = deferred->bytes = deferred->retries = 0;
	deferred->position = InvalidXLogRecPtr;
	deferred->pending = false;
}

/* The endpoint accepted items [from, to) of batch: checkpoint them. */
static void
accepted(CpRun *run, CpBatch *batch, int from, int to, int records,
		 int64 bytes, int64 retries)
{
	cp_test_point("before_checkpoint");
	commit_ack(run, batch, from, to, records, bytes, retries);
	cp_worker_acknowledged();
	cp_worker_set_state(run, CP_RUN_RUNNING, 0);
}

/*
 * The request for items [from, to) of batch, under a new number.  gzip: the
 * body is compressed into send->body (by the compressor when prepared, else
 * here).  Uncompressed: the body is the lines where they are in the batch,
 * then the STATE line in send->body; the batch stays untouched until the
 * request is over.
 */
static void
prepare_send(CpRun *run, CpBatch *batch, int from, int to, bool prepared,
			 CpSend *send)
{
	StringInfoData state;
	int			start,
				len;

	memset(&send->req, 0, sizeof(send->req));
	send->req.batch_seq = next_batch_seq(run);
	send->records = cp_batch_lines(batch, from, to, &start, &len);

	initStringInfo(&state);
	cp_batch_state_line(batch, from, to, send->req.batch_seq, run->stream_names,
						run->nstreams, &state);
	if (prepared || run->sync->gzip)
	{
		initStringInfo(&send->body);
		if (prepared)
			cp_compressor_finish(run->compressor, state.data, state.len, &send->body);
		else
			cp_gzip(run->sync->gzip_level, batch->lines.data + start, len, state.data, state.len, &send->body);
		pfree(state.data);
		send->req.body = send->body.data;
		send->req.body_len = send->body.len;
	}
	else
	{
		send->body = state;
		send->req.body = batch->lines.data + start;
		send->req.body_len = len;
		send->req.tail = send->body.data;
		send->req.tail_len = send->body.len;
	}
	send->req.gzip = run->sync->gzip;
	send->req.sync_name = run->sync->name;
	send->req.sync_id = run->sync->id_text;
	run->sent_lsn = Max(run->sent_lsn, cp_batch_position(batch, from, to));
}

/*
 * Send items [from, to) until acknowledged; push halves on 413.  started:
 * their request was started by cp_http_post_start (its first answer is
 * awaited here), else NULL.
 */
static void
deliver_range(CpRun *run, CpBatch *batch, int from, int to, bool prepared,
			  List **pending, CpSend *started)
{
	CpSend		local;
	CpSend	   *send = started;
	StringInfoData body;
	CpHttpRequest req;
	CpHttpResult result;
	int64		retries = 0;
	int			records;

	if (send == NULL)
	{
		send = &local;
		prepare_send(run, batch, from, to, prepared, send);
	}
	body = send->body;
	req = send->req;
	records = send->records;

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (started != NULL)
		{
			cp_http_post_finish(run->http, &started->req, &result);
			started = NULL;
		}
		else
		{
			/* a worker that is stopping sends nothing more */
			cp_worker_stop_point();
			cp_http_post(run->http, &req, &result);
		}

		switch (result.outcome)
		{
			case CP_HTTP_ACCEPTED:
				accepted(run, batch, from, to, records,
						 req.body_len + req.tail_len, retries);
				pfree(body.data);
				return;

			case CP_HTTP_TRANSIENT:
				{
					/*
					 * Retry-After is the endpoint's to decide (max_backoff
					 * bounds only our own backoff), within [1 s, 1 h]: a 0
					 * would make a tight loop, a day would freeze the sync.
					 */
					int64		delay = result.retry_after_ms >= 0 ?
						Min(Max(result.retry_after_ms, FIRST_RETRY_DELAY_MS),
							RETRY_AFTER_MAX_MS) :
						backoff_ms(run, retries + 1);

					retries++;
					ereport(LOG,
							(errmsg("batch " INT64_FORMAT " not delivered, retrying in " INT64_FORMAT " ms: %s",
									req.batch_seq, delay, result.message)));
					/* while decoding, the error waits for the next one or the log */
					if (!run->in_decoding)
						cp_catalog_record_error(&run->sync->id, result.message,
												result.message_redacted, false);
					cp_worker_set_state(run, CP_RUN_RETRYING,
										TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay));
					cp_worker_wait_until(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay));
					cp_worker_set_state(run, CP_RUN_RUNNING, 0);
					continue;	/* same bytes, same number */
				}

			case CP_HTTP_TOO_LARGE:
				{
					int			mid;

					if (to - from <= 1 || records <= 1)
						cp_worker_stop_refused(run,
											   psprintf("the endpoint refuses a batch of %d record(s), %zu bytes, as too large (HTTP 413); it cannot be split further",
														records, req.body_len + req.tail_len),
											   NULL);
					mid = from + (to - from) / 2;
					ereport(LOG,
							(errmsg("batch " INT64_FORMAT " too large for the endpoint (%zu bytes), splitting it",
									req.batch_seq, req.body_len + req.tail_len)));
					/* the halves go first, in order, each under a new number */
					*pending = lcons_int(mid, lcons_int(to, *pending));
					*pending = lcons_int(from, lcons_int(mid, *pending));
					pfree(body.data);
					return;
				}

			case CP_HTTP_REFUSED:
				cp_worker_stop_refused(run, result.message,
									   result.message_redacted);

			case CP_HTTP_ABANDONED:
				/* only a stop gives a request up: stop (see cdc_sync.c) */
				run->abandoned_seq = req.batch_seq;
				cp_worker_stop_point();
				elog(ERROR, "batch " INT64_FORMAT " given up, but no stop was asked for",
					 req.batch_seq);
		}
	}
}

/*
 * Deliver batch, whole or (after a 413) in parts.  started: its request
 * was started in the background (not prepared then: its body is built).
 */
static void
deliver_batch(CpRun *run, CpBatch *batch, bool prepared, CpSend *started)
{
	List	   *pending;
	MemoryContext oldcontext = MemoryContextSwitchTo(run->deliverycxt);

	/* a stack of [from, to) pairs still to deliver, in order */
	pending = list_make2_int(0, batch->nitems);
	while (pending != NIL)
	{
		int			from = linitial_int(pending);
		int			to = lsecond_int(pending);

		pending = list_delete_first(list_delete_first(pending));
		deliver_range(run, batch, from, to, prepared, &pending, started);
		prepared = false;		/* parts of a split are compressed here */
		started = NULL;
	}
	cp_batch_reset(batch);
	MemoryContextSwitchTo(oldcontext);
	MemoryContextReset(run->deliverycxt);	/* bodies, acks, messages */
}

/* The batch being sent: await its answer, and the rest of its delivery. */
static void
complete_sending(CpRun *run)
{
	if (!run->send.active)
		return;
	run->send.active = false;
	deliver_batch(run, run->sending, false, &run->send);
}

/*
 * The batch in flight (compressed meanwhile, or not compressed) is sent,
 * and we go on while the endpoint reads and answers it.
 */
static void
start_sending(CpRun *run)
{
	CpBatch    *batch = run->inflight;
	MemoryContext oldcontext;

	Assert(!run->send.active);
	/* a worker that is stopping sends nothing more */
	cp_worker_stop_point();
	run->inflight = run->sending;
	run->sending = batch;
	oldcontext = MemoryContextSwitchTo(run->deliverycxt);
	prepare_send(run, batch, 0, batch->nitems, run->inflight_prepared, &run->send);
	run->inflight_prepared = false;
	cp_http_post_start(run->http, &run->send.req);
	run->send.active = true;
	MemoryContextSwitchTo(oldcontext);
}

bool
cp_delivery_await_sent(CpRun *run, int64 *seq, CpHttpResult *result)
{
	CpSend	   *send = &run->send;
	bool		delivered;

	if (!send->active)
		return true;
	send->active = false;
	*seq = send->req.batch_seq;
	cp_http_post_finish(run->http, &send->req, result);
	delivered = result->outcome == CP_HTTP_ACCEPTED;
	if (delivered)
		accepted(run, run->sending, 0, run->sending->nitems, send->records,
				 send->req.body_len + send->req.tail_len, 0);
	return delivered;
}

void
cp_delivery_flush(CpRun *run, bool final)
{
	cp_delivery_flush_upto(run, run->batch->nitems);
	if (final)
	{
		complete_sending(run);
		if (run->inflight->nitems > 0)
		{
			start_sending(run);
			complete_sending(run);
		}
	}
}

/*
 * Three batches at most: one sent, whose answer is awaited only when the
 * next must go; one compressed on the second core meanwhile; one being
 * read.
 */
void
cp_delivery_flush_upto(CpRun *run, int keep_from)
{
	CpBatch    *full;

	/* in order: the batch sent before goes first, acknowledged */
	complete_sending(run);
	if (run->inflight->nitems > 0)
		start_sending(run);
	if (keep_from == 0)
		return;

	/* this one is in flight now; read the next into the emptied buffer */
	full = run->batch;
	run->batch = run->inflight;
	run->inflight = full;
	cp_batch_move_tail(full, keep_from, run->batch);
	if (run->compressor != NULL && run->sync->gzip)
	{
		int			start,
					len;

		(void) cp_batch_lines(full, 0, full->nitems, &start, &len);
		cp_compressor_begin(run->compressor, full->lines.data + start, len);
		run->inflight_prepared = true;
	}
}
