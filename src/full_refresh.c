/*-------------------------------------------------------------------------
 *
 * full_refresh.c
 *	  Full refresh: read a stream to its end in chunks, each in its own
 *	  short transaction, never holding one for the whole table (reader.h).
 *
 * - A table with a primary key (or a replica identity index) is read by
 *   keyset pagination.  Every row is read at its version current at its
 *   chunk, exactly once; the checkpoint is the last key acknowledged, so a
 *   crash resumes right after it, in the same generation.  A table
 *   rewritten between chunks (VACUUM FULL, CLUSTER, TRUNCATE give it a new
 *   relfilenode) restarts its read under a new generation, announced with
 *   refresh_start.
 *
 * - Anything else (views, materialized views, foreign tables, keyless
 *   tables) is read through a cursor WITH HOLD: one consistent snapshot, no
 *   transaction left open; but a cursor does not survive a restart, so an
 *   interrupted read starts again under a new generation.
 *
 * Reads run as the sync's role: its privileges and row-level security
 * apply.  Everything a chunk encodes is under pinned settings (encoder.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "method.h"
#include "protocol.h"
#include "reader.h"
#include "worker.h"
#include "xact.h"

/* What a chunk's rows go with: the run, the stream, a buffer for states. */
typedef struct FullRefreshRead
{
	CpRun	   *run;
	int			idx;
	StringInfoData state;
} FullRefreshRead;

/* A line that moves the stream's state: a CONTROL, or nothing (append). */
static void
emit_control(CpRun *run, int idx, const char *kind, const char *phase)
{
	CpStreamRun *s = &run->streams[idx];
	CpBatch    *batch = run->batch;
	StringInfoData state;

	initStringInfo(&state);
	cp_protocol_full_refresh_state(&state, s, phase);
	if (run->overwrite)
	{
		int			start = cp_batch_line_begin(batch);

		cp_protocol_append_control(&batch->lines, kind, s->control_names,
								   s->generation, InvalidXLogRecPtr);
		cp_batch_line_end(batch, start, idx, false);
		cp_batch_set_state(batch, state.data, state.len);
	}
	else
		cp_batch_add_state(batch, idx, state.data, state.len);
	pfree(state.data);
}

/*
 * A row of a chunk, encoded in the batch up to its data object: close it
 * as a RECORD, with the state the stream reaches once it is delivered.
 */
static void
add_record(void *arg, int start, const Datum *values, const bool *isnull)
{
	FullRefreshRead *r = arg;
	CpRun	   *run = r->run;
	CpStreamRun *s = &run->streams[r->idx];
	CpBatch    *batch = run->batch;

	cp_method_record_done(run, r->idx, start);
	if (s->keyset)
		cp_stream_run_remember_key(run, s, values);
	resetStringInfo(&r->state);
	cp_protocol_full_refresh_state(&r->state, s, "reading");
	cp_batch_set_state(batch, r->state.data, r->state.len);
}

/* Begin a read under a new generation. */
static void
begin_read(CpRun *run, int idx)
{
	CpStreamRun *s = &run->streams[idx];

	s->generation = s->def->generation + 1;
	s->def->generation = s->generation;
	cp_stream_run_rewind(s);
	emit_control(run, idx, "refresh_start", "reading");
}

/* Read one stream to its end, flushing as batches fill. */
static void
read_stream(CpRun *run, int idx)
{
	CpStreamRun *s = &run->streams[idx];
	FullRefreshRead r;
	bool		exhausted = false;

	cp_method_prepare_stream(run, idx, "full_refresh", NULL);

	/* resume an acknowledged keyset read of the same table, else start */
	if (strcmp(s->def->phase, "reading") == 0 && s->keyset &&
		s->def->relfilenode == s->relfilenode && s->def->after != NIL &&
		cp_stream_run_same_key(s))
	{
		s->generation = s->def->generation;
		s->rows = s->def->rows_sent;
		s->after = s->def->after;
		/* a refresh_start of the open generation changes nothing */
		emit_control(run, idx, "refresh_start", "reading");
		ereport(LOG,
				(errmsg("the read of \"%s\".\"%s\" resumes after " INT64_FORMAT " rows",
						s->nspname, s->relname, s->rows)));
	}
	else
		begin_read(run, idx);

	r.run = run;
	r.idx = idx;
	{
		MemoryContext oldcontext = MemoryContextSwitchTo(run->mcxt);

		initStringInfo(&r.state);
		MemoryContextSwitchTo(oldcontext);
	}
	while (!exhausted)
	{
		int			room = run->sync->batch_rows - run->batch->nrecords;
		CpReadChunk c = {0};
		CpReadResult result;

		CHECK_FOR_INTERRUPTS();

		c.max_rows = Min(run->sync->chunk_rows, Max(room, 1));
		c.out = &run->batch->lines;
		c.line_room = 3;		/* "}}\n" */
		c.restart_if_rewritten = true;
		c.cxt = run->chunkcxt;
		c.row = add_record;
		c.arg = &r;
		result = cp_read_chunk(run, s, &c);
		MemoryContextReset(run->chunkcxt);

		if (s->too_large != NULL)
			cp_stream_run_stop_too_large(run, s);
		switch (result)
		{
			case CP_READ_OK:
			case CP_READ_SKIPPED:
				break;
			case CP_READ_RESHAPED:
				ereport(LOG,
						(errmsg("the columns of \"%s\".\"%s\" changed during its read; reading it again",
								s->nspname, s->relname)));
				cp_method_prepare_stream(run, idx, "full_refresh", NULL);	/* a new STREAM message */
				begin_read(run, idx);
				continue;
			case CP_READ_REWRITTEN:
				ereport(LOG,
						(errmsg("\"%s\".\"%s\" was rewritten during its read; reading it again",
								s->nspname, s->relname)));
				begin_read(run, idx);
				continue;
		}
		exhausted = c.exhausted;
		if (cp_delivery_batch_full(run))
			cp_delivery_flush(run, false);
	}
	pfree(r.state.data);

	cp_read_close(s);
	emit_control(run, idx, "refresh_end", "done");
	s->def->phase = "done";
}

CpExitKind
cp_full_refresh_run(CpRun *run)
{
	return cp_schedule_runs(run, read_stream);
}
