/*-------------------------------------------------------------------------
 *
 * oversize.h
 *	  A record too large for any batch: how the messages that stop a sync
 *	  on it describe its row.
 *
 * A record is never split across batches, so a row (read by a full refresh
 * or a CDC backfill) or a change (decoded from the WAL) whose record would
 * exceed the sync's batch_bytes stops the sync; the encoder finds it
 * (cp_encode_row_bounded), these say which row it is and how large, the
 * same way for every read path.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_OVERSIZE_H
#define CALABI_PUSH_OVERSIZE_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "lib/stringinfo.h"

/*
 * The size of a row's values before encoding: TOASTed values by their size
 * uncompressed, read from the TOAST pointer without fetching the value
 * (which decoding could not do).  Dropped columns and nulls count nothing.
 */
extern int64 cp_oversize_values_bytes(TupleDesc desc, const Datum *values,
									  const bool *isnull);

/*
 * Append "(a, b)=(1, x)", as a unique violation shows a key: names already
 * quoted, texts the values' output (NULL: null), each cut at 64 bytes.
 */
extern void cp_oversize_append_key(StringInfo buf, int nkeys,
								   const char *const *quoted_names,
								   const char *const *texts);

#endif							/* CALABI_PUSH_OVERSIZE_H */
