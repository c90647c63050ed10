/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  Batches of NDJSON messages with per-line stream states (see batch.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <zlib.h>

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "batch.h"

void
cp_batch_init(CpBatch *batch, MemoryContext mcxt)
{
	MemoryContext oldcontext = MemoryContextSwitchTo(mcxt);

	memset(batch, 0, sizeof(*batch));
	initStringInfo(&batch->lines);
	initStringInfo(&batch->states);
	batch->maxitems = 1024;
	batch->items = palloc(sizeof(CpBatchItem) * batch->maxitems);
	MemoryContextSwitchTo(oldcontext);
}

void
cp_batch_reset(CpBatch *batch)
{
	resetStringInfo(&batch->lines);
	resetStringInfo(&batch->states);
	batch->nitems = 0;
	batch->nrecords = 0;
	batch->first_at = 0;
}

static CpBatchItem *
new_item(CpBatch *batch, int stream)
{
	CpBatchItem *item;

	if (batch->nitems == batch->maxitems)
	{
		batch->maxitems *= 2;
		batch->items = repalloc(batch->items, sizeof(CpBatchItem) * batch->maxitems);
	}
	if (batch->nitems == 0)
		batch->first_at = GetCurrentTimestamp();
	item = &batch->items[batch->nitems++];
	memset(item, 0, sizeof(*item));
	item->stream = stream;
	item->line_off = batch->lines.len;
	return item;
}

int
cp_batch_line_begin(CpBatch *batch)
{
	return batch->lines.len;
}

void
cp_batch_line_end(CpBatch *batch, int start, int stream, bool is_record)
{
	CpBatchItem *item;

	appendStringInfoCharMacro(&batch->lines, '\n');
	item = new_item(batch, stream);
	item->line_off = start;
	item->line_len = batch->lines.len - start;
	item->is_record = is_record;
	if (is_record)
		batch->nrecords++;
}

void
cp_batch_set_state(CpBatch *batch, const char *state, int len)
{
	CpBatchItem *item = &batch->items[batch->nitems - 1];

	item->state_off = batch->states.len;
	item->state_len = len;
	appendBinaryStringInfo(&batch->states, state, len);
}

void
cp_batch_add_state(CpBatch *batch, int stream, const char *state, int len)
{
	new_item(batch, stream);
	cp_batch_set_state(batch, state, len);
}

void
cp_batch_last_states(const CpBatch *batch, int from, int to, int *last_item,
					 int nstreams)
{
	for (int s = 0; s < nstreams; s++)
		last_item[s] = -1;
	for (int i = from; i < to; i++)
		if (batch->items[i].state_len > 0)
			last_item[batch->items[i].stream] = i;
}

/* gzip src into dst (replacing its contents) */
static void
gzip_into(const char *src, int len, StringInfo dst)
{
	z_stream	zs;
	int			rc;

	memset(&zs, 0, sizeof(zs));
	/*
	 * Level 1: the body is re-read by nobody but the endpoint, and speed
	 * matters more than the last few percent of size on a LAN or WAN link
	 * that already carries far less than the uncompressed JSON.
	 */
	if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8,
					 Z_DEFAULT_STRATEGY) != Z_OK)
		elog(ERROR, "deflateInit2 failed");
	resetStringInfo(dst);
	enlargeStringInfo(dst, deflateBound(&zs, len) + 1);
	zs.next_in = (Bytef *) src;
	zs.avail_in = len;
	zs.next_out = (Bytef *) dst->data;
	zs.avail_out = dst->maxlen - 1;
	rc = deflate(&zs, Z_FINISH);
	if (rc != Z_STREAM_END)
	{
		deflateEnd(&zs);
		elog(ERROR, "gzip compression failed: %d", rc);
	}
	dst->len = zs.total_out;
	dst->data[dst->len] = '\0';
	deflateEnd(&zs);
}

int
cp_batch_body(const CpBatch *batch, int from, int to, int64 batch_seq,
			  const char *const *stream_names, int nstreams, bool gzip,
			  StringInfo body)
{
	StringInfoData plain;
	int		   *last = palloc(sizeof(int) * Max(nstreams, 1));
	int			records = 0;
	bool		first = true;
	int			start = -1,
				stop = -1;

	/* the lines of [from, to) are contiguous in batch->lines */
	for (int i = from; i < to; i++)
	{
		const CpBatchItem *item = &batch->items[i];

		if (item->line_len == 0)
			continue;
		if (start < 0)
			start = item->line_off;
		stop = item->line_off + item->line_len;
		if (item->is_record)
			records++;
	}

	initStringInfo(&plain);
	if (start >= 0)
		appendBinaryStringInfo(&plain, batch->lines.data + start, stop - start);

	cp_batch_last_states(batch, from, to, last, nstreams);
	appendStringInfo(&plain, "{\"type\":\"STATE\",\"state\":{\"batch_seq\":" INT64_FORMAT
					 ",\"streams\":[", batch_seq);
	for (int s = 0; s < nstreams; s++)
	{
		const CpBatchItem *item;

		if (last[s] < 0)
			continue;
		item = &batch->items[last[s]];
		if (!first)
			appendStringInfoChar(&plain, ',');
		first = false;
		appendStringInfo(&plain, "{%s,\"state\":", stream_names[s]);
		appendBinaryStringInfo(&plain, batch->states.data + item->state_off,
							   item->state_len);
		appendStringInfoChar(&plain, '}');
	}
	appendStringInfoString(&plain, "]}}\n");
	pfree(last);

	if (gzip)
	{
		gzip_into(plain.data, plain.len, body);
		pfree(plain.data);
	}
	else
	{
		resetStringInfo(body);
		appendBinaryStringInfo(body, plain.data, plain.len);
		pfree(plain.data);
	}
	return records;
}
