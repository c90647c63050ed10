/*-------------------------------------------------------------------------
 *
 * cursor.c
 *	  The cursor method: the first run of a stream reads it whole; every
 *	  later run sends what changed since the previous run, by the column
 *	  the DBA named (the cursor, e.g. updated_at) where the server cannot
 *	  know more.
 *
 * Two reads, chosen per stream at each run:
 *
 *	- a relation stored by heap (a table, the leaves of a partitioned
 *	  table, a materialized view) is read as the xmin method reads it
 *	  (xmin.c): every row whose current version was written by a
 *	  transaction the previous run's snapshot did not see.  That includes
 *	  every row whose cursor moved past the previous run's largest value
 *	  (it was written since) and also what a cursor comparison loses: a
 *	  transaction that set updated_at = now() at its start and committed
 *	  after the previous run read past that value, rows updated without
 *	  moving the cursor.  The cursor column is then the destination's
 *	  cursor_field, and its largest value sent is shown;
 *
 *	- a view or a foreign table (or a partitioned table with such a
 *	  partition), whose rows no transaction of this server wrote, is read
 *	  in cursor order through a held cursor: the first run every row (NULL
 *	  cursors first), later ones the rows whose cursor is at least the
 *	  previous run's largest value (less the sync's lookback if it has
 *	  one): the rows that have that value are sent again, as a row added
 *	  later with the same value could not be told from them.
 *	  The query runs once per run, into a tuplestore (no snapshot is held
 *	  while the rows are sent); its chunks move the stream's position, the
 *	  largest value sent, only once delivered.  A crash resumes at that
 *	  value, inclusive: ties at it are sent again, none is lost.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/table.h"
#include "catalog/partition.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "parser/parse_coerce.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "cursor_column.h"
#include "method.h"
#include "protocol.h"
#include "reader.h"
#include "xact.h"

/*
 * The cursor column of each stream, in the run's memory: one sync per
 * worker process, described at each run's preparation of the stream.
 */
static CpCursorColumn *columns;

/* A stream's read by its cursor column in this run. */
typedef struct ColumnRead
{
	CpRun	   *run;
	int			idx;
	CpCursorColumn *cur;
	bool		full;
	char	   *since;			/* the previous run's largest value, or NULL */
	char	   *full_reason;
	bool		moved;			/* this read sent a value (cur's largest) */
} ColumnRead;

/*
 * Whether relid's rows are all stored by heap, so that the transactions
 * that wrote them can be told: a table or materialized view of the heap
 * access method, or a partitioned table whose leaves all are.
 */
static bool
stored_by_heap(Oid relid)
{
	MemoryContext caller = cp_xact_start();
	char		relkind = get_rel_relkind(relid);
	List	   *rels;
	ListCell   *lc;
	bool		heap = true;

	if (relkind == RELKIND_PARTITIONED_TABLE)
		rels = find_all_inheritors(relid, AccessShareLock, NULL);
	else
		rels = list_make1_oid(relid);
	foreach(lc, rels)
	{
		Relation	rel = try_relation_open(lfirst_oid(lc), AccessShareLock);

		if (rel == NULL)
			continue;			/* a partition dropped meanwhile */
		if (rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE &&
			((rel->rd_rel->relkind != RELKIND_RELATION &&
			  rel->rd_rel->relkind != RELKIND_MATVIEW) ||
			 rel->rd_rel->relam != HEAP_TABLE_AM_OID))
			heap = false;
		relation_close(rel, AccessShareLock);
	}
	cp_xact_commit(caller);
	return heap;
}

/* An item that moves the stream's state to phase once delivered. */
static void
add_state(ColumnRead *x, const char *phase)
{
	CpStreamRun *s = &x->run->streams[x->idx];
	bool		done = strcmp(phase, "done") == 0;
	CpCursorState st;
	char	   *largest = cp_cursor_column_max_text(x->cur);
	StringInfoData state;

	st.phase = phase;
	st.full = x->full;
	/* once done, the next run reads from this one's largest value */
	st.since = done && largest != NULL ? largest : x->since;
	/* what the stream's reads sent: this one's, or else the ones before */
	st.cursor = largest != NULL ? largest : s->def->cursor;
	st.full_reason = x->full_reason;
	initStringInfo(&state);
	cp_protocol_cursor_state(&state, s, &st);
	cp_method_add_state(x->run, x->idx, &state);
	if (largest != NULL)
		pfree(largest);
}

/* A row of a chunk: close it as a RECORD; note its cursor. */
static void
add_record(void *arg, int start, const Datum *values, const bool *isnull)
{
	ColumnRead *x = arg;

	cp_method_record_done(x->run, x->idx, start);
	if (!isnull[x->cur->column])
	{
		cp_cursor_column_see(x->cur, x->run->streams[x->idx].enc_desc, values, isnull);
		x->moved = true;
	}
}

/*
 * The bound an incremental read starts at: $1, or with a lookback $1
 * less it (an interval for dates and times, an amount of the column's
 * type for numbers: what create_sync accepted), in the type compared.
 */
static char *
lower_bound(ColumnRead *x)
{
	const char *lookback = x->run->sync->lookback;
	char	   *type = format_type_be_qualified(x->cur->compared);
	bool		is_time = TypeCategory(x->cur->compared) == TYPCATEGORY_DATETIME;

	if (lookback == NULL)
		return x->cur->param;
	return psprintf("(%s OPERATOR(pg_catalog.-) %s::%s)::%s", x->cur->param,
					quote_literal_cstr(lookback), is_time ? "pg_catalog.interval" : type,
					type);
}

/* The run's query: from resume (inclusive), or as the read's kind says. */
static char *
read_query(ColumnRead *x, const char *resume)
{
	CpStreamRun *s = &x->run->streams[x->idx];
	CpCursorColumn *cur = x->cur;
	StringInfoData q;

	initStringInfo(&q);
	appendStringInfoString(&q, s->select_query);
	if (resume != NULL)
	{
		appendStringInfo(&q, " WHERE %s", cur->expr);
		cp_reader_append_operator(&q, cur->ge);
		appendStringInfoString(&q, cur->param);
	}
	else if (!x->full && x->since != NULL)
	{
		/* from the previous largest value on: a row added with it later */
		appendStringInfo(&q, " WHERE %s", cur->expr);
		cp_reader_append_operator(&q, cur->ge);
		appendStringInfoString(&q, lower_bound(x));
	}
	else if (!x->full)
		/* no value was ever sent: every row that has one now */
		appendStringInfo(&q, " WHERE %s IS NOT NULL", cur->expr);
	appendStringInfo(&q, " ORDER BY %s USING", cur->expr);
	cp_reader_append_operator(&q, cur->lt);
	appendStringInfoString(&q, "NULLS FIRST");
	return q.data;
}

/* The parameter of the query: the value of text, in the current memory. */
static Datum
value_of(ColumnRead *x, const char *text)
{
	CpCursorColumn probe = *x->cur;

	/* parsed as the largest value is (under the encoder's settings) */
	probe.has_max = false;
	probe.cxt = CurrentMemoryContext;
	cp_cursor_column_set_max(&probe, text);
	return probe.max;
}

/* Where the read starts: a read cut short resumed, or this run's. */
static const char *
begin_read(ColumnRead *x)
{
	CpStreamRun *s = &x->run->streams[x->idx];
	CpStreamDef *def = s->def;
	const char *resume = NULL;

	if (strcmp(def->phase, "reading") == 0 && def->read != NULL && def->marks == NULL)
	{
		/* on from the largest value it had sent, or from its start */
		x->full = strcmp(def->read, "full") == 0;
		x->since = def->since != NULL ? pstrdup(def->since) : NULL;
		x->full_reason = def->full_reason != NULL ? pstrdup(def->full_reason) : NULL;
		s->generation = def->generation;
		s->rows = def->rows_sent;
		if (list_length(def->after) == 1)
			resume = pstrdup(linitial(def->after));
		/* the largest value this read sent, from which it resumes */
		cp_cursor_column_set_max(x->cur, resume);
		x->moved = resume != NULL;
		ereport(LOG,
				(errmsg("resuming the %s read of \"%s\".\"%s\" %s%s after " INT64_FORMAT " rows",
						x->full ? "full" : "incremental", s->nspname, s->relname,
						resume != NULL ? "at " : "from its start",
						resume != NULL ? resume : "", s->rows)));
		return resume;
	}

	/* a previous run's position is a value, unless it read the pages */
	x->full = def->read == NULL || def->marks != NULL;
	if (def->read != NULL && def->marks != NULL)
	{
		x->full_reason = pstrdup("the previous run read the relation by its pages (it was stored by heap then): its position is not a cursor value");
		ereport(LOG,
				(errmsg("reading \"%s\".\"%s\" whole: %s",
						s->nspname, s->relname, x->full_reason)));
	}
	s->rows = 0;
	if (x->full)
	{
		s->generation = def->generation + 1;
		def->generation = s->generation;
		cp_cursor_column_set_max(x->cur, NULL);
	}
	else
	{
		s->generation = def->generation;
		x->since = def->since != NULL ? pstrdup(def->since) : NULL;
		/*
		 * The largest value this read sends: a lookback reads below the
		 * previous one first, and a crash must resume there, not past it.
		 */
		cp_cursor_column_set_max(x->cur, NULL);
	}
	return NULL;
}

static void
read_by_column(CpRun *run, int idx, CpCursorColumn *cur)
{
	CpStreamRun *s = &run->streams[idx];
	CpStreamDef *def = s->def;
	ColumnRead	x = {0};
	const char *resume;
	char	   *query;
	char	   *largest;
	Datum		arg = (Datum) 0;
	bool		has_arg;
	MemoryContext cxt;
	MemoryContext oldcontext;

	x.run = run;
	x.idx = idx;
	x.cur = cur;
	cp_method_prepare_stream(run, idx, "cursor", cur);
	/* in cursor order, through a held cursor, whatever keys it has */
	s->keyset = false;
	s->by_blocks = false;
	list_free_deep(s->after);
	s->after = NIL;

	/* what the read needs, gone with it */
	cxt = AllocSetContextCreate(run->mcxt, "calabi_push cursor read",
								ALLOCSET_SMALL_SIZES);
	oldcontext = MemoryContextSwitchTo(cxt);
	resume = begin_read(&x);
	(void) cp_xact_start();		/* the operators' names are in the catalog */
	MemoryContextSwitchTo(cxt);
	query = read_query(&x, resume);
	cp_xact_commit(cxt);
	has_arg = resume != NULL || (!x.full && x.since != NULL);
	if (has_arg)
		arg = value_of(&x, resume != NULL ? resume : x.since);

	for (;;)
	{
		int			room = run->sync->batch_rows - run->batch->nrecords;
		CpReadChunk c = {0};

		CHECK_FOR_INTERRUPTS();
		c.max_rows = Min(run->sync->chunk_rows, Max(room, 1));
		c.out = &run->batch->lines;
		c.line_room = 3;		/* "}}\n" */
		c.cxt = run->chunkcxt;
		c.row = add_record;
		c.arg = &x;
		c.cursor_query = query;
		c.cursor_nargs = has_arg ? 1 : 0;
		c.cursor_argtypes = &cur->base;
		c.cursor_args = &arg;
		(void) cp_read_chunk(run, s, &c);
		MemoryContextSwitchTo(cxt);
		if (s->too_large != NULL)
		{
			cp_read_close(s);
			cp_stream_run_stop_too_large(run, s);
		}
		MemoryContextReset(run->chunkcxt);
		if (c.exhausted)
			break;
		/* resumable from the largest value sent (NULLs first: none yet) */
		if (x.moved)
		{
			largest = cp_cursor_column_max_text(cur);
			MemoryContextSwitchTo(run->mcxt);
			list_free_deep(s->after);
			s->after = list_make1(pstrdup(largest));
			MemoryContextSwitchTo(cxt);
			pfree(largest);
		}
		add_state(&x, "reading");
		if (cp_delivery_batch_full(run))
			cp_delivery_flush(run, false);
	}
	cp_read_close(s);

	add_state(&x, "done");
	largest = cp_cursor_column_max_text(cur);
	def->phase = "done";
	cp_stream_def_set(def, &def->read, x.full ? "full" : "incremental");
	cp_stream_def_set(def, &def->since, largest != NULL ? largest : x.since);
	if (largest != NULL || x.full)
		cp_stream_def_set(def, &def->cursor, largest);
	cp_stream_def_set(def, &def->marks, NULL);
	cp_stream_def_set(def, &def->full_reason, NULL);
	def->generation = s->generation;
	list_free_deep(s->after);
	s->after = NIL;
	MemoryContextSwitchTo(oldcontext);
	MemoryContextDelete(cxt);
}

/* Read one stream for this run, flushing as batches fill. */
static void
read_stream(CpRun *run, int idx)
{
	if (columns == NULL)
		columns = MemoryContextAllocZero(run->mcxt, sizeof(CpCursorColumn) * run->nstreams);
	if (stored_by_heap(run->streams[idx].def->relid))
		cp_xmin_read_stream(run, idx, "cursor", &columns[idx]);
	else
		read_by_column(run, idx, &columns[idx]);
}

CpExitKind
cp_cursor_run(CpRun *run)
{
	return cp_schedule_runs(run, read_stream);
}
