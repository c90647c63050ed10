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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "worker.h"

/* batch numbers reserved per catalog round trip */
#define SEQ_RESERVATION 100
#define FIRST_RETRY_DELAY_MS 1000

bool
cp_delivery_batch_full(CpRun *run)
{
	CpBatch    *batch = &run->batch;

	if (batch->nitems == 0)
		return false;
	return batch->nrecords >= run->sync->batch_rows ||
		batch->lines.len >= run->sync->batch_bytes ||
		TimestampDifferenceExceeds(batch->first_at, GetCurrentTimestamp(),
								   run->sync->batch_linger_ms);
}

static int64
next_batch_seq(CpRun *run)
{
	if (run->seq_next >= run->seq_limit)
	{
		run->seq_next = cp_catalog_reserve_batch_seq(run->sync, SEQ_RESERVATION);
		run->seq_limit = run->seq_next + SEQ_RESERVATION;
	}
	return run->seq_next++;
}

/* Sleep until the retry, serving signals; SIGTERM ends the process. */
static void
wait_ms(int64 ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}

static int64
backoff_ms(CpRun *run, int attempt)
{
	int64		delay = FIRST_RETRY_DELAY_MS;

	for (int i = 1; i < attempt && delay < run->sync->max_backoff_ms; i++)
		delay *= 2;
	delay = Min(delay, run->sync->max_backoff_ms);
	/* jitter: 75% to 125%, so that many senders do not retry in step */
	return delay * 3 / 4 + (int64) (pg_prng_double(&pg_global_prng_state) * delay / 2);
}

/* Checkpoint what [from, to) reached. */
static void
commit_ack(CpRun *run, int from, int to, int records, int64 bytes, int64 retries)
{
	CpBatch    *batch = &run->batch;
	int		   *last = palloc(sizeof(int) * run->nstreams);
	CpStreamAck *acks = palloc(sizeof(CpStreamAck) * run->nstreams);
	int			nacks = 0;

	cp_batch_last_states(batch, from, to, last, run->nstreams);
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
	cp_catalog_commit_ack(run->sync, acks, nacks, records, bytes, retries);
}

/* Send items [from, to) until acknowledged; push halves on 413. */
static void
deliver_range(CpRun *run, int from, int to, List **pending)
{
	StringInfoData body;
	CpHttpRequest req;
	CpHttpResult result;
	int64		retries = 0;
	int			records;

	initStringInfo(&body);
	memset(&req, 0, sizeof(req));
	req.batch_seq = next_batch_seq(run);
	records = cp_batch_body(&run->batch, from, to, req.batch_seq,
							run->stream_names, run->nstreams, run->sync->gzip,
							&body);
	req.body = body.data;
	req.body_len = body.len;
	req.gzip = run->sync->gzip;
	req.sync_name = run->sync->name;
	req.sync_id = run->sync->id_text;

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		cp_http_post(run->http, &req, &result);

		switch (result.outcome)
		{
			case CP_HTTP_ACCEPTED:
				commit_ack(run, from, to, records, body.len, retries);
				cp_worker_set_state(run, CP_RUN_RUNNING, 0);
				pfree(body.data);
				return;

			case CP_HTTP_TRANSIENT:
				{
					int64		delay = result.retry_after_ms >= 0 ?
						result.retry_after_ms : backoff_ms(run, retries + 1);

					retries++;
					ereport(LOG,
							(errmsg("calabi_push sync \"%s\": batch " INT64_FORMAT " not delivered, retrying in " INT64_FORMAT " ms: %s",
									run->sync->name, req.batch_seq, delay, result.message)));
					cp_catalog_record_error(&run->sync->id, result.message, false);
					cp_worker_set_state(run, CP_RUN_RETRYING,
										TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay));
					wait_ms(delay);
					cp_worker_set_state(run, CP_RUN_RUNNING, 0);
					continue;	/* same bytes, same number */
				}

			case CP_HTTP_TOO_LARGE:
				{
					int			mid;

					if (to - from <= 1 || records <= 1)
						cp_worker_stop_refused(run,
											   psprintf("the endpoint refuses a batch of %d record(s), %zu bytes, as too large (HTTP 413); it cannot be split further",
														records, req.body_len));
					mid = from + (to - from) / 2;
					ereport(LOG,
							(errmsg("calabi_push sync \"%s\": batch " INT64_FORMAT " too large for the endpoint (%zu bytes), splitting it",
									run->sync->name, req.batch_seq, req.body_len)));
					/* the halves go first, in order, each under a new number */
					*pending = lcons_int(mid, lcons_int(to, *pending));
					*pending = lcons_int(from, lcons_int(mid, *pending));
					pfree(body.data);
					return;
				}

			case CP_HTTP_REFUSED:
				cp_worker_stop_refused(run, result.message);
		}
	}
}

void
cp_delivery_flush(CpRun *run)
{
	List	   *pending;

	if (run->batch.nitems == 0)
		return;
	/* a stack of [from, to) pairs still to deliver, in order */
	pending = list_make2_int(0, run->batch.nitems);
	while (pending != NIL)
	{
		int			from = linitial_int(pending);
		int			to = lsecond_int(pending);

		pending = list_delete_first(list_delete_first(pending));
		deliver_range(run, from, to, &pending);
	}
	cp_batch_reset(&run->batch);
}
