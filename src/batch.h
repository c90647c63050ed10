/*-------------------------------------------------------------------------
 *
 * batch.h
 *	  A batch being built: NDJSON message lines, and for each line the state
 *	  its stream reaches once the line is delivered.
 *
 * Keeping a state per line is what lets a 413 split a batch anywhere: each
 * part gets a STATE that reaches exactly its own last line.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_BATCH_H
#define CALABI_PUSH_BATCH_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"

typedef struct CpBatchItem
{
	int			line_off;		/* in lines */
	int			line_len;		/* with its '\n'; 0: state only */
	int			state_off;		/* in states */
	int			state_len;		/* 0: the stream's state does not move */
	int			stream;			/* index of the stream in the run; -1: none */
	bool		is_record;
	uint64		position;		/* CDC: WAL position reached once delivered; 0: none */
} CpBatchItem;

typedef struct CpBatch
{
	StringInfoData lines;
	StringInfoData states;
	CpBatchItem *items;
	int			nitems;
	int			maxitems;
	int			nrecords;
	TimestampTz first_at;		/* when the first item was added */
} CpBatch;

extern void cp_batch_init(CpBatch *batch, MemoryContext mcxt);
extern void cp_batch_reset(CpBatch *batch);

/*
 * Append a line: cp_batch_line_begin returns where it starts; the caller
 * appends the JSON message to batch->lines and calls cp_batch_line_end.
 */
extern int	cp_batch_line_begin(CpBatch *batch);
extern void cp_batch_line_end(CpBatch *batch, int start, int stream,
							  bool is_record);
/* The same for a line already in batch->lines with its '\n': len bytes. */
extern void cp_batch_line_written(CpBatch *batch, int start, int len,
								  int stream, bool is_record);
/* The state the stream of the last item reaches (a JSON object). */
extern void cp_batch_set_state(CpBatch *batch, const char *state, int len);
/* An item that only moves a stream's state. */
extern void cp_batch_add_state(CpBatch *batch, int stream, const char *state,
							   int len);

/*
 * CDC: the WAL position the sync reaches once the last item is delivered
 * (every transaction committed before it is in this or an earlier batch).
 */
extern void cp_batch_set_position(CpBatch *batch, uint64 position);
/* The greatest position among items [from, to); 0 when none. */
extern uint64 cp_batch_position(const CpBatch *batch, int from, int to);

/*
 * Move items [first, nitems) of from to the end of to (a transaction that
 * must not be split goes whole into the next batch).
 */
extern void cp_batch_move_tail(CpBatch *from, int first, CpBatch *to);

/*
 * The lines of items [from, to), contiguous in batch->lines: where they
 * start and how long they are; returns the number of records among them.
 */
extern int	cp_batch_lines(const CpBatch *batch, int from, int to, int *start,
						   int *len);

/*
 * The STATE line closing a body for items [from, to): batch_seq and the
 * last state of each stream in the range.  stream_names gives each stream's
 * "namespace":..,"name":.. members (JSON text).
 */
extern void cp_batch_state_line(const CpBatch *batch, int from, int to,
								int64 batch_seq, const char *const *stream_names,
								int nstreams, StringInfo line);

/* The last state of each stream in [from, to): -1 or the item index. */
extern void cp_batch_last_states(const CpBatch *batch, int from, int to,
								 int *last_item, int nstreams);

#endif							/* CALABI_PUSH_BATCH_H */
