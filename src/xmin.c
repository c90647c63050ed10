/*-------------------------------------------------------------------------
 *
 * xmin.c
 *	  The xmin method: the first run of a stream reads it whole; every later
 *	  run sends the rows whose current version was written by a transaction
 *	  that the previous run's snapshot did not see, looking only into the
 *	  pages changed since (changed.h), which the WAL names (changed_wal.h).
 *	  No slot, no wal_level = logical.
 *
 * A run, per stream:
 *
 *	- its start takes a mark and a snapshot (the run's own), in a short
 *	  transaction: what the next run compares with once this one is done;
 *	- the stream is read by ranges of blocks, each chunk in its own short
 *	  transaction (reader.h): a full read takes every visible row; an
 *	  incremental one asks changed.c for the TIDs of the rows new since the
 *	  previous run's snapshot ("since"), reading only the pages whose
 *	  blocks the WAL written since references (each chunk reads the WAL
 *	  on to where it is now) and skipping among them those whose LSN shows
 *	  no change, and reads those rows by TID as the sync's role; when the
 *	  WAL cannot tell (removed, larger than the relations: changed_wal.h)
 *	  the rest of the run reads every page's LSN instead, as it says in
 *	  the log and in pages_found_by;
 *	- a chunk's rows move the stream's state only once all of them are
 *	  delivered: the checkpoint is the next block, so a crash resumes the
 *	  run at the first chunk not acknowledged (its rows may be sent again).
 *
 * Why this loses nothing: a row version visible to a chunk was either
 * written by a transaction visible to "since" -- then its version was
 * current when the previous run began, and that run sent it or a later
 * version -- or it is new, and this run sends it.  A row updated during a
 * run (and moved to a block already read) has a version that this run's
 * own snapshot does not see: the next run sends it.
 *
 * A full read is forced when there is no position (the first run, a
 * resync), when the position cannot be judged (more than 2^31 transactions
 * old: full_reason says why), and restarted when the relation is rewritten
 * during it (its blocks move).  A rewrite between runs or during an
 * incremental one (VACUUM FULL, CLUSTER keep each row's xmin) only makes
 * the run examine every page of that relation.
 *
 * A partitioned table is read partition by partition (leaves in OID
 * order), each by its blocks but through the partitioned table, whose
 * privileges and policies apply, restricted to the partition by its
 * constraint.  A partition the previous run did not read (attached or
 * created since) is read whole.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "catalog/partition.h"
#include "catalog/pg_am.h"
#include "commands/defrem.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "miscadmin.h"
#include "partitioning/partdesc.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/partcache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"

#include "changed.h"
#include "changed_wal.h"
#include "cursor_column.h"
#include "method.h"
#include "protocol.h"
#include "reader.h"
#include "xact.h"

/* A relation whose blocks a stream's read goes through. */
typedef struct XminUnit
{
	Oid			relid;			/* the stream's relation, or a leaf partition */
	Oid			relfilenode;
	CpRelFile	file;			/* as WAL records name it */
	BlockNumber nblocks;		/* when the run listed it */
	CpChangedBlocks *blocks;	/* those the WAL references; or NULL */
	bool		logged;			/* its pages carry WAL positions */
	char	   *query;			/* a partition's rows, through the stream's
								 * relation; NULL: the stream's own query */
	bool		whole;			/* every row: a full read, or new since */
	XLogRecPtr	floor;			/* pages at or below it skipped; or none */
} XminUnit;

/* A stream's read in this run. */
typedef struct XminRead
{
	CpRun	   *run;
	int			idx;
	const char *method;			/* xmin, or cursor */
	CpCursorColumn *cursor;		/* cursor: its column; or NULL */
	MemoryContext cxt;			/* everything below; gone with the read */
	bool		full;
	CpChangedSnapshot since;	/* incremental: what the read compares with */
	char	   *since_text;
	char	   *snapshot_text;	/* the run's own snapshot */
	char	   *marks_text;		/* with the run's own mark */
	XLogRecPtr	floor;			/* from the marks: see changed.h */
	char	   *prev_parts;		/* what the previous run read, "relid:relfilenode,..." */
	XminUnit   *units;
	int			nunits;
	int			unit;			/* the one being read */
	CpChangedCounts counts;
	char	   *full_reason;	/* why a full read was forced, or NULL */
	/* the WAL read for the units' blocks (changed_wal.h) */
	XLogRecPtr	wal_from;		/* where the next chunk's read begins */
	uint64		wal_bytes;		/* read by the run so far */
	bool		wal_fallback;	/* it could not tell: page LSNs from then on */
} XminRead;

/* "relid:relfilenode,..." of the units */
static char *
parts_text(XminRead *x)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < x->nunits; i++)
		appendStringInfo(&buf, "%s%u:%u", i > 0 ? "," : "",
						 x->units[i].relid, x->units[i].relfilenode);
	return buf.data;
}

/* The relfilenode parts gives relid, or InvalidOid. */
static Oid
part_relfilenode(const char *parts, Oid relid)
{
	const char *p = parts;

	while (p != NULL && *p != '\0')
	{
		unsigned int r,
					f;

		if (sscanf(p, "%u:%u", &r, &f) != 2)
			break;
		if (r == relid)
			return f;
		p = strchr(p, ',');
		if (p != NULL)
			p++;
	}
	return InvalidOid;
}

/*
 * How the run finds the pages it looks into: "every_page" when no relation
 * has a floor (a full read, an unlogged or rewritten relation, one new to
 * the stream), else "wal", or "page_lsn" once the WAL could not tell.
 */
static const char *
pages_found_by(XminRead *x)
{
	for (int i = 0; i < x->nunits; i++)
		if (!x->units[i].whole && !XLogRecPtrIsInvalid(x->units[i].floor))
			return x->wal_fallback ? "page_lsn" : "wal";
	return "every_page";
}

/* An item that moves the stream's state to phase once delivered. */
static void
add_state(XminRead *x, const char *phase)
{
	CpStreamRun *s = &x->run->streams[x->idx];
	bool		done = strcmp(phase, "done") == 0;
	CpXminState st;
	StringInfoData state;

	st.method = x->method;
	st.phase = phase;
	st.full = x->full;
	/* once done, the next run compares with this run's snapshot */
	st.since = done ? x->snapshot_text : (x->full ? NULL : x->since_text);
	st.snapshot = x->snapshot_text;
	st.floor = x->floor;
	st.marks = x->marks_text;
	st.parts = done ? parts_text(x) : (x->prev_parts != NULL ? x->prev_parts : "");
	st.part = x->unit < x->nunits ? x->units[x->unit].relid : InvalidOid;
	st.pages_examined = x->counts.pages_examined;
	st.pages_skipped = x->counts.pages_skipped;
	st.pages_found_by = pages_found_by(x);
	st.wal_bytes_read = (int64) x->wal_bytes;
	st.full_reason = x->full_reason;
	st.cursor = x->cursor != NULL ? cp_cursor_column_max_text(x->cursor) : NULL;
	initStringInfo(&state);
	cp_protocol_xmin_state(&state, s, &st);
	cp_method_add_state(x->run, x->idx, &state);
	if (st.cursor != NULL)
		pfree(unconstify(char *, st.cursor));
}

/* A row of a chunk: close it as a RECORD; the chunk's end moves the state. */
static void
add_record(void *arg, int start, const Datum *values, const bool *isnull)
{
	XminRead   *x = arg;

	cp_method_record_done(x->run, x->idx, start);
	if (x->cursor != NULL)
		cp_cursor_column_see(x->cursor, x->run->streams[x->idx].enc_desc, values, isnull);
}

/*
 * Add to the sets of the relations read by their floor the blocks the WAL
 * references up to now (in the chunk's transaction, under its snapshot);
 * false when the WAL cannot tell, and from then on for the whole run.
 * The sets live as long as the read: one bit per block of each relation.
 */
static bool
find_changed_blocks(XminRead *x)
{
	CpStreamRun *s = &x->run->streams[x->idx];
	CpWalRelation *rels;
	int			n = 0;
	uint64		relation_bytes = 0;
	XLogRecPtr	from = x->wal_from;
	char	   *why = NULL;
	MemoryContext oldcontext;

	if (x->wal_fallback)
		return false;
	oldcontext = MemoryContextSwitchTo(x->cxt);
	rels = palloc(sizeof(CpWalRelation) * Max(x->nunits, 1));
	for (int i = 0; i < x->nunits; i++)
	{
		XminUnit   *u = &x->units[i];

		if (u->whole || XLogRecPtrIsInvalid(u->floor))
			continue;
		if (u->blocks == NULL)
			u->blocks = cp_changed_blocks_create(u->nblocks);
		rels[n].file = u->file;
		rels[n].blocks = u->blocks;
		relation_bytes += (uint64) u->nblocks * BLCKSZ;
		n++;
	}
	MemoryContextSwitchTo(oldcontext);
	if (!cp_changed_wal_read(rels, n, &x->wal_from, &x->wal_bytes, relation_bytes, &why))
	{
		x->wal_fallback = true;
		ereport(LOG,
				(errmsg("finding the pages of \"%s\".\"%s\" changed since %X/%X by their LSN, not from the WAL: %s",
						s->nspname, s->relname, LSN_FORMAT_ARGS(from), why)));
	}
	pfree(rels);
	return !x->wal_fallback;
}

/* Which tuples of the blocks from first on an incremental chunk reads. */
static BlockNumber
choose_tids(void *arg, Relation rel, Snapshot snapshot, BlockNumber first,
			int max, ItemPointerData *tids, int *ntids, bool *last)
{
	XminRead   *x = arg;
	XminUnit   *u = &x->units[x->unit];
	const CpChangedBlocks *blocks = NULL;

	if (!XLogRecPtrIsInvalid(u->floor) && find_changed_blocks(x))
		blocks = u->blocks;
	return cp_changed_scan(rel, snapshot, &x->since, u->floor, blocks,
						   first, max, tids, ntids, last, &x->counts);
}

static int
compare_oids(const void *a, const void *b)
{
	Oid			x = *(const Oid *) a;
	Oid			y = *(const Oid *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/* A unit for relation rel (locked), read through the stream's query when a partition. */
static void
describe_unit(XminRead *x, XminUnit *u, Relation rel, const char *stream_query)
{
	CpStreamRun *s = &x->run->streams[x->idx];

	/* changed.c reads heap pages: another access method's are not */
	if (rel->rd_rel->relam != HEAP_TABLE_AM_OID)
	{
		cp_worker_stop_on_error();
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\".\"%s\" can no longer be read by the %s method: %s is stored by the access method %s",
						s->nspname, s->relname, x->method, RelationGetRelationName(rel),
						get_am_name(rel->rd_rel->relam)),
				 errdetail("xmin is a column of the rows of the heap access method only."),
				 errhint("Run ALTER TABLE %s SET ACCESS METHOD heap; or sync it with method => 'full_refresh'; then SELECT calabi_push.start_sync('%s');",
						 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
													RelationGetRelationName(rel)),
						 x->run->sync->name)));
	}
	u->relid = RelationGetRelid(rel);
	u->relfilenode = rel->rd_rel->relfilenode;
	u->file = cp_rel_file(rel);
	u->nblocks = RelationGetNumberOfBlocks(rel);
	u->blocks = NULL;
	u->logged = RelationNeedsWAL(rel);
	u->query = NULL;
	if (rel->rd_rel->relispartition)
	{
		Expr	   *qual = get_partition_qual_relid(u->relid);

		/* its constraint lets the planner read this partition only */
		u->query = psprintf("%s WHERE tableoid = %u", stream_query, u->relid);
		if (qual != NULL)
			u->query = psprintf("%s AND (%s)", u->query,
								deparse_expression((Node *) qual,
												   deparse_context_for(RelationGetRelationName(rel),
																	   u->relid),
												   false, false));
	}
}

/*
 * The relations the stream is read through now, in a transaction: the
 * stream's relation, or its leaf partitions in OID order; and how this run
 * reads each.
 */
static void
list_units(XminRead *x)
{
	CpStreamRun *s = &x->run->streams[x->idx];
	MemoryContext caller = cp_xact_start();
	Relation	rel;

	MemoryContextSwitchTo(x->cxt);
	rel = relation_open(s->def->relid, AccessShareLock);
	if (rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
	{
		x->nunits = 1;
		x->units = palloc0(sizeof(XminUnit));
		describe_unit(x, &x->units[0], rel, s->select_query);
	}
	else
	{
		List	   *all = find_all_inheritors(s->def->relid, AccessShareLock, NULL);
		Oid		   *leaves = palloc(sizeof(Oid) * list_length(all));
		int			n = 0;
		ListCell   *lc;

		foreach(lc, all)
		{
			Oid			relid = lfirst_oid(lc);
			char		relkind = get_rel_relkind(relid);

			if (relkind == RELKIND_PARTITIONED_TABLE)
				continue;
			if (relkind != RELKIND_RELATION)
			{
				cp_worker_stop_on_error();
				ereport(ERROR,
						(errcode(ERRCODE_WRONG_OBJECT_TYPE),
						 errmsg("partition %s of \"%s\".\"%s\" has no xmin (it is not a table): its rows cannot be read by the xmin method",
								get_rel_name(relid), s->nspname, s->relname),
						 errhint("Detach it (ALTER TABLE %s DETACH PARTITION ...), or sync the table with method => 'full_refresh', then SELECT calabi_push.start_sync('%s').",
								 quote_qualified_identifier(s->nspname, s->relname),
								 x->run->sync->name)));
			}
			leaves[n++] = relid;
		}
		qsort(leaves, n, sizeof(Oid), compare_oids);
		x->nunits = n;
		x->units = palloc0(sizeof(XminUnit) * Max(n, 1));
		for (int i = 0; i < n; i++)
		{
			Relation	part = relation_open(leaves[i], AccessShareLock);

			describe_unit(x, &x->units[i], part, s->select_query);
			relation_close(part, AccessShareLock);
		}
	}
	relation_close(rel, AccessShareLock);
	cp_xact_commit(caller);

	for (int i = 0; i < x->nunits; i++)
	{
		XminUnit   *u = &x->units[i];
		Oid			before = part_relfilenode(x->prev_parts, u->relid);

		/* one the previous run did not read is new to the stream: whole */
		u->whole = x->full || before == InvalidOid;
		/* pages written without WAL, or since moved by a rewrite: all */
		u->floor = !u->whole && u->logged && before == u->relfilenode ?
			x->floor : InvalidXLogRecPtr;
	}
}

/* The run's start: its mark and snapshot, and what kind of read it is. */
static void
begin_run(XminRead *x)
{
	CpStreamRun *s = &x->run->streams[x->idx];
	CpStreamDef *def = s->def;
	CpChangedSnapshot snap;
	CpChangedMark mark;
	MemoryContext caller;
	List	   *marks = NIL;

	caller = cp_xact_start();
	MemoryContextSwitchTo(x->cxt);
	cp_changed_take(&snap, &mark);
	cp_xact_commit(caller);

	caller = MemoryContextSwitchTo(x->cxt);
	x->full = true;
	x->full_reason = NULL;
	if (def->since != NULL && def->marks == NULL)
		x->full_reason = pstrdup("the previous run read the relation by its cursor column (it was not all stored by heap then): its position is not a snapshot");
	else if (def->since != NULL)
	{
		if (!cp_changed_snapshot_parse(def->since, &x->since))
			x->full_reason = psprintf("the position \"%s\" of the previous run cannot be read",
									  def->since);
		else if (cp_changed_too_old(&x->since))
			x->full_reason = psprintf("the position of the previous run (transaction " UINT64_FORMAT ") is more than 2^31 transactions old: rows written since cannot be told from older ones",
									  U64FromFullTransactionId(x->since.xmin));
		else
			x->full = false;
	}
	x->counts.pages_examined = x->counts.pages_skipped = 0;
	x->snapshot_text = cp_changed_snapshot_text(&snap);
	x->floor = InvalidXLogRecPtr;
	x->since_text = NULL;
	x->prev_parts = NULL;
	if (x->full)
	{
		marks = cp_changed_marks_add(NIL, NULL, &mark);
		s->generation = def->generation + 1;
		def->generation = s->generation;
	}
	else
	{
		marks = cp_changed_marks_parse(def->marks);
		x->since_text = pstrdup(def->since);
		x->prev_parts = def->parts != NULL ? pstrdup(def->parts) : NULL;
		x->floor = cp_changed_page_floor(marks, &x->since);
		marks = cp_changed_marks_add(marks, &x->since, &mark);
		s->generation = def->generation;
	}
	x->marks_text = cp_changed_marks_text(marks);
	/* the WAL is read from the floor, once a chunk needs it */
	x->wal_from = x->floor;
	x->wal_bytes = 0;
	x->wal_fallback = false;
	MemoryContextSwitchTo(caller);
	/* a new generation starts the largest value sent over */
	if (x->cursor != NULL)
		cp_cursor_column_set_max(x->cursor, x->full ? NULL : def->cursor);

	list_units(x);
	x->unit = 0;
	cp_stream_run_rewind(s);	/* from block 0, no row sent yet */
	if (x->full_reason != NULL)
		ereport(LOG,
				(errmsg("reading \"%s\".\"%s\" whole: %s",
						s->nspname, s->relname, x->full_reason)));
}

/* Resume the run the acknowledged checkpoint is in; false if it cannot. */
static bool
resume_run(XminRead *x)
{
	CpStreamRun *s = &x->run->streams[x->idx];
	CpStreamDef *def = s->def;
	MemoryContext oldcontext;
	XminUnit   *u;

	if (strcmp(def->phase, "reading") != 0 || def->read == NULL ||
		def->snapshot == NULL || def->marks == NULL || list_length(def->after) != 1)
		return false;
	oldcontext = MemoryContextSwitchTo(x->cxt);
	x->full = strcmp(def->read, "full") == 0;
	if (!x->full &&
		(def->since == NULL || !cp_changed_snapshot_parse(def->since, &x->since)))
	{
		MemoryContextSwitchTo(oldcontext);
		return false;
	}
	x->since_text = def->since != NULL ? pstrdup(def->since) : NULL;
	x->snapshot_text = pstrdup(def->snapshot);
	x->marks_text = pstrdup(def->marks);
	x->prev_parts = def->parts != NULL ? pstrdup(def->parts) : NULL;
	x->floor = def->floor;
	x->counts.pages_examined = def->pages_examined;
	x->counts.pages_skipped = def->pages_skipped;
	x->full_reason = def->full_reason != NULL ? pstrdup(def->full_reason) : NULL;
	/* the sets were lost with the worker: read the WAL from the floor again */
	x->wal_from = x->floor;
	x->wal_bytes = (uint64) def->wal_bytes_read;
	x->wal_fallback = def->pages_found_by != NULL &&
		strcmp(def->pages_found_by, "page_lsn") == 0;
	MemoryContextSwitchTo(oldcontext);
	if (x->cursor != NULL)
		cp_cursor_column_set_max(x->cursor, def->cursor);

	list_units(x);
	s->generation = def->generation;
	s->rows = def->rows_sent;

	/* the relation it was in, or (dropped since) the next in OID order */
	for (x->unit = 0; x->unit < x->nunits; x->unit++)
		if (x->units[x->unit].relid >= def->part)
			break;
	if (x->unit < x->nunits && x->units[x->unit].relid == def->part)
	{
		u = &x->units[x->unit];
		if (u->relfilenode == def->relfilenode)
		{
			oldcontext = MemoryContextSwitchTo(x->run->mcxt);
			s->after = list_make1(pstrdup(linitial(def->after)));
			MemoryContextSwitchTo(oldcontext);
		}
		else
			u->floor = InvalidXLogRecPtr;	/* rewritten meanwhile: all pages */
	}
	ereport(LOG,
			(errmsg("resuming the %s read of \"%s\".\"%s\" at block %s after " INT64_FORMAT " rows",
					x->full ? "full" : "incremental", s->nspname, s->relname,
					s->after != NIL ? (char *) linitial(s->after) : "0", s->rows)));
	return true;
}

/* The read is done: what the next run starts from, also in memory. */
static void
end_run(XminRead *x)
{
	CpStreamRun *s = &x->run->streams[x->idx];
	CpStreamDef *def = s->def;
	MemoryContext oldcontext = MemoryContextSwitchTo(x->cxt);

	add_state(x, "done");
	def->phase = "done";
	cp_stream_def_set(def, &def->read, x->full ? "full" : "incremental");
	cp_stream_def_set(def, &def->since, x->snapshot_text);
	cp_stream_def_set(def, &def->snapshot, NULL);
	cp_stream_def_set(def, &def->marks, x->marks_text);
	cp_stream_def_set(def, &def->parts, parts_text(x));
	cp_stream_def_set(def, &def->full_reason, NULL);
	cp_stream_def_set(def, &def->cursor,
					  x->cursor != NULL ? cp_cursor_column_max_text(x->cursor) : NULL);
	def->generation = s->generation;
	MemoryContextSwitchTo(oldcontext);
}

/* The relfilenode of relid now (after a rewrite). */
static Oid
current_relfilenode(Oid relid)
{
	MemoryContext caller = cp_xact_start();
	Relation	rel = try_relation_open(relid, AccessShareLock);
	Oid			relfilenode = InvalidOid;

	if (rel != NULL)
	{
		relfilenode = rel->rd_rel->relfilenode;
		relation_close(rel, AccessShareLock);
	}
	cp_xact_commit(caller);
	return relfilenode;
}

void
cp_xmin_read_stream(CpRun *run, int idx, const char *method, CpCursorColumn *cursor)
{
	CpStreamRun *s = &run->streams[idx];
	XminRead	x = {0};
	int64		row_bytes = 0;	/* of the rows read so far, for the next chunk's size */
	int64		rows_read = 0;

	x.run = run;
	x.idx = idx;
	x.method = method;
	x.cursor = cursor;
	x.cxt = AllocSetContextCreate(run->mcxt, "calabi_push xmin read",
								  ALLOCSET_SMALL_SIZES);
	cp_method_prepare_stream(run, idx, method, cursor);
	s->by_blocks = true;
	if (!resume_run(&x))
		begin_run(&x);

	while (x.unit < x.nunits)
	{
		XminUnit   *u = &x.units[x.unit];
		int			room = run->sync->batch_rows - run->batch->nrecords;
		int			start = run->batch->lines.len;
		CpReadChunk c = {0};
		CpReadResult result;
		MemoryContext oldcontext;

		CHECK_FOR_INTERRUPTS();
		s->relfilenode = u->relfilenode;
		c.max_rows = Min(run->sync->chunk_rows, Max(room, 1));

		/*
		 * A chunk of blocks cannot stop mid-way at batch_bytes: size it by
		 * the rows read so far, so that it about fills what the batch has
		 * left (a batch over its limit is sent as it is).
		 */
		if (rows_read > 0)
		{
			int64		left = run->sync->batch_bytes - run->batch->lines.len;
			int64		fits = left / Max(row_bytes / rows_read, 1);

			c.max_rows = (int) Max(Min(c.max_rows, fits), 1);
		}
		c.out = &run->batch->lines;
		c.line_room = 3;		/* "}}\n" */
		c.restart_if_rewritten = true;
		c.cxt = run->chunkcxt;
		c.row = add_record;
		c.tids = u->whole ? NULL : choose_tids;
		c.arg = &x;
		c.block_relid = u->query != NULL ? u->relid : InvalidOid;
		c.block_query = u->query;
		result = cp_read_chunk(run, s, &c);

		if (s->too_large != NULL)
			cp_stream_run_stop_too_large(run, s);
		if (result == CP_READ_RESHAPED || result == CP_READ_REWRITTEN)
		{
			MemoryContextReset(run->chunkcxt);
			ereport(LOG,
					(errmsg("\"%s\".\"%s\" was %s during its %s read; reading %s again",
							s->nspname, s->relname,
							result == CP_READ_RESHAPED ? "altered" : "rewritten",
							x.full ? "full" : "incremental",
							result == CP_READ_RESHAPED || x.full ? "it" : "that relation")));
			if (result == CP_READ_RESHAPED)
			{
				/* a new STREAM message for the new shape */
				cp_method_prepare_stream(run, idx, method, cursor);
				s->by_blocks = true;
				/* describing the column again forgot its largest value */
				if (cursor != NULL)
					cp_cursor_column_set_max(cursor, x.full ? NULL : s->def->cursor);
			}
			if (x.full)
			{
				/* blocks moved or rows changed shape: a new full read */
				MemoryContextReset(x.cxt);
				memset(&x.since, 0, sizeof(x.since));
				begin_run(&x);
			}
			else if (result == CP_READ_RESHAPED)
			{
				/* the same comparison, every relation again */
				x.unit = 0;
				cp_stream_run_rewind(s);
			}
			else
			{
				/* the same comparison, every page of that relation */
				u->relfilenode = current_relfilenode(u->relid);
				u->floor = InvalidXLogRecPtr;
				cp_stream_run_rewind(s);
			}
			continue;
		}
		row_bytes += run->batch->lines.len - start;
		rows_read += c.rows;
		oldcontext = MemoryContextSwitchTo(run->mcxt);
		list_free_deep(s->after);
		/* a relation read to its end: the next one, from its first block */
		s->after = list_make1(pstrdup(c.exhausted ? "0" : (char *) linitial(c.after)));
		MemoryContextSwitchTo(oldcontext);
		MemoryContextReset(run->chunkcxt);
		if (c.exhausted)
			x.unit++;
		if (x.unit < x.nunits)
			add_state(&x, "reading");
		if (cp_delivery_batch_full(run))
			cp_delivery_flush(run, false);
	}
	end_run(&x);
	MemoryContextDelete(x.cxt);
}

static void
read_stream(CpRun *run, int idx)
{
	cp_xmin_read_stream(run, idx, "xmin", NULL);
}

CpExitKind
cp_xmin_run(CpRun *run)
{
	return cp_schedule_runs(run, read_stream);
}
