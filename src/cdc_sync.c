/*-------------------------------------------------------------------------
 *
 * cdc_sync.c
 *	  A CDC sync's run: decode the WAL in this process through the sync's
 *	  slot, put every committed change of its tables in batches, deliver
 *	  them, and let the slot go only past what the endpoint acknowledged.
 *
 * One loop, one process:
 *
 *	- decode the WAL flushed so far (cdc_decoder.c); the output plugin's
 *	  lines come back through the sink below, straight into the batch;
 *	- between decoding rounds, the backfill reads a chunk of a table and
 *	  writes a watermark into the WAL (on a standby, notes the position
 *	  replayed); when the decoder reaches it, the chunk takes its place in
 *	  the stream (cdc_backfill.c);
 *	- when decoding has caught up with the WAL, what is batched is sent at
 *	  once (latency); while it has not, batches go when full (throughput);
 *	- with nothing to do, it sleeps until a commit in its database wakes it
 *	  (wakeup.c), or a slow fallback poll.
 *
 * Checkpoints: a batch's items carry the WAL position the sync reaches once
 * they are delivered (the end of each transaction's commit record).  When
 * the endpoint acknowledges, that position is committed to the sync's row
 * (sync.cdc_lsn), and only then confirmed to the slot, which is saved.  A
 * restart decodes from the row's position: nothing checkpointed is sent
 * again, and the duplicates a crash can cause are the batches in flight
 * and those acknowledged during the last CHECKPOINT_EVERY_MS of a round.
 *
 * While a transaction is replayed (inside the sink's callbacks) no
 * transaction of ours can commit: batch numbers are reserved beforehand,
 * and acknowledgements received then are committed once the record is
 * decoded (delivery.c, deferred).
 *
 * A transaction stays in one batch unless it alone exceeds the limits: when
 * the batch fills during a transaction, the transactions before it are sent
 * and it moves to the next batch; only if it fills that one too is it split,
 * in order.  Its memory is the reorder buffer's (logical_decoding_work_mem,
 * spilled to disk beyond) plus at most two batches.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "replication/reorderbuffer.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "cdc_relcache.h"
#include "cdc_slot.h"
#include "cdc_sync.h"
#include "compat.h"
#include "method.h"
#include "test_point.h"
#include "wakeup.h"

/*
 * Something under way that no commit announces (a watermark to reach, a
 * commit announced but not yet flushed, a delivery) is looked at this often.
 */
#define NAP_MS 10
/*
 * On a hot standby no commit wakes the worker (the primary's are replayed,
 * none is made here): the replayed position is looked at this often
 * instead.  An empty pass costs a few microseconds.
 */
#define STANDBY_POLL_MS 50
/*
 * Batch numbers kept reserved before each decoding round: one transaction
 * may need that many batches (a billion rows at the default batch_rows).
 */
#define SEQ_AHEAD 100000
/*
 * An idle sync records its position (see save_idle_position) at most this
 * often after it delivered or its database wrote, so that whoever waits for
 * lsn_acknowledged to pass a write sees it soon; and at most every
 * IDLE_SAVE_QUIET_MS while only other databases write.  Each record is a
 * commit, and moves the slot, which PostgreSQL then saves to disk: these
 * fsyncs would otherwise be most of the wake-ups of a sync whose database
 * is quiet beside a busy one.
 */
#define IDLE_SAVE_MS 1000
#define IDLE_SAVE_QUIET_MS 30000
/*
 * After an invalidation asked for a check of the present catalog, check
 * once more this much later: a change decoded from the WAL may not yet be
 * visible to a snapshot (its commit record precedes its end in the proc
 * array), and its invalidation reaches us only at our next transaction.
 */
#define RECHECK_AGAIN_MS 200
/*
 * Acknowledgements are committed together once the oldest is this old
 * (delivery.c keeps them, run->group_acks), or before anything else writes
 * the catalog: each commit waits for a WAL flush, which on a plain disk
 * takes longer than decoding a batch, so committing each batch's would
 * bound the sync by the disk while it is behind; once caught up under a
 * steady write load it sends a small batch per round, and a commit each
 * was a third of its CPU (test/bench/hostcost.sh).  A crash then sends
 * again at most the batches acknowledged in that time, besides those in
 * flight; lsn_acknowledged shows a position once it is checkpointed.
 */
#define CHECKPOINT_EVERY_MS 100

/*
 * calabi_push.cdc_send_interval: once caught up, a partly filled batch is
 * sent at once unless the previous one went less than this long ago; it
 * then waits out the rest, decoding what commits meanwhile into it.  The
 * first commit after a quiet spell goes at once; under a steady load each
 * request carries this long's commits.  A request costs the same whether
 * it carries one transaction or a hundred (the HTTP exchange, TLS, a gzip
 * member, the receiver's own work), so sending one per commit under load
 * cost the host more than decoding did (test/bench/hostcost.sh).
 */
static int	send_interval_ms = 10;

/* Transactions decoded but not yet acknowledged, oldest first: the lag. */
typedef struct Pending
{
	XLogRecPtr	lsn;
	TimestampTz commit_time;
} Pending;

static Pending *pending = NULL;
static MemoryContext pending_cxt = NULL;
static int	pending_head = 0;
static int	pending_tail = 0;
static int	pending_size = 0;

static void
pending_push(XLogRecPtr lsn, TimestampTz commit_time)
{
	if (pending_tail == pending_size)
	{
		if (pending_head > 0)
		{
			memmove(pending, pending + pending_head,
					sizeof(Pending) * (pending_tail - pending_head));
			pending_tail -= pending_head;
			pending_head = 0;
		}
		else
		{
			pending_size = Max(pending_size * 2, 1024);
			pending = pending == NULL ?
				MemoryContextAlloc(pending_cxt, sizeof(Pending) * pending_size) :
				repalloc(pending, sizeof(Pending) * pending_size);
		}
	}
	pending[pending_tail].lsn = lsn;
	pending[pending_tail].commit_time = commit_time;
	pending_tail++;
}

/*
 * What the lag is counted from (sync_status.lag_time is now() minus this).
 * The oldest committed change of the sync not yet acknowledged is either
 * decoded, then it is the first of pending[] and its commit time is known;
 * or, with nothing pending, it may sit in WAL not decoded yet.  Of that WAL
 * we know only that it was flushed after the start of the last decoding
 * round that reached the end of the WAL (caught_up_at): every commit flushed
 * before that is decoded.  So while the decoder is behind (a round under
 * way, or one that stopped short of the end), the lag is counted from
 * caught_up_at, which never understates it by more than the commit-to-flush
 * delay (synchronous_commit = off: up to wal_writer_delay, see docs/cdc.md).
 * Caught up and nothing pending: no lag.
 */
static TimestampTz caught_up_at = 0;
static bool decoder_behind = true;

/*
 * Report to sync_status what was sent, acknowledged, and the lag.  The
 * shared slots' lock is taken only when one of them changed: an idle sync
 * reports at every pass.
 */
static void
report_progress(CpRun *run)
{
	static bool reported = false;
	static XLogRecPtr last_sent;
	static XLogRecPtr last_acked;
	static TimestampTz last_lag_since;
	CpCdcRun   *cdc = run->cdc;
	TimestampTz lag_since = 0;

	if (pending_head < pending_tail)
		lag_since = pending[pending_head].commit_time;
	else if (decoder_behind)
		lag_since = caught_up_at;
	if (reported && run->sent_lsn == last_sent && cdc->acked_lsn == last_acked &&
		lag_since == last_lag_since)
		return;
	cp_worker_report_cdc(run->sent_lsn, cdc->acked_lsn, lag_since);
	reported = true;
	last_sent = run->sent_lsn;
	last_acked = cdc->acked_lsn;
	last_lag_since = lag_since;
}

int
cp_cdc_stream_index(CpRun *run, Oid relid)
{
	static int	last = 0;

	if (last < run->nstreams && run->streams[last].def->relid == relid)
		return last;
	for (int i = 0; i < run->nstreams; i++)
		if (run->streams[i].def->relid == relid)
		{
			last = i;
			return i;
		}
	return -1;
}

void
cp_cdc_add_state(CpRun *run, int idx)
{
	StringInfoData state;

	initStringInfo(&state);
	cp_cdc_backfill_state(run, idx, &state);
	cp_batch_add_state(run->batch, idx, state.data, state.len);
	pfree(state.data);
}

/* ---- the sink: called by the output plugin while decoding ---- */

static void
sink_begin(void *arg, ReorderBufferTXN *txn, CpCdcTxn *ctxn)
{
	CpRun	   *run = arg;
	CpCdcRun   *cdc = run->cdc;

	cdc->txn_xid = txn->xid;
	cdc->txn_end = txn->end_lsn;
	cdc->txn_commit_time = cp_txn_commit_time(txn);
	cdc->txn_first_item = run->batch->nitems;
	memset(cdc->txn_touched, 0, sizeof(bool) * Max(run->nstreams, 1));

	ctxn->on_violation = cp_cdc_sink_violation;
	ctxn->on_violation_arg = run;
	ctxn->max_record_bytes = run->sync->batch_bytes;
	ctxn->on_too_large = cp_cdc_sink_too_large;
	ctxn->on_too_large_arg = run;

	/* a backfill watches the keys its table's changes touch */
	if (cdc->backfill_stream >= 0)
	{
		ctxn->watch_relid = run->streams[cdc->backfill_stream].def->relid;
		ctxn->on_key = cp_cdc_backfill_touch;
		ctxn->on_key_arg = run;
	}
}

static void
sink_lines(void *arg, Oid relid, StringInfo buf, int start, int nlines, int nrecords)
{
	CpRun	   *run = arg;
	CpCdcRun   *cdc = run->cdc;
	int			idx = cp_cdc_stream_index(run, relid);
	CpBatch    *batch = run->batch;
	const char *p = buf->data + start;
	const char *end = buf->data + buf->len;
	int			line = 0;

	Assert(buf == &batch->lines);
	if (idx < 0)
	{
		/* not ours after all: the lines go */
		buf->len = start;
		buf->data[start] = '\0';
		return;
	}
	/* the lines were written into the batch: each becomes an item */
	while (p < end)
	{
		const char *nl = memchr(p, '\n', end - p);
		const char *next = nl != NULL ? nl + 1 : end;

		Assert(nl != NULL);
		cp_batch_line_written(batch, p - buf->data, next - p, idx,
							  line++ >= nlines - nrecords);
		p = next;
	}
	Assert(line == nlines);
	cdc->txn_touched[idx] = true;

	if (cp_delivery_batch_at_limit(run))
	{
		/* the transactions before this one go; this one moves on whole */
		if (cdc->txn_first_item > 0)
		{
			cp_delivery_flush_upto(run, cdc->txn_first_item);
			cdc->txn_first_item = 0;
		}
		/* it alone fills a batch: split it, in order */
		if (cp_delivery_batch_at_limit(run))
			cp_delivery_flush(run, false);
	}
}

/*
 * The batch being read: a change's lines are written there.  Anything past
 * its last item (a change an error interrupted) is dropped first.
 */
static StringInfo
sink_buffer(void *arg)
{
	CpRun	   *run = arg;
	CpBatch    *batch = run->batch;
	int			end = batch->nitems > 0 ?
		batch->items[batch->nitems - 1].line_off + batch->items[batch->nitems - 1].line_len : 0;

	/*
	 * Asked to stop in the middle of a transaction: leave its replay (it is
	 * decoded again at the next start, and none of it is acknowledged).
	 */
	cp_worker_stop_point();

	if (batch->lines.len != end)
	{
		batch->lines.len = end;
		batch->lines.data[end] = '\0';
	}
	return &batch->lines;
}

static void
sink_commit(void *arg, ReorderBufferTXN *txn)
{
	CpRun	   *run = arg;
	CpCdcRun   *cdc = run->cdc;
	bool		any = false;

	/* not reached: a change of it was too large (what it sent is partial) */
	if (cdc->too_large != NULL)
		return;
	cdc->decoded_lsn = cdc->txn_end;
	for (int i = 0; i < run->nstreams; i++)
		if (cdc->txn_touched[i])
		{
			cp_cdc_add_state(run, i);
			any = true;
		}
	if (any)
	{
		bool		was_empty = pending_head == pending_tail;

		cp_batch_set_position(run->batch, cdc->txn_end);
		pending_push(cdc->txn_end, cdc->txn_commit_time);

		/*
		 * The oldest pending commit is lag_time's origin: show it now, not
		 * after the delivery, which an endpoint that is down can hold for
		 * hours (sync_status would show no lag meanwhile).
		 */
		if (was_empty)
			report_progress(run);
	}
}

static void
sink_message(void *arg, XLogRecPtr lsn, const char *prefix, Size size,
			 const char *content)
{
	CpRun	   *run = arg;
	CpCdcChunk *chunk = &run->cdc->chunk;

	/*
	 * Every slot of the database sees every watermark: only ours count.  A
	 * chunk read on a standby has a position instead (cdc_backfill.c).
	 */
	if (chunk->state == CP_CHUNK_WAITING && !chunk->by_position &&
		strcmp(prefix, "calabi_push") == 0 &&
		size == strlen(chunk->watermark_text) &&
		memcmp(content, chunk->watermark_text, size) == 0)
	{
		chunk->state = CP_CHUNK_REACHED;
		chunk->watermark_lsn = lsn;
	}
}

/* Acknowledgements wait to be committed, the oldest CHECKPOINT_EVERY_MS ago. */
static bool
checkpoint_due(CpRun *run)
{
	return run->deferred.pending &&
		TimestampDifferenceExceeds(run->deferred.since, GetCurrentTimestamp(),
								   CHECKPOINT_EVERY_MS);
}

/* The same, for every record decoded: the clock is read once in 64 calls. */
static bool
checkpoint_due_sampled(CpRun *run)
{
	static uint32 calls = 0;

	return (++calls & 63) == 0 && checkpoint_due(run);
}

/*
 * Stop decoding to place a chunk, to checkpoint what was acknowledged (now
 * and then: see CHECKPOINT_EVERY_MS), or because the worker is asked to
 * stop.
 */
static bool
stop_decoding(void *arg)
{
	CpRun	   *run = arg;

	return cp_cdc_backfill_reached(run) || checkpoint_due_sampled(run) ||
		run->cdc->too_large != NULL || cp_worker_stop_requested();
}

void
cp_cdc_define_settings(void)
{
	DefineCustomIntVariable("calabi_push.cdc_send_interval",
							"Shortest time between two requests of a CDC sync that has caught up with the WAL.",
							"Longer: fewer, larger requests under a steady write load, at the cost of latency; 0 sends each round's changes at once.",
							&send_interval_ms,
							10, 0, 60000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/*
 * Milliseconds a caught-up round waits before sending what it batched (0:
 * send now).  A full batch never waits.
 */
static long
send_wait_ms(CpRun *run)
{
	long		since;

	if (send_interval_ms <= 0 || run->cdc->last_send_at == 0 ||
		cp_delivery_batch_at_limit(run))
		return 0;
	since = TimestampDifferenceMilliseconds(run->cdc->last_send_at,
											GetCurrentTimestamp());
	return since >= send_interval_ms ? 0 : send_interval_ms - since;
}

/*
 * A failover slot's confirmation waits for the standbys to have the
 * checkpoint (cdc_decoder.c, "Failover slots"): at a stop the slot may be
 * saved behind the checkpoint, which the next start reads again and skips.
 */
static int
slot_behind_detail(CpCdcRun *cdc)
{
	XLogRecPtr	confirmed = cp_decoder_confirmed(cdc->decoder);

	if (confirmed >= cdc->acked_lsn)
		return errdetail("The slot is confirmed as far.");
	return errdetail("The slot is confirmed only up to %X/%X until the standbys of synchronized_standby_slots have the checkpoint; the next start reads the WAL in between again and skips it.",
					 LSN_FORMAT_ARGS(confirmed));
}

/* ---- the loop ---- */

/*
 * position is checkpointed: confirm it to the slot.  save: the slot is
 * saved to disk too (at most once a second), so that a crash does not make
 * the restart read again the WAL of what was delivered.
 */
static void
acknowledge(CpRun *run, XLogRecPtr position, bool save)
{
	CpCdcRun   *cdc = run->cdc;

	cp_test_point("after_checkpoint");
	if (position > cdc->acked_lsn)
		cdc->acked_lsn = position;
	while (pending_head < pending_tail && pending[pending_head].lsn <= cdc->acked_lsn)
		pending_head++;
	cp_decoder_confirm(cdc->decoder, cdc->acked_lsn, save);
	cp_test_point("after_confirm");
	report_progress(run);
}

/* the endpoint acknowledged, and the catalog holds, position (run->acknowledged) */
static void
cdc_acknowledged(CpRun *run, XLogRecPtr position)
{
	acknowledge(run, position, true);
	run->cdc->delivered_since_save = true;
}

/*
 * Nothing is waiting to be delivered: every change decoded so far is
 * acknowledged, so the sync's position is the decoder's.  Record it now and
 * then (not at every commit of the rest of the cluster), so that the slot
 * holds no WAL for a sync whose tables do not change.
 */
static void
save_idle_position(CpRun *run)
{
	CpCdcRun   *cdc = run->cdc;
	XLogRecPtr	position = cp_decoder_position(cdc->decoder);
	TimestampTz now = GetCurrentTimestamp();
	bool		quiet;

	/*
	 * The record of the last save is WAL too: beyond it, only a write by
	 * someone else is worth a save, or an idle server would never rest.
	 */
	if (position <= cdc->acked_lsn || position <= cdc->idle_floor ||
		cp_delivery_pending(run))
		return;
	/*
	 * Nothing delivered, and no commit here, since the last save.  Not
	 * judged by acked_lsn: a checkpoint committed after the save (they are
	 * grouped) may carry changes decoded before it, and its own record is
	 * WAL past the save's.
	 */
	quiet = !cdc->delivered_since_save && cp_wakeup_announced() <= cdc->idle_floor;
	if (!TimestampDifferenceExceeds(cdc->last_idle_save, now,
									quiet ? IDLE_SAVE_QUIET_MS : IDLE_SAVE_MS))
		return;
	cp_catalog_set_cdc_lsn(run->sync, position, false);
	/* on a standby the save is a file: no WAL of its own to ignore */
	cdc->idle_floor = RecoveryInProgress() ? position : GetXLogInsertRecPtr();
	cdc->decoded_lsn = Max(cdc->decoded_lsn, position);
	cdc->last_idle_save = now;
	cdc->delivered_since_save = false;
	/* the slot is saved by the next checkpoint: nothing here to re-send */
	acknowledge(run, position, false);
}

/*
 * Nothing was done in this pass: sleep until there may be something to do.
 * While something is under way that no commit announces, that is a short
 * nap: decoding stopped short of the end (or was stopped), a delivery or a
 * chunk is in progress, or a commit was announced beyond the WAL flushed
 * when the round began (synchronous_commit off: the WAL writer flushes it
 * soon).  Otherwise a commit in this database sets our latch (wakeup.c);
 * the fallback poll finds WAL that none announced (on a standby, where
 * nothing announces, a short poll: STANDBY_POLL_MS).  A catalog check due
 * is never missed.  CHECK_FOR_INTERRUPTS and the reload of the
 * configuration follow at the top of the loop (a signal sets the latch).
 */
static void
wait_for_work(CpRun *run, bool caught_up, XLogRecPtr flushed)
{
	CpCdcRun   *cdc = run->cdc;
	long		timeout;

	if (!caught_up || cp_delivery_unsent(run) ||
		cdc->chunk.state != CP_CHUNK_NONE || cdc->backfill_stream >= 0 ||
		cp_wakeup_announced() > flushed)
		timeout = NAP_MS;
	else if (RecoveryInProgress())
		timeout = Min(cp_wakeup_fallback_ms(), STANDBY_POLL_MS);
	else
		timeout = cp_wakeup_fallback_ms();
	/* a batch waiting out calabi_push.cdc_send_interval: its time */
	if (caught_up && cp_delivery_unsent(run) && !run->send.active)
		timeout = Max(send_wait_ms(run), 1);
	/* acknowledgements to checkpoint: when the oldest is due */
	if (run->deferred.pending)
		timeout = Min(timeout, CHECKPOINT_EVERY_MS -
					  TimestampDifferenceMilliseconds(run->deferred.since,
													  GetCurrentTimestamp()));
	if (cdc->recheck_at != 0)
		timeout = Min(timeout, TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
															   cdc->recheck_at));
	/*
	 * A stop that came while this pass waited for something else (whose
	 * wait reset the latch) is served at the top of the loop, not after
	 * the sleep.
	 */
	if (timeout <= 0 || cp_worker_stop_requested())
		return;
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 timeout, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/* The output plugin's options for this sync. */
static List *
plugin_options(CpRun *run)
{
	StringInfoData relations;
	List	   *options = NIL;

	initStringInfo(&relations);
	for (int i = 0; i < run->nstreams; i++)
		appendStringInfo(&relations, "%s%u", i > 0 ? "," : "",
						 run->streams[i].def->relid);
	options = lappend(options, makeDefElem("destination_sync_mode",
										   (Node *) makeString(run->sync->mode), -1));
	options = lappend(options, makeDefElem("relations",
										   (Node *) makeString(relations.data), -1));
	options = lappend(options, makeDefElem("run_as",
										   (Node *) makeString(psprintf("%u", run->sync->run_as)), -1));
	return options;
}

/*
 * Stop cleanly (SIGTERM, see CpStopMode in worker.h), wherever the stop
 * was caught: nothing more is read, decoded or sent.  The acknowledgements
 * a decoding round deferred are checkpointed, the answer to the batch sent
 * in the background is awaited (CP_STOP_GRACE_MS at most, counted from
 * when the worker first saw the stop) and checkpointed when accepted; then
 * the slot is saved at the checkpoint's position, so that both agree on
 * disk, and the process exits.  Batches not sent yet are simply decoded
 * again at the next start.  So a clean stop sends nothing twice, unless
 * the answer did not come in time (that batch is sent again: the endpoint
 * may have applied it), or the stop cut short a transaction larger than a
 * batch (its part already sent is sent again, as after a crash).
 */
pg_noreturn static void stop_cleanly(CpRun *run);

static void
stop_cleanly(CpRun *run)
{
	CpCdcRun   *cdc = run->cdc;
	int64		seq = run->abandoned_seq;
	CpHttpResult result;
	const char *why = NULL;

	run->in_decoding = false;
	/* the answer awaited below is checkpointed at once */
	run->group_acks = false;
	if (cdc->decoder == NULL)
	{
		ereport(LOG,
				(errmsg("the sync stopped before it began decoding")));
		proc_exit(0);
	}

	cp_delivery_commit_deferred(run);
	/* seq: given up by the delivery the stop interrupted, or now */
	if (seq == 0 && !cp_delivery_await_sent(run, &seq, &result) &&
		result.outcome != CP_HTTP_ABANDONED)
		why = pstrdup(result.message);
	else if (seq != 0)
		why = psprintf("no answer within %d s", CP_STOP_GRACE_MS / 1000);
	cp_decoder_save(cdc->decoder);
	report_progress(run);

	if (why == NULL)
		ereport(LOG,
				(errmsg("the sync stopped cleanly: every batch sent was acknowledged, and its checkpoint is at %X/%X",
						LSN_FORMAT_ARGS(cdc->acked_lsn)),
				 slot_behind_detail(cdc)));
	else
		ereport(LOG,
				(errmsg("the sync stopped without the acknowledgement of batch " INT64_FORMAT " (%s): its changes will be sent again when the sync resumes; its checkpoint is at %X/%X",
						seq, why, LSN_FORMAT_ARGS(cdc->acked_lsn)),
				 slot_behind_detail(cdc)));
	proc_exit(0);
}

/*
 * What runs between these reads the user's tables or waits for their
 * locks, which may take long: a stop cancels it (CP_STOP_CANCEL).  A stop
 * requested before is served first; one that came meanwhile, after.
 */
static void
begin_cancellable(void)
{
	cp_worker_stop_point();
	cp_worker_set_stop_mode(CP_STOP_CANCEL);
}

static void
end_cancellable(void)
{
	cp_worker_set_stop_mode(CP_STOP_DEFER);
	cp_worker_stop_point();
}

pg_noreturn static void run_loop(CpRun *run);

/*
 * Everything before the first decoding round: the streams, their
 * preconditions, the slot (created at the first start), the decoder.
 */
static void
start_run(CpRun *run)
{
	CpCdcRun   *cdc = run->cdc;

	cp_cdc_slot_name(&run->sync->id, cdc->slot_name);
	cp_cdc_check_server();
	cp_cdc_check_standby(run->sync->name);

	begin_cancellable();
	/* names and keys of the streams; each checked readable by run_as */
	cp_cdc_backfill_init(run);

	/*
	 * Every precondition, against the present catalog.  Changes committed
	 * before this point that violate one under their own catalog were made
	 * while a cause since fixed stood (see cp_cdc_sink_violation).  On a
	 * standby, before the replayed position: the check's snapshot sees
	 * every commit replayed before it.
	 */
	cdc->trusted_lsn = RecoveryInProgress() ? cp_replay_rec_ptr() : GetXLogInsertRecPtr();
	cp_cdc_check_streams(run);

#ifndef CP_HAVE_FAILOVER_SLOTS
	/*
	 * Asked for on 17 or later and carried here by a dump or a downgrade:
	 * create_sync refuses it on this server, the sync runs without it.
	 */
	if (run->sync->failover)
		ereport(WARNING,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("sync \"%s\" asks for a failover slot, which PostgreSQL %s does not have",
						run->sync->name, PG_MAJORVERSION),
				 errdetail("Its slot is not copied to standbys: after a promotion the sync needs resync."),
				 errhint("Drop and create the sync without the \"failover\" option to silence this, or run it on PostgreSQL 17 or later.")));
#endif

	if (run->sync->cdc_lsn == InvalidXLogRecPtr)
	{
		XLogRecPtr	start;

		/*
		 * It waits for the transactions running now (sync_status shows
		 * which while it does): a stop cancels that.
		 */
		cp_worker_set_state(run, CP_RUN_CREATING_SLOT, 0);
		start = cp_cdc_slot_create(cdc->slot_name, run->sync->name,
									   run->sync->failover);
		cp_worker_set_state(run, CP_RUN_STARTING, 0);
		end_cancellable();
		cp_catalog_set_cdc_lsn(run->sync, start, true);
		run->sync->cdc_lsn = start;
		ereport(LOG,
				(errmsg("replication slot \"%s\" created at %X/%X",
						cdc->slot_name, LSN_FORMAT_ARGS(start))));
	}
	else
	{
		end_cancellable();
		/* a slot that cannot continue stays so: stop, do not retry */
		PG_TRY();
		{
			cp_cdc_slot_validate(cdc->slot_name, run->sync->name, run->sync->cdc_lsn);
		}
		PG_CATCH();
		{
			if (geterrcode() != ERRCODE_OBJECT_IN_USE)
				cp_worker_stop_on_error();
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	cdc->decoded_lsn = cdc->acked_lsn = run->sync->cdc_lsn;
	cdc->last_idle_save = GetCurrentTimestamp();

	/*
	 * Until the first round reaches the end of the WAL, what the sync has
	 * to catch up on counts from the worker's start: the commit times of
	 * what was written while no worker ran are known only once decoded (the
	 * first transaction decoded then gives the true lag).
	 */
	caught_up_at = cdc->last_idle_save;
	decoder_behind = true;

	cp_delivery_reserve(run, SEQ_AHEAD);

	/*
	 * Woken by commits from now on: before the first round, so that a
	 * commit is either read by it or announced (see wakeup.c).
	 */
	cp_wakeup_subscribe();
	cp_cdc_sink = &cdc->sink;
	cdc->decoder = cp_decoder_open(cdc->slot_name, run->sync->cdc_lsn,
								   run->sync->failover, plugin_options(run),
								   run->mcxt);
	cp_worker_set_state(run, CP_RUN_RUNNING, 0);
	report_progress(run);
}

CpExitKind
cp_cdc_run(CpRun *run)
{
	CpCdcRun   *cdc;
	MemoryContext oldcxt = MemoryContextSwitchTo(run->mcxt);

	cdc = palloc0(sizeof(CpCdcRun));
	cdc->txn_touched = palloc0(sizeof(bool) * Max(run->nstreams, 1));
	cdc->reread = palloc0(sizeof(char) * Max(run->nstreams, 1));
	cdc->backfill_stream = -1;
	run->cdc = cdc;
	run->acknowledged = cdc_acknowledged;
	cdc->sink.arg = run;
	cdc->sink.begin = sink_begin;
	cdc->sink.buffer = sink_buffer;
	cdc->sink.lines = sink_lines;
	cdc->sink.commit = sink_commit;
	cdc->sink.message = sink_message;
	MemoryContextSwitchTo(oldcxt);
	pending = NULL;
	pending_cxt = run->mcxt;
	pending_head = pending_tail = pending_size = 0;

	/*
	 * From here SIGTERM stops the worker cleanly (stop_cleanly): at a stop
	 * point, or by cancelling a read or lock wait.  Any other error goes to
	 * the worker's error boundary.
	 */
	cp_worker_set_stop_mode(CP_STOP_DEFER);
	PG_TRY();
	{
		start_run(run);
		run_loop(run);
	}
	PG_CATCH();
	{
		if (!cp_worker_stop_caught())
			PG_RE_THROW();
		cp_worker_stop_recover(run->mcxt);
		stop_cleanly(run);
	}
	PG_END_TRY();
	pg_unreachable();			/* run_loop and stop_cleanly never return */
}

/* The decoding rounds, and what happens between them; never returns. */
static void
run_loop(CpRun *run)
{
	CpCdcRun   *cdc = run->cdc;

	/*
	 * What one pass of the loop allocates in the current context: gone at
	 * the next.  What lives longer says where (run->mcxt, the chunk's and
	 * the delivery's contexts, the decoding context).
	 */
	MemoryContext passcxt = AllocSetContextCreate(run->mcxt,
												  "calabi_push CDC pass",
												  ALLOCSET_DEFAULT_SIZES);

	/* from here on, checkpoints are grouped (CHECKPOINT_EVERY_MS) */
	run->group_acks = true;

	for (;;)
	{
		int			nrecords;
		bool		at_end;
		bool		worked = false;
		bool		recheck;
		TimestampTz round_start;
		XLogRecPtr	flushed;

		MemoryContextReset(passcxt);
		MemoryContextSwitchTo(passcxt);
		CHECK_FOR_INTERRUPTS();
		cp_worker_stop_point();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		cp_delivery_reserve(run, SEQ_AHEAD);

		if (cp_cdc_backfill_wants_chunk(run))
		{
			cp_delivery_commit_deferred(run);
			begin_cancellable();
			cp_cdc_backfill_read_chunk(run);
			end_cancellable();
			cp_decoder_catalog_used(cdc->decoder);
			worked = true;
		}

		/*
		 * WAL to decode: behind from now on until a round reaches its end,
		 * and said so before the round, which may take long (a large
		 * transaction).  Nothing to decode: the round is empty and the
		 * sync stays caught up.
		 */
		round_start = GetCurrentTimestamp();
		flushed = cp_decoder_wal_end();
		if (!decoder_behind && flushed > cp_decoder_position(cdc->decoder))
		{
			decoder_behind = true;
			report_progress(run);
		}
		run->in_decoding = true;
		nrecords = cp_decoder_read(cdc->decoder, stop_decoding, run, &at_end);
		run->in_decoding = false;
		cp_worker_stop_point();
		/* a chunk read on a standby may be placed where the round ended */
		(void) cp_cdc_backfill_reached(run);
		/* sync_status shows a failover slot's wait for the standbys */
		cp_worker_standby_wait(cp_decoder_waits_for_standbys(cdc->decoder));
		if (at_end)
		{
			/* every commit flushed before round_start is decoded */
			caught_up_at = round_start;
			decoder_behind = false;
		}
		/* what was decoded and waits for the endpoint counts now */
		report_progress(run);
		if (checkpoint_due(run) || cdc->too_large != NULL)
		{
			cp_delivery_commit_deferred(run);
			worked = true;
		}
		if (cdc->too_large != NULL)
			cp_cdc_stop_too_large(run);
		if (nrecords > 0)
			worked = true;

		/* tables whose changes were skipped are read again, once per run */
		for (int i = 0; i < run->nstreams; i++)
			if (cdc->reread[i] == CP_REREAD_OWED)
			{
				cdc->reread[i] = CP_REREAD_DONE;
				cp_delivery_commit_deferred(run);
				cp_cdc_backfill_restart(run, i);
				worked = true;
			}

		/*
		 * A definition, policy, privilege or role changed: check now,
		 * although no later change of the table may ever be decoded (SET
		 * UNLOGGED, ENABLE ROW LEVEL SECURITY on a quiet table).
		 */
		recheck = false;
		if (cp_cdc_relcache_take_recheck())
		{
			recheck = true;
			cdc->recheck_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														  RECHECK_AGAIN_MS);
		}
		else if (cdc->recheck_at != 0 && GetCurrentTimestamp() >= cdc->recheck_at)
		{
			recheck = true;
			cdc->recheck_at = 0;
		}
		if (recheck)
		{
			cp_delivery_commit_deferred(run);
			begin_cancellable();
			cp_cdc_check_streams(run);
			end_cancellable();
		}

		if (cdc->chunk.state == CP_CHUNK_REACHED)
		{
			cp_delivery_commit_deferred(run);
			cp_cdc_backfill_place_chunk(run);
			cp_decoder_catalog_used(cdc->decoder);
			worked = true;
		}

		/*
		 * Caught up with the WAL: send now, nothing more is coming yet (but
		 * not twice within calabi_push.cdc_send_interval).  Behind: send
		 * full batches, pipelined with the next one's reading.
		 */
		if (at_end && cdc->chunk.state != CP_CHUNK_REACHED)
		{
			if (cp_delivery_unsent(run) && send_wait_ms(run) == 0)
			{
				cp_delivery_flush(run, true);
				cdc->last_send_at = GetCurrentTimestamp();
				worked = true;
			}
			save_idle_position(run);
		}
		else if (cp_delivery_batch_full(run))
			cp_delivery_flush(run, false);
		report_progress(run);

		if (!worked)
			wait_for_work(run, at_end && cdc->chunk.state != CP_CHUNK_REACHED, flushed);
	}
}
