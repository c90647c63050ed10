/*-------------------------------------------------------------------------
 *
 * cdc_change.c
 *	  One decoded change -> the ingest protocol's lines (see cdc_change.h).
 *
 * What the WAL holds for a change, and so what a record can carry:
 *
 * - insert, update: the new row, whole.  The reorder buffer has put TOASTed
 *   values written by the transaction back together, except for an update's
 *   values that did not change: the new row keeps the on-disk TOAST pointer
 *   of the old one, which cannot be read while decoding.
 * - update, delete: the old row's replica identity (the key columns, other
 *   columns null) when the key changed or for every delete; the whole old
 *   row under REPLICA IDENTITY FULL, its TOASTed values flattened into it;
 *   nothing under REPLICA IDENTITY NOTHING or a default identity without a
 *   key.
 *
 * So an update's unreadable value is taken from the old row when the WAL
 * holds it there (REPLICA IDENTITY FULL: the pointer did not change, so
 * neither did the value), and is otherwise left out of data and listed in
 * "unchanged".
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "cdc_change.h"
#include "cdc_relcache.h"
#include "compat.h"
#include "encoder.h"
#include "oversize.h"
#include "protocol.h"
#include "stream.h"

/* The encoder of _calabi_cdc_updated_at/_deleted_at values, made once. */
static CpTypeEncoder timestamptz_encoder;
static bool timestamptz_encoder_ready = false;

void
cp_cdc_txn_begin(CpCdcTxn *txn, XLogRecPtr end_lsn, TimestampTz commit_time)
{
	bool		settings_pinned = txn->settings_pinned;

	/*
	 * pin_nestlevel is forgotten, not unpinned: if a previous transaction
	 * did not reach cp_cdc_txn_end, its abort restored the settings.
	 */
	memset(txn, 0, sizeof(CpCdcTxn));
	txn->end_lsn = end_lsn;
	txn->commit_time = commit_time;
	txn->settings_pinned = settings_pinned;
}

void
cp_cdc_txn_end(CpCdcTxn *txn)
{
	if (txn->pin_nestlevel > 0)
	{
		cp_encoder_unpin_settings(txn->pin_nestlevel);
		txn->pin_nestlevel = 0;
	}
}

/* The _calabi_cdc_* members of the transaction's records, built once. */
static void
prepare_members(CpCdcTxn *txn)
{
	StringInfoData buf;

	if (txn->members_ready)
		return;
	initStringInfo(&buf);
	cp_cdc_append_time(&buf, txn->commit_time);
	if (buf.len >= (int) sizeof(txn->time))
		elog(ERROR, "commit time text too long: %s", buf.data);
	memcpy(txn->time, buf.data, buf.len);
	txn->time_len = buf.len;

	resetStringInfo(&buf);
	cp_protocol_cdc_members(&buf, txn->end_lsn, txn->time, txn->time_len);
	if (buf.len >= (int) sizeof(txn->members))
		elog(ERROR, "CDC members text too long: %s", buf.data);
	memcpy(txn->members, buf.data, buf.len);
	txn->members_len = buf.len;

	/* read when the transaction is replayed: one clock reading for all */
	resetStringInfo(&buf);
	cp_protocol_record_emitted(&buf, GetCurrentTimestamp());
	if (buf.len >= (int) sizeof(txn->emitted))
		elog(ERROR, "emitted_at text too long: %s", buf.data);
	memcpy(txn->emitted, buf.data, buf.len);
	txn->emitted_len = buf.len;
	pfree(buf.data);
	txn->members_ready = true;
}

void
cp_cdc_append_time(StringInfo out, TimestampTz t)
{
	if (!timestamptz_encoder_ready)
	{
		cp_type_encoder_init(&timestamptz_encoder, TIMESTAMPTZOID, TopMemoryContext);
		timestamptz_encoder_ready = true;
	}
	cp_encode_value(&timestamptz_encoder, out, TimestampTzGetDatum(t));
}

static void
pin_settings_for(CpCdcTxn *txn, const CpCdcRelation *entry)
{
	if (entry->needs_settings && !txn->settings_pinned && txn->pin_nestlevel == 0)
		txn->pin_nestlevel = cp_encoder_pin_settings();
}

/*
 * The relation's STREAM line, when owed; 1 if appended.  It counts as
 * announced only once the change's lines are all written (announced()): a
 * change too large to send takes it back with its own lines.
 */
static int
append_stream_if_owed(StringInfo out, CpCdcRelation *entry)
{
	if (!cp_cdc_relcache_stream_owed(entry))
		return 0;
	appendBinaryStringInfo(out, entry->stream_line, entry->stream_line_len);
	return 1;
}

static void
announced(CpCdcRelation *entry, int stream_lines)
{
	if (stream_lines > 0)
		cp_cdc_relcache_announced(entry->relid, entry->signature);
}

/* A row of the relation's current shape; all null when tuple is NULL. */
static void
deform_row(HeapTuple tuple, TupleDesc desc, Datum **values, bool **isnull)
{
	int			natts = Max(desc->natts, 1);

	*values = palloc(sizeof(Datum) * natts);
	*isnull = palloc(sizeof(bool) * natts);
	if (tuple != NULL)
		heap_deform_tuple(tuple, desc, *values, *isnull);
	else
		memset(*isnull, true, sizeof(bool) * natts);
}

/* An on-disk TOAST pointer: a value that cannot be read while decoding. */
static inline bool
unreadable(const CpCdcRelation *entry, int i, const Datum *values,
		   const bool *isnull)
{
	int			off = entry->enc->columns[i].attnum - 1;

	return entry->col_varlena[i] && !isnull[off] &&
		VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(values[off]));
}

/* An old row as a delete carries it: what the WAL cannot give is null. */
static void
null_unreadable(const CpCdcRelation *entry, const Datum *values, bool *isnull)
{
	for (int i = 0; i < entry->enc->ncolumns; i++)
		if (unreadable(entry, i, values, isnull))
			isnull[entry->enc->columns[i].attnum - 1] = true;
}

/*
 * Did the update move the row to another key?  Only key values the old row
 * holds are evidence; values are compared as the receiver sees them, so
 * bytes that differ (compressed or not, say) but encode the same do not
 * count.
 */
static bool
key_changed(const CpCdcRelation *entry, TupleDesc desc,
			const Datum *oldvals, const bool *oldnulls,
			const Datum *newvals, const bool *newnulls)
{
	StringInfoData a;
	bool		changed = false;

	initStringInfo(&a);
	for (int k = 0; k < entry->nkeys && !changed; k++)
	{
		int			i = entry->key_columns[k];
		const CpColumnEncoder *col = &entry->enc->columns[i];
		int			off = col->attnum - 1;
		Form_pg_attribute attr = TupleDescAttr(desc, off);
		int			oldlen;

		if (oldnulls[off])
			continue;			/* not in the WAL: no evidence */
		if (newnulls[off])
		{
			changed = true;
			break;
		}
		if (unreadable(entry, i, oldvals, oldnulls) ||
			unreadable(entry, i, newvals, newnulls))
			continue;			/* an unchanged TOASTed value */
		if (datumIsEqual(oldvals[off], newvals[off], attr->attbyval, attr->attlen))
			continue;

		resetStringInfo(&a);
		cp_encode_value(&col->type, &a, oldvals[off]);
		oldlen = a.len;
		cp_encode_value(&col->type, &a, newvals[off]);
		changed = a.len != 2 * oldlen ||
			memcmp(a.data, a.data + oldlen, oldlen) != 0;
	}
	pfree(a.data);
	return changed;
}

/* Drop what was appended to out from start on. */
static inline void
truncate_lines(StringInfo out, int start)
{
	out->len = start;
	out->data[start] = '\0';
}

/*
 * One RECORD line, no longer than the transaction's bound; false (out as it
 * was) when it would be longer.  unchanged (per encoder column, or NULL for
 * none) marks the columns left out of data and listed in "unchanged".
 */
static bool
append_record(StringInfo out, CpCdcTxn *txn, const CpCdcRelation *entry,
			  const Datum *values, const bool *isnull, const bool *unchanged,
			  bool deleted)
{
	const CpRowEncoder *enc = entry->enc;
	int			start = out->len;
	int			max_bytes = txn->max_record_bytes > 0 ?
		txn->max_record_bytes : (int) MaxAllocSize;
	bool		any = false;

	prepare_members(txn);
	appendBinaryStringInfo(out, entry->record_prefix, entry->record_prefix_len);
	appendBinaryStringInfo(out, txn->emitted, txn->emitted_len);

	/*
	 * The row exactly as preview() writes it, without the columns the WAL
	 * does not hold, reopened for our members.  The encoder stops at the
	 * bound: a huge value is never written out whole only to be dropped.
	 */
	if (!cp_encode_row_bounded(enc, out, values, isnull, unchanged,
							   max_bytes - (out->len - start)))
	{
		truncate_lines(out, start);
		return false;
	}
	Assert(out->len > 0 && out->data[out->len - 1] == '}');
	out->data[--out->len] = '\0';
	for (int i = 0; i < enc->ncolumns && !any; i++)
		any = unchanged == NULL || !unchanged[i];

	if (any)
		appendStringInfoChar(out, ',');
	appendBinaryStringInfo(out, txn->members, txn->members_len);
	if (deleted)
		appendBinaryStringInfo(out, txn->time, txn->time_len);
	else
		appendStringInfoString(out, "null");
	appendStringInfoChar(out, '}');

	if (unchanged != NULL)
	{
		bool		first = true;

		appendStringInfoString(out, ",\"unchanged\":[");
		for (int i = 0; i < enc->ncolumns; i++)
		{
			if (!unchanged[i])
				continue;
			if (!first)
				appendStringInfoChar(out, ',');
			first = false;
			/* the column's "name": key without its colon */
			appendBinaryStringInfo(out, enc->columns[i].key, enc->columns[i].keylen - 1);
		}
		appendStringInfoChar(out, ']');
	}
	appendStringInfoString(out, "}}\n");

	/* what follows the row is short: checked once written */
	if (out->len - start > max_bytes)
	{
		truncate_lines(out, start);
		return false;
	}
	return true;
}

/*
 * A record of change (the row values/isnull, without the unchanged columns)
 * would exceed the bound: nothing of the change is sent, nor anything after
 * it in the transaction.  Tell the sink which change it is, or, without a
 * sink to stop (the SQL functions), raise the error here.
 */
static void
change_too_large(CpCdcTxn *txn, const CpCdcRelation *entry, Relation rel,
				 ReorderBufferChange *change, const Datum *values,
				 const bool *isnull, const bool *unchanged)
{
	TupleDesc	desc = RelationGetDescr(rel);
	bool	   *counted = palloc(sizeof(bool) * Max(desc->natts, 1));
	const char *names[INDEX_MAX_KEYS];
	const char *texts[INDEX_MAX_KEYS];
	StringInfoData key;
	int64		bytes;

	/* the values the record would carry, not those it leaves out */
	memcpy(counted, isnull, sizeof(bool) * desc->natts);
	for (int i = 0; unchanged != NULL && i < entry->enc->ncolumns; i++)
		if (unchanged[i])
			counted[entry->enc->columns[i].attnum - 1] = true;
	bytes = cp_oversize_values_bytes(desc, values, counted);

	initStringInfo(&key);
	if (entry->nkeys > 0)
	{
		Assert(entry->nkeys <= INDEX_MAX_KEYS);
		for (int k = 0; k < entry->nkeys; k++)
		{
			int			i = entry->key_columns[k];
			const CpColumnEncoder *col = &entry->enc->columns[i];
			int			off = col->attnum - 1;
			Oid			outfunc;
			bool		varlena;

			names[k] = quote_identifier(col->name);
			if (isnull[off])
				texts[k] = NULL;
			else if (unreadable(entry, i, values, isnull))
				texts[k] = "...";	/* TOASTed, not in the WAL */
			else
			{
				getTypeOutputInfo(col->type.typid, &outfunc, &varlena);
				texts[k] = OidOutputFunctionCall(outfunc, values[off]);
			}
		}
		cp_oversize_append_key(&key, entry->nkeys, names, texts);
	}

	txn->too_large = true;
	if (txn->on_too_large != NULL)
	{
		txn->on_too_large(txn->on_too_large_arg, rel, change->lsn, key.data, bytes);
		return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("%s%s of \"%s\".\"%s\" at %X/%X is too large to decode: its record would exceed the 1GB a buffer can hold; its values take " INT64_FORMAT " bytes before encoding",
					key.len > 0 ? "change " : "a change", key.data,
					get_namespace_name(RelationGetNamespace(rel)),
					RelationGetRelationName(rel), LSN_FORMAT_ARGS(change->lsn),
					bytes)));
}

void
cp_cdc_key_text(StringInfo out, const CpRowEncoder *enc, const int *key_columns,
				int nkeys, const Datum *values, const bool *isnull)
{
	appendStringInfoChar(out, '[');
	for (int k = 0; k < nkeys; k++)
	{
		const CpColumnEncoder *col = &enc->columns[key_columns[k]];
		int			off = col->attnum - 1;

		if (k > 0)
			appendStringInfoChar(out, ',');
		if (isnull[off])
			appendStringInfoString(out, "null");
		else
			cp_encode_value(&col->type, out, values[off]);
	}
	appendStringInfoChar(out, ']');
}

/* Tell the backfill's watcher which key a change touched. */
static void
report_key(CpCdcTxn *txn, const CpCdcRelation *entry, const Datum *values,
		   const bool *isnull, bool partial)
{
	StringInfoData key;

	if (txn->on_key == NULL || txn->watch_relid != entry->relid)
		return;
	initStringInfo(&key);
	cp_cdc_key_text(&key, entry->enc, entry->key_columns, entry->nkeys,
					values, isnull);
	txn->on_key(txn->on_key_arg, key.data, key.len, partial);
	pfree(key.data);
}

int
cp_cdc_append_change(StringInfo out, CpCdcTxn *txn, Relation rel,
					 ReorderBufferChange *change, int *nrecords)
{
	CpCdcRelation *entry;
	TupleDesc	desc;
	HeapTuple	newtuple;
	HeapTuple	oldtuple;
	Datum	   *newvals;
	bool	   *newnulls;
	Datum	   *oldvals;
	bool	   *oldnulls;
	bool	   *unchanged = NULL;
	int			start = out->len;
	int			stream_lines;

	*nrecords = 0;
	switch (change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
		case REORDER_BUFFER_CHANGE_UPDATE:
		case REORDER_BUFFER_CHANGE_DELETE:
			break;
		default:
			return 0;
	}
	/* a change too large to send ends what is sent of its transaction */
	if (txn->too_large)
		return 0;

	entry = cp_cdc_relcache_get(rel);
	if (entry->violation != CP_CDC_OK && txn->on_violation != NULL)
	{
		/* nothing of it is sent: not even its STREAM line */
		txn->on_violation(txn->on_violation_arg, rel, entry->violation);
		return 0;
	}
	if (!entry->emit)
		return 0;

	desc = RelationGetDescr(rel);
	newtuple = cp_change_new_tuple(change);
	oldtuple = cp_change_old_tuple(change);
	if (change->action != REORDER_BUFFER_CHANGE_DELETE && newtuple == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("decoded %s of relation \"%s\" has no new row",
						change->action == REORDER_BUFFER_CHANGE_INSERT ? "insert" : "update",
						RelationGetRelationName(rel))));

	pin_settings_for(txn, entry);
	stream_lines = append_stream_if_owed(out, entry);

	/*
	 * The records first, each bounded: if one is too large, none of the
	 * change's lines is sent and the backfill's watcher hears nothing of it.
	 */
	switch (change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
			deform_row(newtuple, desc, &newvals, &newnulls);
			if (!append_record(out, txn, entry, newvals, newnulls, NULL, false))
				goto too_large_new;
			report_key(txn, entry, newvals, newnulls, false);
			*nrecords = 1;
			break;

		case REORDER_BUFFER_CHANGE_UPDATE:
			deform_row(newtuple, desc, &newvals, &newnulls);
			deform_row(oldtuple, desc, &oldvals, &oldnulls);

			for (int i = 0; i < entry->enc->ncolumns; i++)
			{
				int			off = entry->enc->columns[i].attnum - 1;

				if (!unreadable(entry, i, newvals, newnulls))
					continue;
				if (oldtuple != NULL && !oldnulls[off] &&
					!unreadable(entry, i, oldvals, oldnulls))
					newvals[off] = oldvals[off];	/* the same value */
				else
				{
					if (unchanged == NULL)
						unchanged = palloc0(sizeof(bool) * entry->enc->ncolumns);
					unchanged[i] = true;
				}
			}

			/* a row moved to another key: the old key is deleted */
			if (oldtuple != NULL && entry->nkeys > 0 &&
				key_changed(entry, desc, oldvals, oldnulls, newvals, newnulls))
			{
				null_unreadable(entry, oldvals, oldnulls);
				if (!append_record(out, txn, entry, oldvals, oldnulls, NULL, true))
					goto too_large_old;
				*nrecords = 1;
			}
			if (!append_record(out, txn, entry, newvals, newnulls, unchanged, false))
				goto too_large_new;
			if (*nrecords > 0)
				report_key(txn, entry, oldvals, oldnulls, false);
			report_key(txn, entry, newvals, newnulls, unchanged != NULL);
			(*nrecords)++;
			break;

		case REORDER_BUFFER_CHANGE_DELETE:
			deform_row(oldtuple, desc, &oldvals, &oldnulls);
			null_unreadable(entry, oldvals, oldnulls);
			if (!append_record(out, txn, entry, oldvals, oldnulls, NULL, true))
				goto too_large_old;
			report_key(txn, entry, oldvals, oldnulls, false);
			*nrecords = 1;
			break;

		default:
			break;
	}
	announced(entry, stream_lines);
	return stream_lines + *nrecords;

too_large_new:
	truncate_lines(out, start);
	change_too_large(txn, entry, rel, change, newvals, newnulls, unchanged);
	*nrecords = 0;
	return 0;

too_large_old:
	truncate_lines(out, start);
	change_too_large(txn, entry, rel, change, oldvals, oldnulls, NULL);
	*nrecords = 0;
	return 0;
}

int
cp_cdc_append_truncate(StringInfo out, CpCdcTxn *txn, Relation rel)
{
	CpCdcRelation *entry;
	int			nlines;

	if (txn->too_large)
		return 0;
	entry = cp_cdc_relcache_get(rel);
	if (entry->violation != CP_CDC_OK && txn->on_violation != NULL)
	{
		txn->on_violation(txn->on_violation_arg, rel, entry->violation);
		return 0;
	}
	if (!entry->emit)
		return 0;
	nlines = append_stream_if_owed(out, entry);
	announced(entry, nlines);
	if (txn->on_key != NULL && txn->watch_relid == entry->relid)
		txn->on_key(txn->on_key_arg, NULL, 0, false);
	appendBinaryStringInfo(out, entry->truncate_prefix, entry->truncate_prefix_len);
	cp_protocol_append_truncate_end(out, txn->end_lsn);
	return nlines + 1;
}
