/*-------------------------------------------------------------------------
 *
 * method.c
 *	  What the methods that read relations share (method.h): a stream
 *	  prepared for a run, described and announced by its STREAM message.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "cursor_column.h"
#include "method.h"
#include "protocol.h"
#include "reader.h"
#include "xact.h"

void
cp_method_prepare_stream(CpRun *run, int idx, const char *method,
						 CpCursorColumn *cursor)
{
	CpStreamRun *s = &run->streams[idx];
	Relation	rel;
	CpRowEncoder *schema_enc;
	CpBatch    *batch;
	int			start;
	MemoryContext oldcontext;
	MemoryContext caller;

	/*
	 * Everything describing the stream lives in its own context, rebuilt
	 * here at each run and whenever its columns changed.  Batches point at
	 * its names, so deliver them all first.
	 */
	if (s->mcxt == NULL)
		s->mcxt = AllocSetContextCreate(run->mcxt, "calabi_push stream",
										ALLOCSET_SMALL_SIZES);
	else
	{
		cp_delivery_flush(run, true);
		MemoryContextReset(s->mcxt);
	}
	s->enc = NULL;
	s->enc_desc = NULL;
	s->enccxt = NULL;			/* a child of mcxt: gone with it */
	s->cursor_name = NULL;
	s->too_large = NULL;
	batch = run->batch;			/* after the flush: it swaps the buffers */

	caller = cp_xact_start();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = cp_stream_run_open(run, s);
	cp_stream_run_describe(run, idx, rel);
	if (!s->keyset || cursor != NULL)
		s->cursor_name = MemoryContextStrdup(s->mcxt, psprintf("calabi_push_stream_%d", idx));

	oldcontext = MemoryContextSwitchTo(s->mcxt);
	if (cursor != NULL)
		cp_cursor_column_describe(cursor, rel, s->def->cursor_column, run->sync->name,
								  run->sync->run_as, run->mcxt);
	/* the STREAM message, sent in every run before the stream's records */
	schema_enc = cp_row_encoder_create(RelationGetDescr(rel), run->chunkcxt);
	start = cp_batch_line_begin(batch);
	cp_protocol_append_stream(&batch->lines, rel, schema_enc, method,
							  run->sync->mode, cursor != NULL ? cursor->name : NULL);
	cp_batch_line_end(batch, start, idx, false);
	MemoryContextSwitchTo(oldcontext);

	relation_close(rel, NoLock);
	PopActiveSnapshot();
	cp_xact_commit(caller);
	MemoryContextReset(run->chunkcxt);
}

void
cp_method_record_done(CpRun *run, int idx, int start)
{
	cp_protocol_record_end(&run->batch->lines);
	cp_batch_line_end(run->batch, start, idx, true);
	run->streams[idx].rows++;
}

void
cp_method_add_state(CpRun *run, int idx, StringInfo state)
{
	cp_batch_add_state(run->batch, idx, state->data, state->len);
	pfree(state->data);
}
