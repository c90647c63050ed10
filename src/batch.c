/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  Batches of NDJSON messages with per-line stream states (see batch.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "batch.h"
#include "protocol.h"

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
	appendStringInfoCharMacro(&batch->lines, '\n');
	cp_batch_line_written(batch, start, batch->lines.len - start, stream,
						  is_record);
}

void
cp_batch_line_written(CpBatch *batch, int start, int len, int stream,
					  bool is_record)
{
	CpBatchItem *item;

	item = new_item(batch, stream);
	item->line_off = start;
	item->line_len = len;
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
		if (batch->items[i].state_len > 0 && batch->items[i].stream >= 0)
			last_item[batch->items[i].stream] = i;
}

void
cp_batch_set_position(CpBatch *batch, uint64 position)
{
	Assert(batch->nitems > 0);
	batch->items[batch->nitems - 1].position = position;
}

uint64
cp_batch_position(const CpBatch *batch, int from, int to)
{
	uint64		position = 0;

	for (int i = from; i < to; i++)
		position = Max(position, batch->items[i].position);
	return position;
}

void
cp_batch_move_tail(CpBatch *from, int first, CpBatch *to)
{
	for (int i = first; i < from->nitems; i++)
	{
		const CpBatchItem *src = &from->items[i];
		CpBatchItem *dst = new_item(to, src->stream);

		dst->is_record = src->is_record;
		dst->position = src->position;
		dst->line_len = src->line_len;
		appendBinaryStringInfo(&to->lines, from->lines.data + src->line_off,
							   src->line_len);
		if (src->is_record)
			to->nrecords++;
		if (src->state_len > 0)
		{
			dst->state_off = to->states.len;
			dst->state_len = src->state_len;
			appendBinaryStringInfo(&to->states, from->states.data + src->state_off,
								   src->state_len);
		}
	}
	if (first < from->nitems)
	{
		from->lines.len = from->items[first].line_off;
		from->lines.data[from->lines.len] = '\0';
		for (int i = first; i < from->nitems; i++)
			if (from->items[i].is_record)
				from->nrecords--;
		from->nitems = first;
	}
}

int
cp_batch_lines(const CpBatch *batch, int from, int to, int *start, int *len)
{
	int			records = 0;
	int			first = -1,
				stop = -1;

	for (int i = from; i < to; i++)
	{
		const CpBatchItem *item = &batch->items[i];

		if (item->line_len == 0)
			continue;
		if (first < 0)
			first = item->line_off;
		stop = item->line_off + item->line_len;
		if (item->is_record)
			records++;
	}
	*start = first < 0 ? 0 : first;
	*len = first < 0 ? 0 : stop - first;
	return records;
}

void
cp_batch_state_line(const CpBatch *batch, int from, int to, int64 batch_seq,
					const char *const *stream_names, int nstreams,
					StringInfo line)
{
	int		   *last = palloc(sizeof(int) * Max(nstreams, 1));
	const char **states = palloc(sizeof(char *) * Max(nstreams, 1));
	int		   *state_lens = palloc(sizeof(int) * Max(nstreams, 1));

	cp_batch_last_states(batch, from, to, last, nstreams);
	for (int s = 0; s < nstreams; s++)
	{
		const CpBatchItem *item = last[s] < 0 ? NULL : &batch->items[last[s]];

		states[s] = item != NULL ? batch->states.data + item->state_off : NULL;
		state_lens[s] = item != NULL ? item->state_len : 0;
	}
	resetStringInfo(line);
	cp_protocol_state_line(line, batch_seq, nstreams, stream_names, states, state_lens);
	pfree(last);
	pfree(states);
	pfree(state_lens);
}
