/*-------------------------------------------------------------------------
 *
 * preview.c
 *	  calabi_push.preview() and calabi_push.stream_schema(): what a sync of a
 *	  relation would send, shown in SQL.
 *
 * preview() reads the relation as the caller (privileges and row-level
 * security apply) through a cursor, so memory stays bounded by one chunk
 * plus the result tuplestore, which spills to disk past work_mem.  Settings
 * are pinned only while a chunk is encoded: the query itself runs with the
 * caller's settings, as any query of theirs would.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "compat.h"
#include "encoder.h"
#include "stream.h"

/* rows fetched from the cursor and encoded per round */
#define PREVIEW_CHUNK_ROWS 1000

PG_FUNCTION_INFO_V1(calabi_push_preview);
PG_FUNCTION_INFO_V1(calabi_push_stream_schema);

static Oid
relation_argument(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("rel must not be NULL"),
				 errhint("Name a table, view or materialized view, e.g. 'public.orders'.")));
	return PG_GETARG_OID(0);
}

Datum
calabi_push_preview(PG_FUNCTION_ARGS)
{
	Oid			relid = relation_argument(fcinfo);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		remaining = -1; /* -1: all rows */
	Relation	rel;
	char	   *query;
	Portal		portal;
	SPIPlanPtr	plan;
	CpRowEncoder *enc = NULL;
	MemoryContext chunkcxt;
	StringInfoData line;
	Datum	   *values = NULL;
	bool	   *isnull = NULL;

	if (!PG_ARGISNULL(1))
	{
		remaining = PG_GETARG_INT32(1);
		if (remaining < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_rows must not be negative"),
					 errhint("Pass NULL to preview every row.")));
	}

	rel = cp_stream_open(relid, GetUserId());
	query = cp_stream_select_query(rel);
	if (remaining >= 0)
		query = psprintf("%s LIMIT %lld", query, (long long) remaining);
	/* keep the lock to the end of the transaction, as a query would */
	relation_close(rel, NoLock);

	cp_init_materialized_srf(fcinfo);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(query, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare(\"%s\") failed: %s", query,
			 SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);

	chunkcxt = AllocSetContextCreate(CurrentMemoryContext,
									 "calabi_push preview chunk",
									 ALLOCSET_DEFAULT_SIZES);
	initStringInfo(&line);

	for (;;)
	{
		TupleDesc	tupdesc;
		int			nestlevel;
		MemoryContext oldcontext;

		SPI_cursor_fetch(portal, true, PREVIEW_CHUNK_ROWS);
		if (SPI_processed == 0)
			break;
		tupdesc = SPI_tuptable->tupdesc;
		if (enc == NULL)
		{
			enc = cp_row_encoder_create(tupdesc, CurrentMemoryContext);
			values = palloc(sizeof(Datum) * Max(tupdesc->natts, 1));
			isnull = palloc(sizeof(bool) * Max(tupdesc->natts, 1));
		}

		nestlevel = cp_encoder_pin_settings();
		oldcontext = MemoryContextSwitchTo(chunkcxt);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			Datum		json;
			bool		json_isnull = false;

			CHECK_FOR_INTERRUPTS();
			heap_deform_tuple(SPI_tuptable->vals[i], tupdesc, values, isnull);
			resetStringInfo(&line);
			cp_encode_row(enc, &line, values, isnull);
			json = PointerGetDatum(cstring_to_text_with_len(line.data, line.len));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
								 &json, &json_isnull);
			pfree(DatumGetPointer(json));
		}
		MemoryContextSwitchTo(oldcontext);
		cp_encoder_unpin_settings(nestlevel);

		MemoryContextReset(chunkcxt);
		SPI_freetuptable(SPI_tuptable);
	}

	SPI_cursor_close(portal);
	SPI_finish();
	return (Datum) 0;
}

Datum
calabi_push_stream_schema(PG_FUNCTION_ARGS)
{
	Oid			relid = relation_argument(fcinfo);
	Relation	rel = cp_stream_open(relid, GetUserId());
	CpRowEncoder *enc = cp_row_encoder_create(RelationGetDescr(rel),
											  CurrentMemoryContext);
	StringInfoData buf;

	initStringInfo(&buf);
	cp_stream_append_object(&buf, rel, enc, NULL);
	relation_close(rel, NoLock);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
