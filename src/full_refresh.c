/*-------------------------------------------------------------------------
 *
 * full_refresh.c
 *	  Full refresh: read a stream to its end in chunks, each in its own
 *	  short transaction, never holding one for the whole table.
 *
 * Two ways to read:
 *
 * - A table with a primary key (or a replica identity index) is read by
 *   keyset pagination: WHERE (key) > (last key sent) ORDER BY key LIMIT n.
 *   Every row is read at its version current at its chunk, exactly once;
 *   the checkpoint is the last key acknowledged, so a crash resumes right
 *   after it, in the same generation.  A table rewritten between chunks
 *   (VACUUM FULL, CLUSTER, TRUNCATE give it a new relfilenode) restarts its
 *   read under a new generation, announced with refresh_start.
 *
 * - Anything else (views, materialized views, foreign tables, keyless
 *   tables) is read through a cursor WITH HOLD: its query runs once, at the
 *   commit of the transaction that declared it, into a tuplestore (spilling
 *   to disk), and later chunks fetch from it in transactions of their own.
 *   One consistent snapshot, no transaction left open; but a cursor does not
 *   survive a restart, so an interrupted read starts again under a new
 *   generation.
 *
 * Reads run as the sync's role: its privileges and row-level security
 * apply.  Everything a chunk encodes is under pinned settings (encoder.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_index.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "oversize.h"
#include "protocol.h"
#include "stream.h"
#include "worker.h"
#include "xact.h"

/* rows fetched from a held cursor at a time, so a byte limit can stop us */
#define CURSOR_PIECE_ROWS 100

static Oid
current_relfilenode(Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			relfilenode;

	if (!HeapTupleIsValid(tuple))
		return InvalidOid;
	relfilenode = ((Form_pg_class) GETSTRUCT(tuple))->relfilenode;
	ReleaseSysCache(tuple);
	return relfilenode;
}

Relation
cp_stream_run_open(CpRun *run, CpStreamRun *s)
{
	if (get_rel_relkind(s->def->relid) == '\0')
	{
		/* no retry can bring it back: stop in error until the sync is fixed */
		cp_worker_stop_on_error();
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("a relation of sync \"%s\" no longer exists (OID %u)",
						run->sync->name, s->def->relid),
				 errhint("Drop the sync and create it again without that relation.")));
	}
	return cp_stream_open(s->def->relid, run->sync->run_as);
}

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
 * Keyset pagination is only correct when "after the last key" and the
 * order rows come in are the same order.  A bare "(key) > ($1)" and
 * "ORDER BY key" are not: ">" is looked up by name on the worker's
 * search_path (pg_catalog only), so a citext key compared as text while
 * its ORDER BY used citext's order, and rows were silently skipped; an
 * ltree key found no ">" at all.  Both are therefore built from the key
 * index itself: for each of its columns, the operators of the column's
 * btree operator family for the opclass's input type, named with their
 * schema, the index column's collation, and its direction (a DESC column
 * comes "after" by its less-than operator).  The planner can then read
 * the rows in that index's order.
 */
typedef struct KeyColumn
{
	char	   *expr;			/* the column, cast and collated as indexed */
	char	   *param;			/* $k, cast likewise */
	Oid			gt;				/* "comes after" operator */
	Oid			ge;				/* "comes after or is equal" */
	Oid			eq;
	Oid			lt;				/* "comes before": the ORDER BY operator */
	bool		desc;
	bool		nulls_first;
} KeyColumn;

static Oid
key_operator(Oid opfamily, Oid intype, int16 strategy, const char *column)
{
	Oid			opno = get_opfamily_member(opfamily, intype, intype, strategy);

	/* every btree family has all five for its opclasses' input types */
	if (!OidIsValid(opno))
		elog(ERROR, "operator family %u lacks strategy %d for type %u of key column \"%s\"",
			 opfamily, strategy, intype, column);
	return opno;
}

/* OPERATOR(schema.name): the very operator, whatever the search_path */
static void
append_operator(StringInfo buf, Oid opno)
{
	HeapTuple	tuple = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));
	Form_pg_operator op;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for operator %u", opno);
	op = (Form_pg_operator) GETSTRUCT(tuple);
	/* an operator's name is made of operator characters: never quoted */
	appendStringInfo(buf, " OPERATOR(%s.%s) ",
					 quote_identifier(get_namespace_name(op->oprnamespace)),
					 NameStr(op->oprname));
	ReleaseSysCache(tuple);
}

/*
 * Whether one "(a, b) OPERATOR(ns.>) ($1, $2)" means the same as the
 * lexicographic expansion: every column ascending, every "comes after"
 * operator of the same schema and name, taking exactly the types its
 * column and parameter have (a row comparison resolves one operator name
 * for every column, by their types).  The planner turns it into an index
 * bound on all the columns, where the expansion bounds the first only.
 */
static bool
row_comparison_fits(const KeyColumn *cols, const Oid *exprtypes, int n)
{
	Oid			nsp = InvalidOid;
	NameData	name;

	for (int k = 0; k < n; k++)
	{
		HeapTuple	tuple;
		Form_pg_operator op;
		bool		fits;

		if (cols[k].desc)
			return false;
		tuple = SearchSysCache1(OPEROID, ObjectIdGetDatum(cols[k].gt));
		if (!HeapTupleIsValid(tuple))
			elog(ERROR, "cache lookup failed for operator %u", cols[k].gt);
		op = (Form_pg_operator) GETSTRUCT(tuple);
		fits = op->oprleft == exprtypes[k] && op->oprright == exprtypes[k] &&
			(k == 0 || (op->oprnamespace == nsp &&
						strcmp(NameStr(op->oprname), NameStr(name)) == 0));
		if (k == 0)
		{
			nsp = op->oprnamespace;
			namestrcpy(&name, NameStr(op->oprname));
		}
		ReleaseSysCache(tuple);
		if (!fits)
			return false;
	}
	return true;
}

/*
 * The condition "after the last key" and the ORDER BY list of the keyset
 * query, from the key index indexoid (s->key_* describe its
 * columns), into s->key_after and s->key_order.
 */
static void
describe_key_order(CpStreamRun *s, Oid indexoid)
{
	Relation	index = index_open(indexoid, AccessShareLock);
	KeyColumn  *cols = palloc0(sizeof(KeyColumn) * s->nkeys);
	Oid		   *exprtypes = palloc(sizeof(Oid) * s->nkeys);
	StringInfoData buf;

	if (IndexRelationGetNumberOfKeyAttributes(index) != s->nkeys)
		elog(ERROR, "key index %u of \"%s\".\"%s\" changed while it was read",
			 indexoid, s->nspname, s->relname);

	for (int k = 0; k < s->nkeys; k++)
	{
		Oid			opfamily = index->rd_opfamily[k];
		Oid			intype = index->rd_opcintype[k];
		Oid			collation = index->rd_indcollation[k];
		int16		option = index->rd_indoption[k];
		KeyColumn  *c = &cols[k];
		StringInfoData expr;
		StringInfoData param;

		c->desc = (option & INDOPTION_DESC) != 0;
		c->nulls_first = (option & INDOPTION_NULLS_FIRST) != 0;
		c->gt = key_operator(opfamily, intype,
							 c->desc ? BTLessStrategyNumber : BTGreaterStrategyNumber,
							 s->key_names[k]);
		c->ge = key_operator(opfamily, intype,
							 c->desc ? BTLessEqualStrategyNumber : BTGreaterEqualStrategyNumber,
							 s->key_names[k]);
		c->eq = key_operator(opfamily, intype, BTEqualStrategyNumber, s->key_names[k]);
		c->lt = key_operator(opfamily, intype,
							 c->desc ? BTGreaterStrategyNumber : BTLessStrategyNumber,
							 s->key_names[k]);

		/*
		 * A column whose type is not the opclass's input type (varchar
		 * under text_ops, a domain) is cast to it, binary-coercibly as the
		 * index does, so the operator is found by its exact types; a
		 * polymorphic opclass (enums, arrays, ranges) takes the column's.
		 */
		initStringInfo(&expr);
		initStringInfo(&param);
		appendStringInfoChar(&expr, '(');
		appendStringInfoString(&expr, s->key_quoted[k]);
		appendStringInfo(&param, "($%d", k + 1);
		exprtypes[k] = s->key_types[k];
		if (intype != s->key_types[k] && get_typtype(intype) != TYPTYPE_PSEUDO)
		{
			char	   *type = format_type_be_qualified(intype);

			appendStringInfo(&expr, "::%s", type);
			appendStringInfo(&param, "::%s", type);
			exprtypes[k] = intype;
		}
		if (OidIsValid(collation))
		{
			HeapTuple	tuple = SearchSysCache1(COLLOID, ObjectIdGetDatum(collation));
			Form_pg_collation coll;

			if (!HeapTupleIsValid(tuple))
				elog(ERROR, "cache lookup failed for collation %u", collation);
			coll = (Form_pg_collation) GETSTRUCT(tuple);
			/* on the column: an explicit collation wins over the parameter's */
			appendStringInfo(&expr, " COLLATE %s",
							 quote_qualified_identifier(get_namespace_name(coll->collnamespace),
														NameStr(coll->collname)));
			ReleaseSysCache(tuple);
		}
		appendStringInfoChar(&expr, ')');
		appendStringInfoChar(&param, ')');
		c->expr = expr.data;
		c->param = param.data;
	}

	initStringInfo(&buf);
	if (s->nkeys > 1 && row_comparison_fits(cols, exprtypes, s->nkeys))
	{
		appendStringInfoChar(&buf, '(');
		for (int k = 0; k < s->nkeys; k++)
			appendStringInfo(&buf, "%s%s", k ? ", " : "", cols[k].expr);
		appendStringInfoChar(&buf, ')');
		append_operator(&buf, cols[0].gt);
		appendStringInfoChar(&buf, '(');
		for (int k = 0; k < s->nkeys; k++)
			appendStringInfo(&buf, "%s%s", k ? ", " : "", cols[k].param);
		appendStringInfoChar(&buf, ')');
	}
	else
	{
		/*
		 * a1 >= $1 AND (a1 > $1 OR (a1 = $1 AND (a2 > $2 OR (a2 = $2 AND
		 * a3 > $3)))): the leading conjunct is an index bound on the first
		 * column; the rest decides within it.
		 */
		if (s->nkeys > 1)
		{
			appendStringInfoString(&buf, cols[0].expr);
			append_operator(&buf, cols[0].ge);
			appendStringInfo(&buf, "%s AND ", cols[0].param);
		}
		for (int k = 0; k < s->nkeys; k++)
		{
			if (k < s->nkeys - 1)
				appendStringInfoChar(&buf, '(');
			appendStringInfoString(&buf, cols[k].expr);
			append_operator(&buf, cols[k].gt);
			appendStringInfoString(&buf, cols[k].param);
			if (k < s->nkeys - 1)
			{
				appendStringInfo(&buf, " OR (%s", cols[k].expr);
				append_operator(&buf, cols[k].eq);
				appendStringInfo(&buf, "%s AND ", cols[k].param);
			}
		}
		for (int k = 0; k < s->nkeys - 1; k++)
			appendStringInfoString(&buf, "))");
	}
	s->key_after = buf.data;

	initStringInfo(&buf);
	for (int k = 0; k < s->nkeys; k++)
	{
		appendStringInfo(&buf, "%s%s USING", k ? ", " : "", cols[k].expr);
		append_operator(&buf, cols[k].lt);
		appendStringInfoString(&buf, cols[k].nulls_first ? "NULLS FIRST" : "NULLS LAST");
	}
	s->key_order = buf.data;

	index_close(index, AccessShareLock);
}

void
cp_stream_run_describe(CpRun *run, int idx, Relation rel)
{
	CpStreamRun *s = &run->streams[idx];
	List	   *pk;
	MemoryContext oldcontext;

	if (s->mcxt == NULL)
		s->mcxt = AllocSetContextCreate(run->mcxt, "calabi_push stream",
										ALLOCSET_SMALL_SIZES);
	oldcontext = MemoryContextSwitchTo(s->mcxt);

	s->nspname = get_namespace_name(RelationGetNamespace(rel));
	s->relname = pstrdup(RelationGetRelationName(rel));
	s->select_query = cp_stream_select_query(rel);

	s->names_json = cp_protocol_state_names(s->nspname, s->relname);
	run->stream_names[idx] = s->names_json;
	s->control_names = cp_protocol_message_names(s->nspname, s->relname);
	s->record_prefix = cp_protocol_record_prefix(s->control_names);

	/* keyset needs a key and a relation that has rows of its own */
	pk = (rel->rd_rel->relkind == RELKIND_RELATION ||
		  rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE) ?
		cp_stream_primary_key(rel) : NIL;
	s->keyset = pk != NIL;
	s->nkeys = 0;
	if (s->keyset)
	{
		ListCell   *lc;
		TupleDesc	desc = RelationGetDescr(rel);

		s->nkeys = list_length(pk);
		s->key_names = palloc(sizeof(char *) * s->nkeys);
		s->key_quoted = palloc(sizeof(char *) * s->nkeys);
		s->key_types = palloc(sizeof(Oid) * s->nkeys);
		s->key_typmods = palloc(sizeof(int32) * s->nkeys);
		s->key_columns = palloc0(sizeof(int) * s->nkeys);
		s->key_out = palloc(sizeof(FmgrInfo) * s->nkeys);
		foreach(lc, pk)
		{
			int			k = foreach_current_index(lc);
			AttrNumber	attnum = get_attnum(RelationGetRelid(rel), lfirst(lc));
			Form_pg_attribute attr = TupleDescAttr(desc, attnum - 1);
			Oid			outfunc;
			bool		isvarlena;

			s->key_names[k] = pstrdup(lfirst(lc));
			s->key_quoted[k] = pstrdup(quote_identifier(lfirst(lc)));
			s->key_types[k] = attr->atttypid;
			s->key_typmods[k] = attr->atttypmod;
			getTypeOutputInfo(attr->atttypid, &outfunc, &isvarlena);
			fmgr_info_cxt(outfunc, &s->key_out[k], s->mcxt);
		}
		describe_key_order(s, cp_stream_key_index(rel));
		s->relfilenode = rel->rd_rel->relfilenode;
	}
	MemoryContextSwitchTo(oldcontext);
}

/* Describe the stream and decide how to read it (in a transaction). */
static void
prepare_stream(CpRun *run, int idx)
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
	s->cursor_name = NULL;
	s->too_large = NULL;
	batch = run->batch;			/* after the flush: it swaps the buffers */

	caller = cp_xact_start();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = cp_stream_run_open(run, s);
	cp_stream_run_describe(run, idx, rel);
	if (!s->keyset)
		s->cursor_name = MemoryContextStrdup(s->mcxt, psprintf("calabi_push_stream_%d", idx));

	oldcontext = MemoryContextSwitchTo(s->mcxt);
	/* the STREAM message, sent in every run before the stream's records */
	schema_enc = cp_row_encoder_create(RelationGetDescr(rel), run->chunkcxt);
	start = cp_batch_line_begin(batch);
	cp_protocol_append_stream(&batch->lines, rel, schema_enc, "full_refresh",
							  run->sync->mode, NULL);
	cp_batch_line_end(batch, start, idx, false);
	MemoryContextSwitchTo(oldcontext);

	relation_close(rel, NoLock);
	PopActiveSnapshot();
	cp_xact_commit(caller);
	MemoryContextReset(run->chunkcxt);
}

/*
 * What every RECORD of a chunk starts with, up to its data object: the
 * stream's prefix and the chunk's emitted_at, formatted once per chunk.
 */
static void
record_head(CpStreamRun *s, StringInfo head)
{
	initStringInfo(head);
	cp_protocol_record_head(head, s->record_prefix, GetCurrentTimestamp());
}

void
cp_stream_run_remember_key(CpRun *run, CpStreamRun *s, const Datum *values)
{
	MemoryContext oldcontext;
	char	   *texts[INDEX_MAX_KEYS];

	/*
	 * The output functions run in the caller's per-chunk context: whatever
	 * they allocate besides their result (a detoasted value, numeric's
	 * digits) goes with the chunk, and only the texts are kept for the run.
	 */
	Assert(s->nkeys <= INDEX_MAX_KEYS);
	for (int k = 0; k < s->nkeys; k++)
		texts[k] = OutputFunctionCall(&s->key_out[k], values[s->key_columns[k] - 1]);

	oldcontext = MemoryContextSwitchTo(run->mcxt);
	list_free_deep(s->after);
	s->after = NIL;
	for (int k = 0; k < s->nkeys; k++)
		s->after = lappend(s->after, pstrdup(texts[k]));
	MemoryContextSwitchTo(oldcontext);
	for (int k = 0; k < s->nkeys; k++)
		pfree(texts[k]);
}

void
cp_stream_run_note_too_large(CpRun *run, CpStreamRun *s, TupleDesc desc,
							 const Datum *values, const bool *isnull)
{
	MemoryContext oldcontext = MemoryContextSwitchTo(run->mcxt);
	StringInfoData key;

	initStringInfo(&key);
	if (s->keyset)
	{
		const char *texts[INDEX_MAX_KEYS];

		Assert(s->nkeys <= INDEX_MAX_KEYS);
		for (int k = 0; k < s->nkeys; k++)
			texts[k] = OutputFunctionCall(&s->key_out[k],
										  values[s->key_columns[k] - 1]);
		cp_oversize_append_key(&key, s->nkeys, (const char *const *) s->key_quoted,
							   texts);
	}
	s->too_large = key.data;
	s->too_large_bytes = cp_oversize_values_bytes(desc, values, isnull);
	MemoryContextSwitchTo(oldcontext);
}

void
cp_stream_run_stop_too_large(CpRun *run, CpStreamRun *s)
{
	/* what came before it is delivered and acknowledged: a fix resumes at it */
	cp_delivery_flush(run, true);

	/*
	 * Retrying could only meet the same row again (a worker restarted in a
	 * loop, each time reading up to it): stop the sync until it is fixed.
	 */
	cp_worker_stop_on_error();
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("%s%s of \"%s\".\"%s\" is too large to send: its record would exceed batch_bytes (%d bytes); its values take " INT64_FORMAT " bytes before encoding",
					s->too_large[0] != '\0' ? "row " : "a row",
					s->too_large, s->nspname, s->relname,
					run->sync->batch_bytes, s->too_large_bytes),
			 errdetail("A record is never split across batches; text escapes up to six times its size in JSON, bytea to twice."),
			 errhint("Create the sync again with a larger batch_bytes (at most 256MB), leave the column out through a view, or make the value smaller; rows up to it were delivered.")));
}

/*
 * Encode one row of a chunk as a RECORD with its state; false (the batch
 * unchanged, the row noted in s) when its line would exceed batch_bytes.
 */
static bool
add_record(CpRun *run, int idx, HeapTuple tuple, TupleDesc desc,
		   Datum *values, bool *isnull, const StringInfo head, StringInfo state)
{
	CpStreamRun *s = &run->streams[idx];
	CpBatch    *batch = run->batch;
	int			start = cp_batch_line_begin(batch);

	heap_deform_tuple(tuple, desc, values, isnull);
	appendBinaryStringInfo(&batch->lines, head->data, head->len);
	/* the line: head, row, "}}\n" */
	if (!cp_encode_row_bounded(s->enc, &batch->lines, values, isnull, NULL,
							   run->sync->batch_bytes - head->len - 3))
	{
		batch->lines.len = start;
		batch->lines.data[start] = '\0';
		cp_stream_run_note_too_large(run, s, desc, values, isnull);
		return false;
	}
	appendStringInfoString(&batch->lines, "}}");
	cp_batch_line_end(batch, start, idx, true);
	s->rows++;

	if (s->keyset)
		cp_stream_run_remember_key(run, s, values);
	resetStringInfo(state);
	cp_protocol_full_refresh_state(state, s, "reading");
	cp_batch_set_state(batch, state->data, state->len);
	return true;
}

void
cp_stream_run_key_columns(CpStreamRun *s, TupleDesc desc)
{
	for (int k = 0; k < s->nkeys; k++)
	{
		/* by the column's own name, not its quoted form */
		s->key_columns[k] = SPI_fnumber(desc, s->key_names[k]);
		if (s->key_columns[k] <= 0 || s->key_columns[k] > desc->natts)
			elog(ERROR, "key column \"%s\" of \"%s\".\"%s\" is not in its rows",
				 s->key_names[k], s->nspname, s->relname);
	}
}

/*
 * Build the encoder from the first chunk's rows; false when a later chunk's
 * rows no longer have the shape it was built for (a column was added,
 * dropped or retyped during the read).
 */
static bool
make_encoder(CpRun *run, CpStreamRun *s, TupleDesc desc)
{
	MemoryContext oldcontext;

	if (s->enc != NULL)
	{
		if (desc->natts != s->enc_desc->natts)
			return false;
		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute a = TupleDescAttr(desc, i);
			Form_pg_attribute b = TupleDescAttr(s->enc_desc, i);

			if (a->atttypid != b->atttypid || a->atttypmod != b->atttypmod ||
				strcmp(NameStr(a->attname), NameStr(b->attname)) != 0)
				return false;
		}
		return true;
	}

	oldcontext = MemoryContextSwitchTo(s->mcxt);
	s->enc_desc = CreateTupleDescCopy(desc);
	s->enc = cp_row_encoder_create(desc, s->mcxt);
	MemoryContextSwitchTo(oldcontext);
	if (s->keyset)
		cp_stream_run_key_columns(s, desc);
	return true;
}

char *
cp_keyset_query(CpStreamRun *s, int max_rows, Datum **argsp)
{
	StringInfoData query;
	Datum	   *args = NULL;
	int			nargs = list_length(s->after);

	initStringInfo(&query);
	appendStringInfoString(&query, s->select_query);
	if (nargs > 0)
	{
		appendStringInfo(&query, " WHERE %s", s->key_after);

		/* the key as it was written, read back with the same settings */
		args = palloc(sizeof(Datum) * nargs);
		for (int k = 0; k < nargs; k++)
		{
			Oid			typinput,
						typioparam;

			getTypeInputInfo(s->key_types[k], &typinput, &typioparam);
			args[k] = OidInputFunctionCall(typinput, list_nth(s->after, k),
										   typioparam, s->key_typmods[k]);
		}
	}
	appendStringInfo(&query, " ORDER BY %s LIMIT %d", s->key_order, max_rows);

	*argsp = args;
	return query.data;
}

/*
 * Read the next chunk of a keyset stream: at most max_rows rows, fewer if
 * the batch's byte limit is reached first.  Returns the rows read, or -1
 * when the table was rewritten since the read began.
 */
static int
read_keyset_chunk(CpRun *run, int idx, int max_rows, bool *exhausted)
{
	CpStreamRun *s = &run->streams[idx];
	char	   *query;
	Datum	   *args;
	int			nargs = list_length(s->after);
	int			rows = 0;
	Oid			save_userid;
	int			save_sec;

	if (s->relfilenode != InvalidOid &&
		current_relfilenode(s->def->relid) != s->relfilenode)
		return -1;

	query = cp_keyset_query(s, max_rows, &args);

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(run->sync->run_as, save_sec | CP_RUN_AS_FLAGS);
	if (SPI_execute_with_args(query, nargs, s->key_types, args, NULL,
							  true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read \"%s\".\"%s\"", s->nspname, s->relname);
	SetUserIdAndSecContext(save_userid, save_sec);

	if (!make_encoder(run, s, SPI_tuptable->tupdesc))
		return -2;

	{
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum	   *values = palloc(sizeof(Datum) * desc->natts);
		bool	   *isnull = palloc(sizeof(bool) * desc->natts);
		StringInfoData head;
		StringInfoData state;

		record_head(s, &head);
		initStringInfo(&state);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			if (!add_record(run, idx, SPI_tuptable->vals[i], desc, values, isnull,
							&head, &state))
				break;			/* too large: stopped outside the transaction */
			rows++;
			if (run->batch->lines.len >= run->sync->batch_bytes)
				break;
		}
		*exhausted = SPI_processed < (uint64) max_rows;
		if (rows < (int) SPI_processed)
			*exhausted = false; /* stopped early: more to read */
	}
	return rows;
}

/*
 * Declare the held cursor over the whole stream, in a transaction of its
 * own: its query runs when that transaction commits, so the sync's role
 * must still be in force then, not only while the cursor is declared.
 */
static void
open_cursor(CpRun *run, CpStreamRun *s)
{
	Oid			save_userid;
	int			save_sec;
	SPIParseOpenOptions options;
	MemoryContext caller;

	memset(&options, 0, sizeof(options));
	options.cursorOptions = CURSOR_OPT_HOLD | CURSOR_OPT_NO_SCROLL;
	options.read_only = true;

	caller = cp_xact_start();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(run->sync->run_as, save_sec | CP_RUN_AS_FLAGS);
	if (SPI_cursor_parse_open(s->cursor_name, s->select_query, &options) == NULL)
		elog(ERROR, "could not open a cursor on \"%s\".\"%s\"", s->nspname, s->relname);
	SPI_finish();
	PopActiveSnapshot();
	cp_xact_commit(caller);		/* an error here aborts and restores the user */
	SetUserIdAndSecContext(save_userid, save_sec);
	s->cursor_open = true;
}

static int
read_cursor_chunk(CpRun *run, int idx, int max_rows, bool *exhausted)
{
	CpStreamRun *s = &run->streams[idx];
	Portal		portal = SPI_cursor_find(s->cursor_name);
	int			rows = 0;
	StringInfoData head;
	StringInfoData state;

	if (portal == NULL)
		elog(ERROR, "cursor \"%s\" of calabi_push is gone", s->cursor_name);
	record_head(s, &head);
	initStringInfo(&state);
	*exhausted = false;
	while (rows < max_rows && run->batch->lines.len < run->sync->batch_bytes &&
		   s->too_large == NULL)
	{
		TupleDesc	desc;
		Datum	   *values;
		bool	   *isnull;

		SPI_cursor_fetch(portal, true, Min(CURSOR_PIECE_ROWS, max_rows - rows));
		if (SPI_processed == 0)
		{
			*exhausted = true;
			break;
		}
		desc = SPI_tuptable->tupdesc;
		if (!make_encoder(run, s, desc))
			elog(ERROR, "the rows of cursor \"%s\" changed shape", s->cursor_name);
		values = palloc(sizeof(Datum) * desc->natts);
		isnull = palloc(sizeof(bool) * desc->natts);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			if (!add_record(run, idx, SPI_tuptable->vals[i], desc, values, isnull,
							&head, &state))
				break;			/* too large: stopped outside the transaction */
			rows++;
		}
		SPI_freetuptable(SPI_tuptable);
	}
	return rows;
}

static void
close_cursor(CpStreamRun *s)
{
	Portal		portal;
	MemoryContext caller;

	if (!s->cursor_open)
		return;
	caller = cp_xact_start();
	portal = GetPortalByName(s->cursor_name);
	if (PortalIsValid(portal))
		PortalDrop(portal, false);
	cp_xact_commit(caller);
	s->cursor_open = false;
}

bool
cp_stream_run_same_key(CpStreamRun *s)
{
	ListCell   *lc;

	if (list_length(s->def->key) != s->nkeys ||
		list_length(s->def->after) != s->nkeys)
		return false;
	foreach(lc, s->def->key)
		if (strcmp(lfirst(lc), s->key_names[foreach_current_index(lc)]) != 0)
			return false;
	return true;
}

/* Begin a read under a new generation. */
static void
begin_read(CpRun *run, int idx)
{
	CpStreamRun *s = &run->streams[idx];

	s->generation = s->def->generation + 1;
	s->def->generation = s->generation;
	s->rows = 0;
	list_free_deep(s->after);
	s->after = NIL;
	if (s->keyset)
	{
		MemoryContext caller = cp_xact_start();

		s->relfilenode = current_relfilenode(s->def->relid);
		cp_xact_commit(caller);
	}
	emit_control(run, idx, "refresh_start", "reading");
}

void
cp_full_refresh_stream(CpRun *run, int idx)
{
	CpStreamRun *s = &run->streams[idx];
	bool		exhausted = false;

	prepare_stream(run, idx);

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
				(errmsg("calabi_push sync \"%s\" resumes reading \"%s\".\"%s\" after " INT64_FORMAT " rows",
						run->sync->name, s->nspname, s->relname, s->rows)));
	}
	else
		begin_read(run, idx);

	while (!exhausted)
	{
		int			room = run->sync->batch_rows - run->batch->nrecords;
		int			max_rows = Min(run->sync->chunk_rows, Max(room, 1));
		int			nestlevel;
		int			rows;
		MemoryContext caller;

		CHECK_FOR_INTERRUPTS();

		/* the cursor's query runs with the server's settings */
		if (!s->keyset && !s->cursor_open)
			open_cursor(run, s);

		caller = cp_xact_start();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		nestlevel = cp_encoder_pin_settings();
		{
			MemoryContext oldcontext = MemoryContextSwitchTo(run->chunkcxt);

			rows = s->keyset ?
				read_keyset_chunk(run, idx, max_rows, &exhausted) :
				read_cursor_chunk(run, idx, max_rows, &exhausted);
			MemoryContextSwitchTo(oldcontext);
		}
		cp_encoder_unpin_settings(nestlevel);
		SPI_finish();
		PopActiveSnapshot();
		cp_xact_commit(caller);
		MemoryContextReset(run->chunkcxt);

		if (s->too_large != NULL)
			cp_stream_run_stop_too_large(run, s);
		if (rows == -2)
		{
			ereport(LOG,
					(errmsg("calabi_push sync \"%s\": the columns of \"%s\".\"%s\" changed during its read; reading it again",
							run->sync->name, s->nspname, s->relname)));
			prepare_stream(run, idx);	/* a new STREAM message */
			begin_read(run, idx);
			continue;
		}
		if (rows < 0)
		{
			ereport(LOG,
					(errmsg("calabi_push sync \"%s\": \"%s\".\"%s\" was rewritten during its read; reading it again",
							run->sync->name, s->nspname, s->relname)));
			begin_read(run, idx);
			continue;
		}
		if (cp_delivery_batch_full(run))
			cp_delivery_flush(run, false);
	}

	close_cursor(s);
	emit_control(run, idx, "refresh_end", "done");
	s->def->phase = "done";
}
