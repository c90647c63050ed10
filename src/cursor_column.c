/*-------------------------------------------------------------------------
 *
 * cursor_column.c
 *	  A cursor sync's column: its ordering and the largest value sent
 *	  (cursor_column.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/nbtree.h"
#include "access/tupdesc.h"
#include "access/xact.h"
#include "catalog/pg_am.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "cursor_column.h"
#include "encoder.h"
#include "reader.h"
#include "worker.h"
#include "xact.h"

void
cp_cursor_column_describe(CpCursorColumn *cur, Relation rel, const char *name,
						  const char *sync_name, Oid run_as, MemoryContext cxt)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Form_pg_attribute attr = NULL;
	Oid			opclass;
	Oid			opfamily;
	Oid			intype;
	Oid			cmp;
	Oid			func;
	bool		isvarlena;
	const char *relname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
													 RelationGetRelationName(rel));

	/* what described it before (a previous run) goes, but its value's memory */
	if (cur->has_max && !cur->typbyval)
		pfree(DatumGetPointer(cur->max));
	memset(cur, 0, sizeof(*cur));
	cur->name = pstrdup(name);
	cur->run_as = run_as;
	cur->cxt = cxt;
	/* SELECT * leaves dropped columns out: count the others before it */
	for (int i = 0, n = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (a->attisdropped)
			continue;
		if (strcmp(NameStr(a->attname), name) == 0)
		{
			attr = a;
			cur->column = n;
			break;
		}
		n++;
	}
	if (attr == NULL)
	{
		cp_worker_stop_on_error();
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("cursor column \"%s\" of %s does not exist", name, relname),
				 errdetail("It was dropped or renamed since the sync was created."),
				 errhint("Drop the sync and create it again naming a column of %s as its cursor (SELECT calabi_push.drop_sync('%s');).",
						 relname, sync_name)));
	}
	cur->type = attr->atttypid;
	cur->typmod = attr->atttypmod;
	cur->collation = attr->attcollation;

	opclass = GetDefaultOpClass(cur->type, BTREE_AM_OID);
	if (!OidIsValid(opclass))
	{
		cp_worker_stop_on_error();
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("cursor column \"%s\" of %s has type %s, which has no default ordering",
						name, relname, format_type_be(cur->type)),
				 errdetail("Its type was changed since the sync was created."),
				 errhint("Drop the sync and create it again with a cursor column of an ordered type (SELECT calabi_push.drop_sync('%s');).",
						 sync_name)));
	}
	opfamily = get_opclass_family(opclass);
	intype = get_opclass_input_type(opclass);
	cur->gt = cp_reader_operator(opfamily, intype, BTGreaterStrategyNumber, name);
	cur->ge = cp_reader_operator(opfamily, intype, BTGreaterEqualStrategyNumber, name);
	cur->lt = cp_reader_operator(opfamily, intype, BTLessStrategyNumber, name);
	cur->compared = cp_reader_ordered_column(quote_identifier(name), cur->type, intype,
											 cur->collation, 1, &cur->expr, &cur->param);
	/* a polymorphic family (enums, arrays) keeps its support under its own type */
	cmp = get_opfamily_proc(opfamily, cur->compared, cur->compared, BTORDER_PROC);
	if (!OidIsValid(cmp))
		cmp = get_opfamily_proc(opfamily, intype, intype, BTORDER_PROC);
	if (!OidIsValid(cmp))
		elog(ERROR, "operator family %u has no order function for type %u of cursor column \"%s\"",
			 opfamily, intype, name);
	fmgr_info_cxt(cmp, &cur->cmp, CurrentMemoryContext);
	getTypeOutputInfo(cur->type, &func, &isvarlena);
	fmgr_info_cxt(func, &cur->out, CurrentMemoryContext);
	/*
	 * A stored position is read back as the domain's base type: the value
	 * was the column's once, and a domain's CHECK (which may have changed
	 * since, or call any role's functions) has no say in where a read goes.
	 */
	cur->base = getBaseTypeAndTypmod(cur->type, &cur->typmod);
	getTypeInputInfo(cur->base, &func, &cur->ioparam);
	fmgr_info_cxt(func, &cur->in, CurrentMemoryContext);
	get_typlenbyval(cur->base, &cur->typlen, &cur->typbyval);
}

void
cp_cursor_column_see(CpCursorColumn *cur, TupleDesc desc, const Datum *values,
					 const bool *isnull)
{
	Datum		value;
	MemoryContext oldcontext;

	/*
	 * The rows' shape is the chunk's, the column's place and type were the
	 * preparation's: DDL in between (a column dropped before it, its type
	 * changed) must not make us compare another column's values.
	 */
	if (desc != cur->checked)
	{
		Form_pg_attribute attr = cur->column < desc->natts ?
			TupleDescAttr(desc, cur->column) : NULL;

		if (attr == NULL || attr->atttypid != cur->type ||
			strcmp(NameStr(attr->attname), cur->name) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cursor column \"%s\" changed while its relation was read", cur->name),
					 errhint("The sync reads the relation again from its last acknowledged position when its worker restarts.")));
		cur->checked = desc;
	}
	value = values[cur->column];
	if (isnull[cur->column])
		return;
	if (cur->has_max &&
		DatumGetInt32(FunctionCall2Coll(&cur->cmp, cur->collation, value, cur->max)) <= 0)
		return;
	if (cur->has_max && !cur->typbyval)
		pfree(DatumGetPointer(cur->max));
	/* a copy of its own (detoasted): the row's memory goes with its chunk */
	oldcontext = MemoryContextSwitchTo(cur->cxt);
	if (cur->typlen == -1)
		cur->max = PointerGetDatum(PG_DETOAST_DATUM_COPY(value));
	else
		cur->max = datumCopy(value, cur->typbyval, cur->typlen);
	MemoryContextSwitchTo(oldcontext);
	cur->has_max = true;
}

char *
cp_cursor_column_max_text(CpCursorColumn *cur)
{
	MemoryContext caller;
	int			nestlevel;
	char	   *text;

	MemoryContext tmp;
	bool		own = !IsTransactionState();

	if (!cur->has_max)
		return NULL;
	/* in a chunk's transaction, the settings are pinned already */
	caller = own ? cp_xact_start() : CurrentMemoryContext;
	nestlevel = own ? cp_encoder_pin_settings() : 0;
	/* what an output function leaves besides its text goes at once */
	tmp = AllocSetContextCreate(caller, "calabi_push cursor value", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(tmp);
	text = OutputFunctionCall(&cur->out, cur->max);
	MemoryContextSwitchTo(caller);
	text = pstrdup(text);
	MemoryContextDelete(tmp);
	if (own)
	{
		cp_encoder_unpin_settings(nestlevel);
		cp_xact_commit(caller);
	}
	return text;
}

void
cp_cursor_column_set_max(CpCursorColumn *cur, const char *text)
{
	MemoryContext caller;
	MemoryContext oldcontext;
	int			nestlevel;
	Datum		value;
	Oid			save_userid;
	int			save_sec;

	if (cur->has_max && !cur->typbyval)
		pfree(DatumGetPointer(cur->max));
	cur->has_max = false;
	if (text == NULL)
		return;
	caller = cp_xact_start();
	nestlevel = cp_encoder_pin_settings();

	/*
	 * An input function (the base type's: see cp_cursor_column_describe)
	 * runs as every read does: under a snapshot, as the sync's role (the
	 * session's already) in a restricted operation; in the transaction's
	 * memory, whatever it leaves besides its value going with it.
	 */
	PushActiveSnapshot(GetTransactionSnapshot());
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(cur->run_as, save_sec | CP_RUN_AS_FLAGS);
	value = InputFunctionCall(&cur->in, unconstify(char *, text), cur->ioparam, cur->typmod);
	SetUserIdAndSecContext(save_userid, save_sec);
	PopActiveSnapshot();
	oldcontext = MemoryContextSwitchTo(cur->cxt);
	cur->max = datumCopy(value, cur->typbyval, cur->typlen);
	cur->has_max = true;
	MemoryContextSwitchTo(oldcontext);
	cp_encoder_unpin_settings(nestlevel);
	cp_xact_commit(caller);
}
