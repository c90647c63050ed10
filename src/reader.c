/*-------------------------------------------------------------------------
 *
 * reader.c
 *	  The chunked reader (see reader.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_index.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "oversize.h"
#include "protocol.h"
#include "reader.h"
#include "stream.h"
#include "xact.h"

/* rows fetched from a held cursor at a time, so a byte limit can stop us */
#define CURSOR_PIECE_ROWS 100
/* rows per page assumed for a keyless table without statistics */
#define DEFAULT_ROWS_PER_PAGE 50

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

Oid
cp_reader_operator(Oid opfamily, Oid intype, int16 strategy, const char *column)
{
	Oid			opno = get_opfamily_member(opfamily, intype, intype, strategy);

	/* every btree family has all five for its opclasses' input types */
	if (!OidIsValid(opno))
		elog(ERROR, "operator family %u lacks strategy %d for type %u of column \"%s\"",
			 opfamily, strategy, intype, column);
	return opno;
}

void
cp_reader_append_operator(StringInfo buf, Oid opno)
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
 * A column whose type is not the opclass's input type (varchar under
 * text_ops, a domain) is cast to it, binary-coercibly as an index does, so
 * that the operator is found by its exact types; a polymorphic opclass
 * (enums, arrays, ranges) takes the column's.  Returns the type compared.
 */
Oid
cp_reader_ordered_column(const char *quoted, Oid type, Oid intype, Oid collation,
						 int param, char **expr, char **paramtext)
{
	StringInfoData e;
	StringInfoData p;
	Oid			compared = type;

	initStringInfo(&e);
	initStringInfo(&p);
	appendStringInfo(&e, "(%s", quoted);
	appendStringInfo(&p, "($%d", param);
	if (intype != type && get_typtype(intype) != TYPTYPE_PSEUDO)
	{
		char	   *name = format_type_be_qualified(intype);

		appendStringInfo(&e, "::%s", name);
		appendStringInfo(&p, "::%s", name);
		compared = intype;
	}
	if (OidIsValid(collation))
	{
		HeapTuple	tuple = SearchSysCache1(COLLOID, ObjectIdGetDatum(collation));
		Form_pg_collation coll;

		if (!HeapTupleIsValid(tuple))
			elog(ERROR, "cache lookup failed for collation %u", collation);
		coll = (Form_pg_collation) GETSTRUCT(tuple);
		/* on the column: an explicit collation wins over the parameter's */
		appendStringInfo(&e, " COLLATE %s",
						 quote_qualified_identifier(get_namespace_name(coll->collnamespace),
													NameStr(coll->collname)));
		ReleaseSysCache(tuple);
	}
	appendStringInfoChar(&e, ')');
	appendStringInfoChar(&p, ')');
	*expr = e.data;
	*paramtext = p.data;
	return compared;
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

		c->desc = (option & INDOPTION_DESC) != 0;
		c->nulls_first = (option & INDOPTION_NULLS_FIRST) != 0;
		c->gt = cp_reader_operator(opfamily, intype,
								   c->desc ? BTLessStrategyNumber : BTGreaterStrategyNumber,
								   s->key_names[k]);
		c->ge = cp_reader_operator(opfamily, intype,
								   c->desc ? BTLessEqualStrategyNumber : BTGreaterEqualStrategyNumber,
								   s->key_names[k]);
		c->eq = cp_reader_operator(opfamily, intype, BTEqualStrategyNumber, s->key_names[k]);
		c->lt = cp_reader_operator(opfamily, intype,
								   c->desc ? BTGreaterStrategyNumber : BTLessStrategyNumber,
								   s->key_names[k]);
		exprtypes[k] = cp_reader_ordered_column(s->key_quoted[k], s->key_types[k], intype,
												collation, k + 1, &c->expr, &c->param);
	}

	initStringInfo(&buf);
	if (s->nkeys > 1 && row_comparison_fits(cols, exprtypes, s->nkeys))
	{
		appendStringInfoChar(&buf, '(');
		for (int k = 0; k < s->nkeys; k++)
			appendStringInfo(&buf, "%s%s", k ? ", " : "", cols[k].expr);
		appendStringInfoChar(&buf, ')');
		cp_reader_append_operator(&buf, cols[0].gt);
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
			cp_reader_append_operator(&buf, cols[0].ge);
			appendStringInfo(&buf, "%s AND ", cols[0].param);
		}
		for (int k = 0; k < s->nkeys; k++)
		{
			if (k < s->nkeys - 1)
				appendStringInfoChar(&buf, '(');
			appendStringInfoString(&buf, cols[k].expr);
			cp_reader_append_operator(&buf, cols[k].gt);
			appendStringInfoString(&buf, cols[k].param);
			if (k < s->nkeys - 1)
			{
				appendStringInfo(&buf, " OR (%s", cols[k].expr);
				cp_reader_append_operator(&buf, cols[k].eq);
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
		cp_reader_append_operator(&buf, cols[k].lt);
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

void
cp_stream_run_rewind(CpStreamRun *s)
{
	s->rows = 0;
	list_free_deep(s->after);
	s->after = NIL;
	if (s->keyset)
	{
		MemoryContext caller = cp_xact_start();

		s->relfilenode = current_relfilenode(s->def->relid);
		cp_xact_commit(caller);
	}
}

/*
 * The key of a row, as text, in cxt.  The output functions run in the
 * current (per-chunk) context: whatever they allocate besides their result
 * (a detoasted value, numeric's digits) goes with the chunk.
 */
static List *
key_texts(CpStreamRun *s, const Datum *values, MemoryContext cxt)
{
	char	   *texts[INDEX_MAX_KEYS];
	List	   *after = NIL;
	MemoryContext oldcontext;

	Assert(s->nkeys <= INDEX_MAX_KEYS);
	for (int k = 0; k < s->nkeys; k++)
		texts[k] = OutputFunctionCall(&s->key_out[k], values[s->key_columns[k] - 1]);

	oldcontext = MemoryContextSwitchTo(cxt);
	for (int k = 0; k < s->nkeys; k++)
		after = lappend(after, pstrdup(texts[k]));
	MemoryContextSwitchTo(oldcontext);
	for (int k = 0; k < s->nkeys; k++)
		pfree(texts[k]);
	return after;
}

void
cp_stream_run_remember_key(CpRun *run, CpStreamRun *s, const Datum *values)
{
	List	   *after = key_texts(s, values, run->mcxt);

	list_free_deep(s->after);
	s->after = after;
}

/* Note the row too large to send, its values at hand (in the transaction). */
static void
note_too_large(CpRun *run, CpStreamRun *s, TupleDesc desc,
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

static void
key_columns(CpStreamRun *s, TupleDesc desc)
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
 * Build the encoder from the first chunk's rows after s->enc was set to
 * NULL; false when a later chunk's rows no longer have the shape it was
 * built for (a column was added, dropped or retyped during the read).
 */
static bool
make_encoder(CpStreamRun *s, TupleDesc desc)
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

	if (s->enccxt == NULL)
		s->enccxt = AllocSetContextCreate(s->mcxt, "calabi_push stream encoder",
										  ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(s->enccxt);
	oldcontext = MemoryContextSwitchTo(s->enccxt);
	s->enc_desc = CreateTupleDescCopy(desc);
	s->enc = cp_row_encoder_create(desc, s->enccxt);
	MemoryContextSwitchTo(oldcontext);
	if (s->keyset)
		key_columns(s, desc);
	return true;
}

/* The keyset query for the rows after s->after (args: the key as parameters). */
static char *
keyset_query(CpStreamRun *s, int max_rows, Datum **argsp)
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
 * Declare the held cursor over the whole stream, in a transaction of its
 * own: its query runs when that transaction commits, so the sync's role
 * must still be in force then, not only while the cursor is declared.
 */
static void
open_cursor(CpRun *run, CpStreamRun *s, CpReadChunk *c)
{
	Oid			save_userid;
	int			save_sec;
	SPIParseOpenOptions options;
	MemoryContext caller;

	memset(&options, 0, sizeof(options));
	options.cursorOptions = CURSOR_OPT_HOLD | CURSOR_OPT_NO_SCROLL;
	options.read_only = true;

	caller = cp_xact_start();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(run->sync->run_as, save_sec | CP_RUN_AS_FLAGS);
	if (c->cursor_query != NULL)
	{
		/* the parameters are the caller's: none is NULL */
		if (SPI_cursor_open_with_args(s->cursor_name, c->cursor_query, c->cursor_nargs,
									  c->cursor_argtypes, c->cursor_args, NULL, true,
									  CURSOR_OPT_HOLD | CURSOR_OPT_NO_SCROLL) == NULL)
			elog(ERROR, "could not open a cursor on \"%s\".\"%s\"", s->nspname, s->relname);
	}
	else if (SPI_cursor_parse_open(s->cursor_name, s->select_query, &options) == NULL)
		elog(ERROR, "could not open a cursor on \"%s\".\"%s\"", s->nspname, s->relname);
	SPI_finish();
	PopActiveSnapshot();
	cp_xact_commit(caller);		/* an error here aborts and restores the user */
	SetUserIdAndSecContext(save_userid, save_sec);
	s->cursor_open = true;
}

void
cp_read_close(CpStreamRun *s)
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

/*
 * Run a chunk's query as the sync's role.  SPI leaves CurrentMemoryContext
 * at its procedure's context, freed by SPI_finish: go back to the chunk's,
 * where the caller keeps what it makes of the rows.
 */
static void
run_query(CpRun *run, CpStreamRun *s, const char *query, int nargs,
		  Oid *argtypes, Datum *args)
{
	MemoryContext cxt = CurrentMemoryContext;
	Oid			save_userid;
	int			save_sec;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(run->sync->run_as, save_sec | CP_RUN_AS_FLAGS);
	if (SPI_execute_with_args(query, nargs, argtypes, args, NULL,
							  true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read \"%s\".\"%s\"", s->nspname, s->relname);
	SetUserIdAndSecContext(save_userid, save_sec);
	MemoryContextSwitchTo(cxt);
}

/*
 * Encode rows [0, n) of tuptable into c->out and hand each to c->row; by
 * bytes, stop once out reaches batch_bytes.  Returns how many were taken.
 * A row too large to send ends a keyset chunk before it when rows precede
 * it (the next chunk begins with it), and is noted otherwise.
 */
static uint64
take_rows(CpRun *run, CpStreamRun *s, CpReadChunk *c, SPITupleTable *tuptable,
		  uint64 n, const StringInfo head, bool by_bytes)
{
	TupleDesc	desc = tuptable->tupdesc;
	StringInfo	out = c->out;
	Datum	   *values = palloc(sizeof(Datum) * Max(desc->natts, 1));
	bool	   *isnull = palloc(sizeof(bool) * Max(desc->natts, 1));
	uint64		i;

	for (i = 0; i < n; i++)
	{
		int			start = out->len;

		heap_deform_tuple(tuptable->vals[i], desc, values, isnull);
		appendBinaryStringInfo(out, head->data, head->len);
		if (!cp_encode_row_bounded(s->enc, out, values, isnull, NULL,
								   run->sync->batch_bytes - head->len - c->line_room))
		{
			out->len = start;
			out->data[start] = '\0';
			if (!s->keyset || c->rows == 0)
				note_too_large(run, s, desc, values, isnull);
			break;
		}
		c->rows++;
		c->row(c->arg, start, values, isnull);
		if (by_bytes && out->len >= run->sync->batch_bytes)
		{
			i++;
			break;
		}
	}
	pfree(values);
	pfree(isnull);
	return i;
}

static CpReadResult
read_keyset(CpRun *run, CpStreamRun *s, CpReadChunk *c, const StringInfo head)
{
	char	   *query;
	Datum	   *args;
	uint64		taken;

	if (c->restart_if_rewritten && s->relfilenode != InvalidOid &&
		current_relfilenode(s->def->relid) != s->relfilenode)
		return CP_READ_REWRITTEN;

	query = keyset_query(s, c->max_rows, &args);
	run_query(run, s, query, list_length(s->after), s->key_types, args);
	if (!make_encoder(s, SPI_tuptable->tupdesc))
		return CP_READ_RESHAPED;

	taken = take_rows(run, s, c, SPI_tuptable, SPI_processed, head, true);
	c->exhausted = SPI_processed < (uint64) c->max_rows && taken == SPI_processed;
	if (taken > 0)
	{
		/* the key of the last row taken: the next chunk reads after it */
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum	   *values = palloc(sizeof(Datum) * desc->natts);
		bool	   *isnull = palloc(sizeof(bool) * desc->natts);

		heap_deform_tuple(SPI_tuptable->vals[taken - 1], desc, values, isnull);
		c->after = key_texts(s, values, c->cxt);
	}
	return CP_READ_OK;
}

static CpReadResult
read_cursor(CpRun *run, CpStreamRun *s, CpReadChunk *c, const StringInfo head)
{
	Portal		portal = SPI_cursor_find(s->cursor_name);
	MemoryContext cxt = CurrentMemoryContext;

	if (portal == NULL)
		elog(ERROR, "cursor \"%s\" of calabi_push is gone", s->cursor_name);
	while (c->rows < c->max_rows && c->out->len < run->sync->batch_bytes &&
		   s->too_large == NULL)
	{
		SPI_cursor_fetch(portal, true, Min(CURSOR_PIECE_ROWS, c->max_rows - c->rows));
		MemoryContextSwitchTo(cxt); /* as in run_query */
		if (SPI_processed == 0)
		{
			c->exhausted = true;
			break;
		}
		if (!make_encoder(s, SPI_tuptable->tupdesc))
			elog(ERROR, "the rows of cursor \"%s\" changed shape", s->cursor_name);
		(void) take_rows(run, s, c, SPI_tuptable, SPI_processed, head, false);
		SPI_freetuptable(SPI_tuptable);
	}
	return CP_READ_OK;
}

/*
 * A range of blocks (a TID range scan), the next one after; about
 * chunk_rows rows by the table's statistics.  Or, with c->tids, the tuples
 * it chooses of the blocks from the position on (a TID scan).  A range
 * cannot end mid-way: no byte limit.
 */
static CpReadResult
read_blocks(CpRun *run, CpStreamRun *s, CpReadChunk *c, const StringInfo head,
			Snapshot snapshot)
{
	Relation	rel = cp_stream_open(s->def->relid, run->sync->run_as);
	const char *select = c->block_query != NULL ? c->block_query : s->select_query;
	BlockNumber first;
	BlockNumber next;
	bool		last;
	char	   *query;
	Datum		arg = (Datum) 0;
	Oid			argtype = TIDARRAYOID;

	if (c->block_relid != InvalidOid)
	{
		/* a partition: read through the stream's relation, opened above */
		relation_close(rel, NoLock);
		rel = try_relation_open(c->block_relid, AccessShareLock);
		if (rel == NULL)
		{
			/* dropped since: nothing of it is left to read */
			c->after = list_make1(pstrdup("0"));
			c->exhausted = true;
			return CP_READ_OK;
		}
	}
	/* positions are blocks of one relfilenode: a rewrite moves rows */
	if (c->restart_if_rewritten && s->relfilenode != InvalidOid &&
		rel->rd_rel->relfilenode != s->relfilenode)
	{
		relation_close(rel, NoLock);
		return CP_READ_REWRITTEN;
	}
	first = s->after != NIL ? (BlockNumber) strtoul(linitial(s->after), NULL, 10) : 0;
	if (c->tids != NULL)
	{
		ItemPointerData *tids;
		int			ntids;

		/* a block's tuples are all taken: room for one more block's */
		tids = palloc(sizeof(ItemPointerData) * (c->max_rows + MaxHeapTuplesPerPage));
		next = c->tids(c->arg, rel, snapshot, first, c->max_rows, tids, &ntids, &last);
		relation_close(rel, NoLock);
		if (ntids == 0)
			query = NULL;
		else
		{
			Datum	   *elems = palloc(sizeof(Datum) * ntids);

			for (int i = 0; i < ntids; i++)
				elems[i] = PointerGetDatum(&tids[i]);
			arg = PointerGetDatum(construct_array(elems, ntids, TIDOID,
												  sizeof(ItemPointerData), false,
												  TYPALIGN_SHORT));
			query = psprintf("%s%s ctid = ANY($1)", select,
							 c->block_query != NULL ? " AND" : " WHERE");
		}
	}
	else
	{
		BlockNumber nblocks = RelationGetNumberOfBlocks(rel);
		BlockNumber per;
		double		rows_per_page = DEFAULT_ROWS_PER_PAGE;

		if (rel->rd_rel->relpages > 0 && rel->rd_rel->reltuples > 0)
			rows_per_page = Max(rel->rd_rel->reltuples / rel->rd_rel->relpages, 1);
		relation_close(rel, NoLock);
		per = Max((BlockNumber) (c->max_rows / rows_per_page), 1);
		last = first >= nblocks || nblocks - first <= per;
		if (last)
			per = first < nblocks ? nblocks - first : 0;
		next = first + per;
		query = psprintf("%s%s ctid >= '(%u,0)'::tid AND ctid < '(%u,0)'::tid",
						 select, c->block_query != NULL ? " AND" : " WHERE",
						 first, next);
	}
	c->after = list_make1(psprintf("%u", next));

	if (query != NULL)
	{
		run_query(run, s, query, arg != (Datum) 0 ? 1 : 0, &argtype, &arg);
		if (!make_encoder(s, SPI_tuptable->tupdesc))
			return CP_READ_RESHAPED;
		(void) take_rows(run, s, c, SPI_tuptable, SPI_processed, head, false);
	}
	c->exhausted = last && s->too_large == NULL;
	return CP_READ_OK;
}

CpReadResult
cp_read_chunk(CpRun *run, CpStreamRun *s, CpReadChunk *c)
{
	MemoryContext caller;
	MemoryContext oldcontext;
	Snapshot	snapshot;
	int			nestlevel;
	CpReadResult result = CP_READ_OK;

	c->rows = 0;
	c->exhausted = false;
	c->after = NIL;

	/* the cursor's query runs with the server's settings */
	if (!s->by_blocks && !s->keyset && !s->cursor_open)
		open_cursor(run, s, c);

	caller = cp_xact_start();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	snapshot = GetTransactionSnapshot();
	PushActiveSnapshot(snapshot);
	nestlevel = cp_encoder_pin_settings();
	oldcontext = MemoryContextSwitchTo(c->cxt);
	if (c->begin != NULL)
		result = c->begin(c->arg, snapshot);
	if (result == CP_READ_OK)
	{
		/* what every RECORD of the chunk starts with, formatted once */
		StringInfoData head;

		initStringInfo(&head);
		cp_protocol_record_head(&head, s->record_prefix,
								c->emitted_at != 0 ? c->emitted_at : GetCurrentTimestamp());
		result = s->by_blocks ? read_blocks(run, s, c, &head, snapshot) :
			s->keyset ? read_keyset(run, s, c, &head) :
			read_cursor(run, s, c, &head);
	}
	MemoryContextSwitchTo(oldcontext);
	cp_encoder_unpin_settings(nestlevel);
	SPI_finish();
	PopActiveSnapshot();
	cp_xact_commit(caller);
	return result;
}
