/*-------------------------------------------------------------------------
 *
 * cdc_decoder.c
 *	  Logical decoding inside a sync worker (see cdc_decoder.h).
 *
 * logicalfuncs.c is the model: read the WAL that is flushed (on a hot
 * standby, PostgreSQL 16 and later: replayed), record by record, with the
 * waiting page reader, and stop at the position seen when the round began.
 * A record that begins before that position may end after it (the WAL
 * writer flushes whole pages only, unless a commit asks for more), and the
 * reader then waits for its end: a stop is served in that wait
 * (cp_decoder_read_page).  Unlike the SQL functions the context lives for
 * the whole worker: a new one would re-read everything from the slot's
 * restart_lsn, which moves only at running-xacts records.
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
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/pmsignal.h"
#include "utils/guc.h"
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

	/*
	 * A failover slot (see "Failover slots" below): the end of the round
	 * that waits for the standbys (invalid: none), and a confirmation held
	 * until they have the checkpoint that allows it.
	 */
	bool		failover;
	XLogRecPtr	round_end;
	XLogRecPtr	held_lsn;
	XLogRecPtr	held_commit;
};

/*
 * Failover slots (PG17).  A standby with sync_replication_slots copies a
 * failover slot's position from the primary, and once promoted the sync's
 * worker continues there from the sync's checkpoint, which the standby has
 * replayed.  Two orders keep that sound, as core keeps them for a
 * walsender when synchronized_standby_slots names the standbys' physical
 * slots (WalSndWaitForWal, and pg_logical_slot_get_changes):
 *
 * - Nothing is decoded, hence nothing sent, past what those standbys have
 *   flushed.  What matters after a failover is that the new primary has
 *   every change the destination received: a change sent before the
 *   standby had it could be lost with the old primary, and the
 *   destination would keep a row the new primary never had.  Waiting
 *   before sending only would decode it into a batch all the same; waiting
 *   before decoding also holds back the backfill's chunks (placed when the
 *   decoder reaches their watermark), and is what a walsender does.  A
 *   round waits for the WAL flushed at its start (held in round_end, so
 *   that a steady write load cannot keep the target ahead of the standbys
 *   for ever), and does not block: the worker goes on with its deliveries
 *   and stops, and sync_status says it waits.
 * - The slot is confirmed past a position only once the standbys have the
 *   checkpoint that records it (sync.cdc_lsn, committed just before): a
 *   standby copies a confirmed position it has flushed, so otherwise a
 *   promoted standby could hold a slot confirmed past its own copy of the
 *   checkpoint, which cp_cdc_slot_validate rightly refuses (the changes in
 *   between would seem consumed by something else).
 *
 * cp_standby_slots_confirmed is core's StandbySlotsHaveCaughtup: true when
 * synchronized_standby_slots is empty, so a failover slot without it (the
 * standbys may then lag the destination) costs nothing.
 */
static bool wait_for_standbys = false;	/* the page reader's copy of failover */

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

XLogRecPtr
cp_decoder_wal_end(void)
{
	/* a standby's WAL is decodable once replayed (logicalfuncs.c's end) */
	if (RecoveryInProgress())
		return cp_replay_rec_ptr();
	return cp_flush_rec_ptr();
}

/*
 * read_local_xlog_page, once the page holds WAL up to what the reader asks
 * for: flushed, or on a standby replayed (cp_decoder_wal_end).  Until then
 * it waits here, where a stop is served (cp_worker_stop_point: no record
 * is half decoded while the reader reads a page), rather than in
 * read_local_xlog_page's own wait, which checks only for interrupts: a
 * clean stop (CP_STOP_DEFER) raises none, and at a server's shutdown
 * nothing flushed the record's end any more, so the worker slept there,
 * and the shutdown waited for it, forever (seen on PostgreSQL 18,
 * test/t/062_cdc_two_phase.pl: pg_ctl stop timed out).  On a standby the
 * same holds of replay, which stops with the server (or waits on a
 * primary that is gone), and a new slot there waits for a record of the
 * primary's running transactions, which an idle primary may not write for
 * long (cdc_slot.c).  A failover slot's reader also waits here for the
 * standbys to have it; on a standby there are none to wait for: its slot
 * cannot fail over.  read_local_xlog_page follows a timeline switch (a
 * promotion, or the primary's) itself.
 */
int
cp_decoder_read_page(XLogReaderState *state, XLogRecPtr targetPagePtr, int reqLen,
					 XLogRecPtr targetRecPtr, char *cur_page)
{
	XLogRecPtr	needed = targetPagePtr + reqLen;
	XLogRecPtr	limit = InvalidXLogRecPtr;
	bool		waited_for_standbys = false;
	int			polls = 0;
	int			count;

	for (;;)
	{
		bool		in_recovery = RecoveryInProgress();
		XLogRecPtr	available = cp_decoder_wal_end();

		if (needed <= available)
		{
			if (!wait_for_standbys || in_recovery)
				break;

			/*
			 * A failover slot decodes only what the standbys have (see
			 * "Failover slots"), and read_local_xlog_page hands over the
			 * page up to the flushed WAL: the reader then takes the rest of
			 * a record from it without asking again, so what it gets is
			 * cut where the standbys are known to be, as a walsender's
			 * logical_read_xlog_page is cut at the position it waited for.
			 */
			if (cp_standby_slots_confirmed(available))
			{
				limit = available;
				break;
			}
			if (cp_standby_slots_confirmed(needed))
			{
				limit = needed;
				break;
			}
			if (!waited_for_standbys)
				cp_worker_standby_wait(true);
			waited_for_standbys = true;
		}
		cp_worker_stop_point();
		CHECK_FOR_INTERRUPTS();

		/*
		 * Once the postmaster is gone (kill -9) nothing flushes or replays
		 * WAL any more: the worker would wait here for ever, holding the
		 * shared memory that the next postmaster refuses to share, so the
		 * server could not start again.  Exit as WL_EXIT_ON_PM_DEATH does.
		 */
		if (!PostmasterIsAlive())
			proc_exit(1);

		/*
		 * The way out of a standby that is gone is to remove it from
		 * synchronized_standby_slots and reload: read it here too.
		 */
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		/*
		 * The end of a record is flushed or replayed within a millisecond
		 * or so; the standbys take milliseconds at least, and so may the
		 * primary a standby waits for (a new slot there may wait for its
		 * running-transactions record for long): no need to poll as fast.
		 */
		pg_usleep(waited_for_standbys || ++polls > 1000 ? 10000L : 1000L);
	}
	if (waited_for_standbys)
		cp_worker_standby_wait(false);
	count = read_local_xlog_page(state, targetPagePtr, reqLen, targetRecPtr, cur_page);
	if (count > 0 && !XLogRecPtrIsInvalid(limit) && limit - targetPagePtr < (XLogRecPtr) count)
		count = (int) (limit - targetPagePtr);
	return count;
}

CpDecoder *
cp_decoder_open(const char *slot_name, XLogRecPtr start_lsn, bool failover,
				List *options, MemoryContext parent)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(parent);
	CpDecoder  *decoder = palloc0(sizeof(CpDecoder));

	Assert(!IsTransactionState());
	CheckLogicalDecodingRequirements();
	cp_replication_slot_acquire(slot_name, true);

	/*
	 * A sync running on a standby (run_on) has a slot of the standby's own,
	 * which cannot fail over (standbys do not copy slots onward): the option
	 * means nothing there, and waiting for synchronized_standby_slots, a
	 * primary's setting, would be wrong.  A promotion under way keeps it so
	 * until the worker starts again.
	 */
	if (RecoveryInProgress())
		failover = false;
#ifdef CP_HAVE_FAILOVER_SLOTS

	/*
	 * The slot follows the sync's option: it may differ on a slot created
	 * by an older version of the library, or whose flag was changed behind
	 * the sync's back (ALTER_REPLICATION_SLOT).  A slot a standby synced
	 * keeps its flag (and synced) at promotion.  Never changed on a
	 * standby, where core forbids the flag.
	 */
	else if (cp_slot_failover(MyReplicationSlot) != failover)
	{
		cp_set_slot_failover(failover);
		ereport(LOG,
				(errmsg("replication slot \"%s\" %s", slot_name,
						failover ? "is now a failover slot: standbys with sync_replication_slots copy it"
						: "is no longer a failover slot")));
	}
#endif
	decoder->failover = failover;
	wait_for_standbys = failover;

	/*
	 * start_lsn beyond the slot's confirmed position skips what the sync's
	 * checkpoint already holds: after a crash between the checkpoint's
	 * commit and the slot's save, nothing acknowledged is sent again.
	 */
	decoder->ctx = CreateDecodingContext(start_lsn, options, false,
										 XL_ROUTINE(.page_read = cp_decoder_read_page,
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
	XLogRecPtr	end_of_wal;
	MemoryContext oldcxt;
	int			nrecords = 0;

	Assert(!IsTransactionState());

	/* a failover slot's round waits for the standbys: see "Failover slots" */
	end_of_wal = XLogRecPtrIsInvalid(decoder->round_end) ?
		cp_decoder_wal_end() : decoder->round_end;
	if (decoder->failover && !cp_standby_slots_confirmed(end_of_wal))
	{
		decoder->round_end = end_of_wal;
		*at_end = false;
		return 0;
	}
	decoder->round_end = InvalidXLogRecPtr;

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

bool
cp_decoder_waits_for_standbys(const CpDecoder *decoder)
{
	return !XLogRecPtrIsInvalid(decoder->round_end);
}

XLogRecPtr
cp_decoder_confirmed(const CpDecoder *decoder)
{
	return decoder->confirmed;
}

XLogRecPtr
cp_decoder_position(const CpDecoder *decoder)
{
	return decoder->ctx->reader->EndRecPtr;
}

/*
 * A failover slot: of lsn (checkpointed by the commit that ended at
 * XactLastCommitEnd) and the confirmation held before, the furthest the
 * standbys have the checkpoint of (see "Failover slots"); invalid: none.
 * A held confirmation is replaced only once it is released, so that under
 * a steady load, where the newest checkpoint is always a little ahead of
 * the standbys, the slot still moves.
 */
static XLogRecPtr
confirmable(CpDecoder *decoder, XLogRecPtr lsn)
{
	XLogRecPtr	commit_end = XactLastCommitEnd;
	XLogRecPtr	ok = InvalidXLogRecPtr;

	if (!XLogRecPtrIsInvalid(decoder->held_lsn) &&
		cp_standby_slots_confirmed(decoder->held_commit))
	{
		ok = decoder->held_lsn;
		decoder->held_lsn = InvalidXLogRecPtr;
	}
	if (cp_standby_slots_confirmed(commit_end))
	{
		decoder->held_lsn = InvalidXLogRecPtr;
		return lsn;
	}
	if (XLogRecPtrIsInvalid(decoder->held_lsn))
	{
		decoder->held_lsn = lsn;
		decoder->held_commit = commit_end;
	}
	return ok;
}

void
cp_decoder_confirm(CpDecoder *decoder, XLogRecPtr lsn, bool save)
{
	TimestampTz now;

	if (lsn <= decoder->confirmed)
		return;
	if (decoder->failover)
	{
		lsn = confirmable(decoder, lsn);
		if (lsn <= decoder->confirmed)
			return;
	}
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
