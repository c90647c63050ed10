/*-------------------------------------------------------------------------
 *
 * cdc_backfill.c
 *	  A CDC sync's backfill: every table is read once, in chunks, and each
 *	  chunk is placed into the stream of changes where it belongs.
 *
 * The watermark approach (Netflix's DBLog, Debezium's incremental
 * snapshots), made exact by the fact that the reader and the decoder are
 * one process:
 *
 *	1. read a chunk (keyset pagination on the table's key, or a range of
 *	   blocks for a keyless table of an append sync) in a short transaction,
 *	   keeping its snapshot's xmin, xmax and running xids;
 *	2. write a watermark (a logical message naming the sync and the chunk)
 *	   and flush it;
 *	3. decode on; every change to the table is also noted (transaction,
 *	   key);
 *	4. when the watermark is decoded, each noted change is classified by
 *	   its transaction against the chunk's snapshot: in it (the chunk's rows
 *	   already hold it), or newer (its record, already in the stream, holds a
 *	   newer version than the chunk: that row of the chunk is dropped).  The
 *	   other rows go into the stream right there, with the watermark's
 *	   position as their _calabi_cdc_lsn: every change the chunk holds is
 *	   before it, every change it does not hold is either after it or
 *	   dropped the row.
 *
 * Classifying by snapshot rather than by WAL order is what makes it exact:
 * a transaction's commit record can precede a snapshot in the WAL while the
 * snapshot still sees it as running.  Notes are kept from the backfill's
 * start, so such a transaction is classified even when it was decoded
 * before the chunk was read.
 *
 * A chunk is read again instead of placed when a newer change left values
 * out of its record (an unchanged TOASTed value the destination could only
 * get from the chunk), when such a change precedes the read's refresh_start
 * (its row would be pruned at refresh_end), when the decoder already
 * describes the table with other columns (the chunk is older than a schema
 * change), or when the notes overflowed.  The new read sees the newer
 * change.
 *
 * No transaction is held open across chunks, and the slot's decoding never
 * waits for the backfill: other tables keep streaming.
 *
 * On a hot standby (a sync that runs there, PostgreSQL 16 and later) no
 * message can be written: the watermark is a position W instead, the
 * replay position read just after the chunk's snapshot is taken, counting
 * the record being replayed (GetCurrentReplayRecPtr), and the chunk is
 * placed as soon as the decoder has read up to W: after every record that
 * ends at or before W, before any that ends after it.  That is exact:
 *
 *	- a transaction the snapshot sees had its commit replayed before the
 *	  snapshot was taken, and its commit record's end was published as the
 *	  position being replayed before its redo made it visible (the startup
 *	  process sets it before each redo, and reading it after the snapshot
 *	  sees it): its commit ends at or before W, so the chunk comes after
 *	  its changes in the stream, as on a primary;
 *	- a transaction whose commit ends at or before W but that the snapshot
 *	  does not see (replayed between the snapshot and the read of W) is
 *	  decoded before the chunk is placed: its changes were noted and are
 *	  classified against the snapshot as newer, which drops their rows from
 *	  the chunk (4. above);
 *	- a transaction whose commit ends after W was replayed after the
 *	  snapshot: the snapshot does not see it, and its changes come after
 *	  the chunk in the stream.
 *
 * The decoder reads only WAL already replayed, so it is never past W when
 * the chunk is read; the rows placed carry W as their _calabi_cdc_lsn.  A
 * snapshot taken on a standby lists the running transactions in subxip
 * (see chunk_begin).  A promotion while a chunk waits changes nothing: W
 * is a position in the WAL the promoted server continues.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "replication/message.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "cdc_change.h"
#include "cdc_decoder.h"
#include "cdc_relcache.h"
#include "cdc_sync.h"
#include "compat.h"
#include "protocol.h"
#include "reader.h"
#include "stream.h"
#include "xact.h"

/*
 * Changes of the backfilled table noted before the notes overflow (about
 * 8 MB); notes last one chunk's window, so only a huge transaction on that
 * table fills them, and its chunk is read again after it.
 */
#define MAX_TOUCHES 100000
/* reads of the same chunk in a row before saying so in the log */
#define REREADS_LOGGED 3
/*
 * Room kept in a row's line for what placing it adds: the _calabi_cdc_*
 * members (a position, a timestamp, null), the closing braces and '\n'.
 */
#define PLACED_MEMBERS_MAX 256

void
cp_cdc_backfill_init(CpRun *run)
{
	CpCdcRun   *cdc = run->cdc;
	MemoryContext caller;

	cdc->touchcxt = AllocSetContextCreate(run->mcxt, "calabi_push backfill notes",
										  ALLOCSET_DEFAULT_SIZES);
	cdc->chunk.cxt = AllocSetContextCreate(run->mcxt, "calabi_push backfill chunk",
										   ALLOCSET_DEFAULT_SIZES);
	cdc->chunk.state = CP_CHUNK_NONE;

	caller = cp_xact_start();
	PushActiveSnapshot(GetTransactionSnapshot());
	for (int i = 0; i < run->nstreams; i++)
	{
		CpStreamRun *s = &run->streams[i];
		Relation	rel;

		rel = cp_stream_run_open(run, s);
		if (rel->rd_rel->relkind != RELKIND_RELATION)
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("\"%s\" cannot be captured: change data capture reads tables",
							RelationGetRelationName(rel)),
					 errhint("Drop the sync and create it again with tables only.")));
		cp_stream_run_describe(run, i, rel);
		s->by_blocks = !s->keyset;
		s->generation = s->def->generation;
		s->rows = s->def->rows_sent;
		relation_close(rel, NoLock);
	}
	PopActiveSnapshot();
	cp_xact_commit(caller);
}

/* Whether the acknowledged read of s used the key it has now. */
static bool
resumable(CpStreamRun *s)
{
	if (strcmp(s->def->phase, "reading") != 0 || s->def->refresh_lsn == InvalidXLogRecPtr ||
		s->def->after == NIL)
		return false;
	if (!s->keyset)
		return s->def->key == NIL && list_length(s->def->after) == 1;
	return cp_stream_run_same_key(s);
}

static void
append_control(CpRun *run, int idx, const char *kind)
{
	CpStreamRun *s = &run->streams[idx];
	CpBatch    *batch = run->batch;
	int			start = cp_batch_line_begin(batch);

	cp_protocol_append_control(&batch->lines, kind, s->control_names, s->generation,
							   strcmp(kind, "refresh_start") == 0 ?
							   s->refresh_lsn : InvalidXLogRecPtr);
	cp_batch_line_end(batch, start, idx, false);
}

/* Begin (or resume) the backfill of the first stream not yet done. */
static void
next_stream(CpRun *run)
{
	CpCdcRun   *cdc = run->cdc;

	for (int i = 0; i < run->nstreams; i++)
	{
		CpStreamRun *s = &run->streams[i];

		if (strcmp(s->def->phase, "done") == 0)
			continue;
		cdc->backfill_stream = i;
		cdc->rereads = 0;
		if (resumable(s))
		{
			s->generation = s->def->generation;
			s->rows = s->def->rows_sent;
			s->after = s->def->after;
			s->refresh_lsn = s->def->refresh_lsn;
			ereport(LOG,
					(errmsg("the backfill of \"%s\".\"%s\" resumes after " INT64_FORMAT " rows",
							s->nspname, s->relname, s->rows)));
		}
		else
		{
			s->generation = s->def->generation + 1;
			s->def->generation = s->generation;
			s->rows = 0;
			s->after = NIL;

			/*
			 * Every change decoded from here on ends after this position,
			 * and every row the read sends carries a later one.
			 */
			s->refresh_lsn = Max(cp_decoder_position(cdc->decoder), cdc->decoded_lsn);
			ereport(LOG,
					(errmsg("the backfill of \"%s\".\"%s\" begins at %X/%X",
							s->nspname, s->relname,
							LSN_FORMAT_ARGS(s->refresh_lsn))));
		}
		s->def->phase = "reading";
		cdc->refresh_announced = false;
		return;
	}
	cdc->backfill_stream = -1;
}

bool
cp_cdc_backfill_wants_chunk(CpRun *run)
{
	CpCdcRun   *cdc = run->cdc;

	if (cdc->chunk.state != CP_CHUNK_NONE)
		return false;
	if (cdc->backfill_stream < 0)
		next_stream(run);
	return cdc->backfill_stream >= 0;
}

void
cp_cdc_backfill_state(CpRun *run, int idx, StringInfo buf)
{
	cp_protocol_cdc_state(buf, &run->streams[idx], run->streams[idx].def->phase,
						  run->cdc->decoded_lsn);
}

void
cp_cdc_backfill_touch(void *arg, const char *key, int len, bool partial)
{
	CpRun	   *run = arg;
	CpCdcRun   *cdc = run->cdc;
	MemoryContext oldcxt;
	CpCdcTouch *touch;

	if (cdc->touches_overflow)
		return;
	if (cdc->ntouches >= MAX_TOUCHES)
	{
		/* a huge transaction: forget, and read the chunk again later */
		cdc->touches_overflow = true;
		cdc->touches = NIL;
		cdc->ntouches = 0;
		MemoryContextReset(cdc->touchcxt);
		return;
	}
	oldcxt = MemoryContextSwitchTo(cdc->touchcxt);
	touch = palloc(sizeof(CpCdcTouch));
	touch->xid = cdc->txn_xid;
	touch->lsn = cdc->txn_end;
	touch->partial = partial;
	touch->key = key != NULL ? pnstrdup(key, len) : NULL;
	cdc->touches = lappend(cdc->touches, touch);
	cdc->ntouches++;
	MemoryContextSwitchTo(oldcxt);
}

/*
 * Whether the chunk's snapshot sees the committed transaction xid (a
 * top-level one: the decoder's).  Of a snapshot taken on a standby, xip
 * holds what its subxip did (see chunk_begin): every transaction the
 * primary runs, top-level ones included, is known there as running until
 * its commit or abort is replayed.
 */
static bool
chunk_sees(const CpCdcChunk *chunk, TransactionId xid)
{
	if (TransactionIdPrecedes(xid, chunk->xmin))
		return true;
	if (!TransactionIdPrecedes(xid, chunk->xmax))
		return false;
	for (int i = 0; i < chunk->xcnt; i++)
		if (TransactionIdEquals(chunk->xip[i], xid))
			return false;
	return true;
}

static void
add_row(CpCdcChunk *chunk)
{
	if (chunk->nrows == chunk->maxrows)
	{
		chunk->maxrows = Max(chunk->maxrows * 2, 256);
		if (chunk->row_off == NULL)
		{
			chunk->row_off = palloc(sizeof(int) * chunk->maxrows);
			chunk->row_len = palloc(sizeof(int) * chunk->maxrows);
			chunk->row_key = palloc(sizeof(char *) * chunk->maxrows);
			chunk->row_dropped = palloc(sizeof(bool) * chunk->maxrows);
		}
		else
		{
			chunk->row_off = repalloc(chunk->row_off, sizeof(int) * chunk->maxrows);
			chunk->row_len = repalloc(chunk->row_len, sizeof(int) * chunk->maxrows);
			chunk->row_key = repalloc(chunk->row_key, sizeof(char *) * chunk->maxrows);
			chunk->row_dropped = repalloc(chunk->row_dropped, sizeof(bool) * chunk->maxrows);
		}
	}
	chunk->row_key[chunk->nrows] = NULL;
	chunk->row_dropped[chunk->nrows] = false;
	chunk->nrows++;
}

/* What a chunk's rows go with (see chunk_row). */
typedef struct BackfillRead
{
	CpRun	   *run;
	CpReadChunk *read;
	int		   *key_idx;		/* the key's columns among the encoder's */
	StringInfoData key;
} BackfillRead;

/*
 * Whether a transaction the snapshot counts as running has committed
 * already: its commit record is in the WAL, maybe before the decoder's
 * position, while the snapshot does not see it.  Changes the decoder will
 * not send again (skipped before the slot's start) would then be in
 * neither the stream nor the chunk.  The window is a few microseconds: the
 * chunk is simply read again.
 */
static bool
snapshot_in_flux(Snapshot snapshot)
{
	TransactionId next = XidFromFullTransactionId(ReadNextFullTransactionId());
	TransactionId xid = snapshot->xmax;
	int			checked = 0;

	for (int i = 0; i < snapshot->xcnt; i++)
		if (TransactionIdDidCommit(snapshot->xip[i]))
			return true;
	/* taken on a standby: the running transactions are all in subxip */
	if (snapshot->takenDuringRecovery)
		for (int i = 0; i < snapshot->subxcnt; i++)
			if (TransactionIdDidCommit(snapshot->subxip[i]))
				return true;
	/* xids from xmax on: assigned since, or completing while it was taken */
	while (TransactionIdPrecedes(xid, next) && checked++ < 10000)
	{
		if (TransactionIdDidCommit(xid))
			return true;
		TransactionIdAdvance(xid);
	}
	return false;
}

/*
 * The chunk's transaction has its snapshot: keep what placing it needs
 * (the snapshot's transactions, the read time, how the decoder must
 * describe the table), unless the snapshot is in flux.
 */
static CpReadResult
chunk_begin(void *arg, Snapshot snapshot)
{
	BackfillRead *b = arg;
	CpRun	   *run = b->run;
	CpCdcChunk *chunk = &run->cdc->chunk;
	CpStreamRun *s = &run->streams[chunk->stream];
	Relation	rel;
	StringInfoData text;

	/*
	 * In the chunk's memory (the reader's current context).  A snapshot
	 * taken on a standby keeps every transaction it counts as running, top
	 * level or not, in subxip (GetSnapshotData), and xcnt is 0; the decoder
	 * names transactions by their top-level xid, which is among them.
	 */
	chunk->xmin = snapshot->xmin;
	chunk->xmax = snapshot->xmax;
	if (snapshot->takenDuringRecovery)
	{
		chunk->xcnt = snapshot->subxcnt;
		chunk->xip = palloc(sizeof(TransactionId) * Max(snapshot->subxcnt, 1));
		memcpy(chunk->xip, snapshot->subxip, sizeof(TransactionId) * snapshot->subxcnt);
	}
	else
	{
		chunk->xcnt = snapshot->xcnt;
		chunk->xip = palloc(sizeof(TransactionId) * Max(snapshot->xcnt, 1));
		memcpy(chunk->xip, snapshot->xip, sizeof(TransactionId) * snapshot->xcnt);
	}

	/*
	 * On a standby the watermark is the position of the WAL replayed, read
	 * now that the snapshot is taken: with the record being replayed, so
	 * that it is at or after the commit of every transaction the snapshot
	 * sees (see the header).  A promotion since the snapshot changes
	 * nothing: the position stays valid, and the WAL before it the same.
	 */
	chunk->by_position = snapshot->takenDuringRecovery;
	chunk->watermark_lsn = chunk->by_position ?
		cp_current_replay_rec_ptr() : InvalidXLogRecPtr;
	chunk->read_at = GetCurrentTimestamp();
	b->read->emitted_at = chunk->read_at;
	initStringInfo(&chunk->rows);

	/* _calabi_cdc_updated_at of its rows: encoded here, in a transaction */
	initStringInfo(&text);
	cp_cdc_append_time(&text, chunk->read_at);
	chunk->read_at_text = text.data;

	/* read it again in a moment, with a snapshot that is not */
	if (snapshot_in_flux(snapshot))
		return CP_READ_SKIPPED;

	rel = cp_stream_open(s->def->relid, run->sync->run_as);
	cp_cdc_relcache_describe(rel, &chunk->stream_line, &chunk->stream_line_len,
							 &chunk->signature);
	relation_close(rel, NoLock);
	return CP_READ_OK;
}

/* A row read, up to its data object: kept, open, with its key's text. */
static void
chunk_row(void *arg, int start, const Datum *values, const bool *isnull)
{
	BackfillRead *b = arg;
	CpRun	   *run = b->run;
	CpCdcChunk *chunk = &run->cdc->chunk;
	CpStreamRun *s = &run->streams[chunk->stream];

	add_row(chunk);
	/* the data object stays open for the _calabi_cdc_* members */
	chunk->rows.data[--chunk->rows.len] = '\0';
	chunk->row_off[chunk->nrows - 1] = start;
	chunk->row_len[chunk->nrows - 1] = chunk->rows.len - start;
	if (!s->keyset)
		return;
	if (b->key_idx == NULL)
	{
		/* the key's columns among the encoder's, found once per chunk */
		b->key_idx = palloc(sizeof(int) * Max(s->nkeys, 1));
		for (int k = 0; k < s->nkeys; k++)
			for (int i = 0; i < s->enc->ncolumns; i++)
				if (s->enc->columns[i].attnum == s->key_columns[k])
					b->key_idx[k] = i;
		initStringInfo(&b->key);
	}
	resetStringInfo(&b->key);
	cp_cdc_key_text(&b->key, s->enc, b->key_idx, s->nkeys, values, isnull);
	chunk->row_key[chunk->nrows - 1] = pstrdup(b->key.data);
}

void
cp_cdc_backfill_read_chunk(CpRun *run)
{
	CpCdcRun   *cdc = run->cdc;
	CpCdcChunk *chunk = &cdc->chunk;
	int			idx = cdc->backfill_stream;
	CpStreamRun *s = &run->streams[idx];
	CpReadChunk c = {0};
	BackfillRead b = {0};
	XLogRecPtr	lsn;

	MemoryContextReset(chunk->cxt);
	chunk->stream = idx;
	chunk->nrows = chunk->maxrows = 0;
	chunk->row_off = chunk->row_len = NULL;
	chunk->row_key = NULL;
	chunk->row_dropped = NULL;
	chunk->after = NIL;

	/*
	 * A chunk holds at most about a batch: chunk_rows rows near batch_bytes
	 * each would not fit in memory.  Its encoder is built for it: the
	 * decoder's description of the table (its signature), not the
	 * encoder, decides whether its rows may be placed.
	 */
	b.run = run;
	b.read = &c;
	c.max_rows = run->sync->chunk_rows;
	c.out = &chunk->rows;
	c.line_room = PLACED_MEMBERS_MAX;
	c.cxt = chunk->cxt;
	c.begin = chunk_begin;
	c.row = chunk_row;
	c.arg = &b;
	s->enc = NULL;
	if (cp_read_chunk(run, s, &c) == CP_READ_SKIPPED)
	{
		MemoryContextReset(chunk->cxt);
		return;
	}

	if (s->too_large != NULL)
	{
		/* nothing of this chunk is placed: the row is the next to send */
		chunk->state = CP_CHUNK_NONE;
		MemoryContextReset(chunk->cxt);
		cp_stream_run_stop_too_large(run, s);
	}

	chunk->after = c.after != NIL ? c.after : s->after;
	chunk->exhausted = c.exhausted;

	/*
	 * The watermark: flushed, or an idle server would not let the decoder
	 * see it for a long time.  Every slot of the database decodes it, so it
	 * names the sync and the chunk.  A chunk read on a standby, which
	 * cannot write WAL, has its position already (chunk_begin).
	 */
	chunk->watermark_seq = ++cdc->watermark_seq;
	if (!chunk->by_position)
	{
		snprintf(chunk->watermark_text, sizeof(chunk->watermark_text), "%s:" INT64_FORMAT,
				 run->sync->id_text, chunk->watermark_seq);
		lsn = cp_log_logical_message("calabi_push", chunk->watermark_text,
									 strlen(chunk->watermark_text));
		XLogFlush(lsn);
	}
	chunk->state = CP_CHUNK_WAITING;
}

bool
cp_cdc_backfill_reached(CpRun *run)
{
	CpCdcChunk *chunk = &run->cdc->chunk;

	/*
	 * Every record ending at or before the position is decoded, and none
	 * after it: the chunk goes between them (see the header).  The
	 * transactions before it whose changes the chunk lacks have been noted
	 * (their commit was decoded), and are classified when it is placed.
	 */
	if (chunk->state == CP_CHUNK_WAITING && chunk->by_position &&
		cp_decoder_position(run->cdc->decoder) >= chunk->watermark_lsn)
		chunk->state = CP_CHUNK_REACHED;
	return chunk->state == CP_CHUNK_REACHED;
}

static int
key_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Drop the chunk's rows that newer changes supersede; false: read again. */
static bool
drop_superseded(CpRun *run)
{
	CpCdcRun   *cdc = run->cdc;
	CpCdcChunk *chunk = &cdc->chunk;
	CpStreamRun *s = &run->streams[chunk->stream];
	char	  **sorted = NULL;
	ListCell   *lc;

	if (cdc->touches_overflow)
		return false;
	foreach(lc, cdc->touches)
	{
		CpCdcTouch *touch = lfirst(lc);
		char	  **found;

		if (chunk_sees(chunk, touch->xid))
			continue;
		if (touch->key == NULL)
		{
			/* truncated after the read: none of its rows exist any more */
			for (int r = 0; r < chunk->nrows; r++)
				chunk->row_dropped[r] = true;
			continue;
		}
		if (!s->keyset || chunk->nrows == 0)
			continue;
		if (sorted == NULL)
		{
			sorted = palloc(sizeof(char *) * chunk->nrows);
			memcpy(sorted, chunk->row_key, sizeof(char *) * chunk->nrows);
			qsort(sorted, chunk->nrows, sizeof(char *), key_cmp);
		}
		found = bsearch(&touch->key, sorted, chunk->nrows, sizeof(char *), key_cmp);
		if (found == NULL)
			continue;
		if (touch->partial || touch->lsn < s->refresh_lsn)
			return false;
		/* the row whose key text is that very string */
		for (int r = 0; r < chunk->nrows; r++)
			if (chunk->row_key[r] == *found || strcmp(chunk->row_key[r], *found) == 0)
				chunk->row_dropped[r] = true;
	}
	if (sorted != NULL)
		pfree(sorted);
	return true;
}

/* Forget the notes the chunk's snapshot saw: every later one sees them too. */
static void
prune_touches(CpRun *run)
{
	CpCdcRun   *cdc = run->cdc;
	CpCdcChunk *chunk = &cdc->chunk;
	List	   *kept = NIL;
	ListCell   *lc;
	MemoryContext oldcxt;
	MemoryContext fresh;

	if (cdc->touches_overflow)
	{
		cdc->touches_overflow = false;
		return;
	}
	if (cdc->touches == NIL)
		return;

	/* copy what stays into a new context, so memory does not creep */
	fresh = AllocSetContextCreate(run->mcxt, "calabi_push backfill notes",
								  ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(fresh);
	foreach(lc, cdc->touches)
	{
		CpCdcTouch *touch = lfirst(lc);
		CpCdcTouch *copy;

		if (chunk_sees(chunk, touch->xid))
			continue;
		copy = palloc(sizeof(CpCdcTouch));
		*copy = *touch;
		copy->key = touch->key ? pstrdup(touch->key) : NULL;
		kept = lappend(kept, copy);
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cdc->touchcxt);
	cdc->touchcxt = fresh;
	cdc->touches = kept;
	cdc->ntouches = list_length(kept);
}

static void
discard_chunk(CpRun *run, const char *why)
{
	CpCdcRun   *cdc = run->cdc;
	CpStreamRun *s = &run->streams[cdc->chunk.stream];

	cdc->rereads++;
	if (cdc->rereads == REREADS_LOGGED)
		ereport(LOG,
				(errmsg("a chunk of \"%s\".\"%s\" was read %d times: %s",
						s->nspname, s->relname, cdc->rereads, why)));
	prune_touches(run);
	cdc->chunk.state = CP_CHUNK_NONE;
	MemoryContextReset(cdc->chunk.cxt);
}

void
cp_cdc_backfill_place_chunk(CpRun *run)
{
	CpCdcRun   *cdc = run->cdc;
	CpCdcChunk *chunk = &cdc->chunk;
	int			idx = chunk->stream;
	CpStreamRun *s = &run->streams[idx];
	CpBatch    *batch;
	StringInfoData members;
	int			owed;

	if (!drop_superseded(run))
	{
		discard_chunk(run, "rows changed concurrently in ways only a new read resolves");
		return;
	}
	owed = cp_cdc_relcache_owed(s->def->relid, chunk->signature);
	if (owed < 0)
	{
		discard_chunk(run, "the table's columns changed after the read");
		return;
	}
	cdc->rereads = 0;

	batch = run->batch;
	if (owed > 0)
	{
		int			start = cp_batch_line_begin(batch);

		/* the line ends with '\n' already */
		appendBinaryStringInfo(&batch->lines, chunk->stream_line, chunk->stream_line_len - 1);
		cp_batch_line_end(batch, start, idx, false);
		cp_cdc_relcache_announced(s->def->relid, chunk->signature);
	}
	if (!cdc->refresh_announced)
	{
		/* after the STREAM; a refresh_start of the open generation changes nothing */
		append_control(run, idx, "refresh_start");
		cdc->refresh_announced = true;
	}

	/* what closes each row: its position, the read time, not deleted */
	initStringInfo(&members);
	cp_protocol_cdc_members(&members, chunk->watermark_lsn, chunk->read_at_text,
							strlen(chunk->read_at_text));
	appendStringInfoString(&members, "null}}}");

	for (int r = 0; r < chunk->nrows; r++)
	{
		int			start;
		const char *row = chunk->rows.data + chunk->row_off[r];
		int			len = chunk->row_len[r];

		if (chunk->row_dropped[r])
			continue;
		start = cp_batch_line_begin(batch);
		appendBinaryStringInfo(&batch->lines, row, len);
		if (row[len - 1] != '{')
			appendStringInfoChar(&batch->lines, ',');
		appendBinaryStringInfo(&batch->lines, members.data, members.len);
		cp_batch_line_end(batch, start, idx, true);
		s->rows++;
	}
	pfree(members.data);

	/* where the next read begins: acknowledged with the rows */
	if (chunk->after != NIL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(run->mcxt);
		List	   *after = NIL;
		ListCell   *lc;

		foreach(lc, chunk->after)
			after = lappend(after, pstrdup(lfirst(lc)));
		s->after = after;
		MemoryContextSwitchTo(oldcxt);
	}
	if (chunk->exhausted)
	{
		append_control(run, idx, "refresh_end");
		s->def->phase = "done";
		cdc->backfill_stream = -1;
		ereport(LOG,
				(errmsg("the backfill of \"%s\".\"%s\" completed: " INT64_FORMAT " rows",
						s->nspname, s->relname, s->rows)));
	}
	cp_cdc_add_state(run, idx);

	prune_touches(run);
	chunk->state = CP_CHUNK_NONE;
	MemoryContextReset(chunk->cxt);
	if (cdc->backfill_stream < 0)
	{
		/* no table watched: no notes */
		MemoryContextReset(cdc->touchcxt);
		cdc->touches = NIL;
		cdc->ntouches = 0;
	}

	if (cp_delivery_batch_full(run))
		cp_delivery_flush(run, false);
}

/*
 * Read stream idx again from the start, in a new generation: changes of it
 * that could not be sent were skipped.  Its chunk in flight, if any, and
 * the notes kept for it are given up (their watermark will match nothing);
 * the new read begins after the decoding round that skipped them, so its
 * snapshots see every skipped change.
 */
void
cp_cdc_backfill_restart(CpRun *run, int idx)
{
	CpCdcRun   *cdc = run->cdc;
	CpStreamRun *s = &run->streams[idx];

	if (cdc->backfill_stream == idx)
	{
		cdc->chunk.state = CP_CHUNK_NONE;
		MemoryContextReset(cdc->chunk.cxt);
		MemoryContextReset(cdc->touchcxt);
		cdc->touches = NIL;
		cdc->ntouches = 0;
		cdc->touches_overflow = false;
		cdc->backfill_stream = -1;
	}
	/* not "reading": never resumed (see resumable) */
	s->def->phase = "pending";
	ereport(LOG,
			(errmsg("table \"%s\".\"%s\" is read again: changes of it made while it could not be sent were skipped",
					s->nspname, s->relname)));
}
