/*-------------------------------------------------------------------------
 *
 * cdc_decoder.c
 *	  Logical decoding inside a sync worker (see cdc_decoder.h).
 *
 * logicalfuncs.c is the model: read the WAL that is flushed, record by
 * record, with the waiting page reader, and stop at the flush position seen
 * when the round began.  A record that begins before that position may end
 * after it (the WAL writer flushes whole pages only, unless a commit asks
 * for more), and the reader then waits for its end: a stop is served in
 * that wait (read_page).  Unlike the SQL functions the context lives for the whole
 * worker: a new one would re-read everything from the slot's restart_lsn,
 * which moves only at running-xacts records.
 *
 * Decoding runs outside any transaction, as in a walsender: the reorder
 * buffer replays each transaction in one of its own.  The output plugin's
 * lines reach the worker through its sink (cdc_sink.h), never through the
 * write callbacks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogreader.h"
#include "access/xlogutils.h"
#include "miscadmin.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/pmsignal.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "cdc_decoder.h"
#include "cdc_relcache.h"
#include "compat.h"
#include "worker.h"
#include "xact.h"

struct CpDecoder
{
	LogicalDecodingContext *ctx;
	bool		catalog_used;
	XLogRecPtr	confirmed;
	TimestampTz saved_at;		/* when the slot was last saved */
};

/* the slot's confirmed position is saved to disk at most this often */
#define SAVE_INTERVAL_MS 1000

/* The sink takes every line: a write through the callbacks is a bug. */
static void
no_prepare_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid,
				 bool last_write)
{
	elog(ERROR, "calabi_push sync worker: unexpected output plugin write");
}

static void
no_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid,
		 bool last_write)
{
	elog(ERROR, "calabi_push sync worker: unexpected output plugin write");
}

/*
 * read_local_xlog_page, once the page holds flushed WAL up to what the
 * reader asks for.  Until then it waits here, where a stop is served
 * (cp_worker_stop_point: no record is half decoded while the reader reads
 * a page), rather than in read_local_xlog_page's own wait, which checks only
 * for interrupts: a clean stop (CP_STOP_DEFER) raises none, and at a
 * server's shutdown nothing flushed the record's end any more, so the worker
 * slept there, and the shutdown waited for it, forever (seen on PostgreSQL
 * 18, test/t/062_cdc_two_phase.pl: pg_ctl stop timed out).  On a standby
 * the position is the replayed one, which read_local_xlog_page awaits.
 */
static int
read_page(XLogReaderState *state, XLogRecPtr targetPagePtr, int reqLen,
		  XLogRecPtr targetRecPtr, char *cur_page)
{
	XLogRecPtr	needed = targetPagePtr + reqLen;

	while (!RecoveryInProgress() && needed > cp_flush_rec_ptr())
	{
		cp_worker_stop_point();
		CHECK_FOR_INTERRUPTS();

		/*
		 * Once the postmaster is gone (kill -9) nothing flushes WAL any
		 * more: the worker would wait here for ever, holding the shared
		 * memory that the next postmaster refuses to share, so the server
		 * could not start again.  Exit as WL_EXIT_ON_PM_DEATH does.
		 */
		if (!PostmasterIsAlive())
			proc_exit(1);
		pg_usleep(1000L);
	}
	return read_local_xlog_page(state, targetPagePtr, reqLen, targetRecPtr, cur_page);
}

CpDecoder *
cp_decoder_open(const char *slot_name, XLogRecPtr start_lsn, List *options,
				MemoryContext parent)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(parent);
	CpDecoder  *decoder = palloc0(sizeof(CpDecoder));

	Assert(!IsTransactionState());
	CheckLogicalDecodingRequirements();
	cp_replication_slot_acquire(slot_name, true);

	/*
	 * start_lsn beyond the slot's confirmed position skips what the sync's
	 * checkpoint already holds: after a crash between the checkpoint's
	 * commit and the slot's save, nothing acknowledged is sent again.
	 */
	decoder->ctx = CreateDecodingContext(start_lsn, options, false,
										 XL_ROUTINE(.page_read = read_page,
													.segment_open = wal_segment_open,
													.segment_close = wal_segment_close),
										 no_prepare_write, no_write, NULL);
	XLogBeginRead(decoder->ctx->reader, MyReplicationSlot->data.restart_lsn);
	decoder->confirmed = MyReplicationSlot->data.confirmed_flush;
	MemoryContextSwitchTo(oldcxt);
	return decoder;
}

void
cp_decoder_catalog_used(CpDecoder *decoder)
{
	decoder->catalog_used = true;
}

int
cp_decoder_read(CpDecoder *decoder, bool (*stop) (void *arg), void *arg,
				bool *at_end)
{
	LogicalDecodingContext *ctx = decoder->ctx;
	XLogRecPtr	end_of_wal = cp_flush_rec_ptr();
	MemoryContext oldcxt;
	int			nrecords = 0;

	Assert(!IsTransactionState());

	/*
	 * Catalog entries cached by ordinary access (the backfill's queries)
	 * describe the present; decoding needs them as of each change (a row
	 * written before an ALTER COLUMN ... TYPE must be read with the old
	 * type).  logicalfuncs.c does the same when it is done.
	 */
	if (decoder->catalog_used)
	{
		/* rebuilding the nailed relcache entries needs a transaction */
		MemoryContext caller = cp_xact_start();

		/* a reset, not a change: it asks the sync for no check */
		cp_cdc_relcache_ignore_resets(true);
		InvalidateSystemCaches();
		cp_cdc_relcache_ignore_resets(false);
		cp_xact_commit(caller);
		decoder->catalog_used = false;
	}

	/*
	 * The reader keeps oversized records, and decoding its state, in the
	 * current context across calls: the decoding context's own, never reset.
	 */
	oldcxt = MemoryContextSwitchTo(ctx->context);
	while (ctx->reader->EndRecPtr < end_of_wal)
	{
		XLogRecord *record;
		char	   *errm = NULL;

		record = XLogReadRecord(ctx->reader, &errm);
		if (errm != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("could not read WAL at %X/%X: %s",
							LSN_FORMAT_ARGS(ctx->reader->EndRecPtr), errm)));
		if (record != NULL)
			LogicalDecodingProcessRecord(ctx, ctx->reader);
		nrecords++;

		CHECK_FOR_INTERRUPTS();
		if (stop != NULL && stop(arg))
			break;
	}
	MemoryContextSwitchTo(oldcxt);
	*at_end = ctx->reader->EndRecPtr >= end_of_wal;
	return nrecords;
}

XLogRecPtr
cp_decoder_position(const CpDecoder *decoder)
{
	return decoder->ctx->reader->EndRecPtr;
}

void
cp_decoder_confirm(CpDecoder *decoder, XLogRecPtr lsn, bool save)
{
	TimestampTz now;

	if (lsn <= decoder->confirmed)
		return;
	LogicalConfirmReceivedLocation(lsn);
	decoder->confirmed = lsn;

	/*
	 * Not saved now: the next checkpoint writes the dirty slot.  A crash
	 * before only makes the restart read more WAL.
	 */
	if (!save)
	{
		ReplicationSlotMarkDirty();
		return;
	}

	/*
	 * Only a moved restart_lsn or catalog_xmin makes core save the slot:
	 * the confirmed position alone is lost by a crash.  That loses no
	 * change and re-sends none (the sync's catalog row is the truth, and a
	 * restart skips what it holds), but it makes the restart read, and the
	 * slot keep, more WAL than needed: save it, though not at every batch
	 * (two fsyncs each).
	 */
	now = GetCurrentTimestamp();
	if (TimestampDifferenceExceeds(decoder->saved_at, now, SAVE_INTERVAL_MS))
		cp_decoder_save(decoder);
}

void
cp_decoder_save(CpDecoder *decoder)
{
	/*
	 * Core saves a slot at a checkpoint only when it is marked dirty, which
	 * a moved confirmed position alone does not do (before PG17's shutdown
	 * checkpoint): mark it.
	 */
	ReplicationSlotMarkDirty();
	ReplicationSlotSave();
	decoder->saved_at = GetCurrentTimestamp();
}
