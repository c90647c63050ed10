/*-------------------------------------------------------------------------
 *
 * cdc_sink.h
 *	  Where the output plugin's lines go when a sync worker decodes.
 *
 * Called through the SQL functions, the plugin writes each line as a row;
 * a sync worker decoding in its own process registers a sink instead and
 * receives the lines, the transaction boundaries and the logical messages
 * (its watermarks) directly, without the write callbacks' copies.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_CDC_SINK_H
#define CALABI_PUSH_CDC_SINK_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "replication/reorderbuffer.h"
#include "utils/relcache.h"

#include "cdc_change.h"

typedef struct CpCdcSink
{
	void	   *arg;
	/* a transaction begins replaying; the sink may set ctxn's observer */
	void		(*begin) (void *arg, ReorderBufferTXN *txn, CpCdcTxn *ctxn);
	/* where the lines of the next change go: written in place, no copy */
	StringInfo	(*buffer) (void *arg);
	/*
	 * The nlines lines of one change (or truncate) of rel, '\n'-terminated:
	 * buf from start.  The last nrecords of them are RECORDs; any before
	 * are a STREAM or a CONTROL.
	 */
	void		(*lines) (void *arg, Oid relid, StringInfo buf, int start,
						  int nlines, int nrecords);
	void		(*commit) (void *arg, ReorderBufferTXN *txn);
	/* a non-transactional logical message: no catalog access here */
	void		(*message) (void *arg, XLogRecPtr lsn, const char *prefix,
							Size size, const char *content);
} CpCdcSink;

/* Set by a sync worker before it creates its decoding context. */
extern CpCdcSink *cp_cdc_sink;

#endif							/* CALABI_PUSH_CDC_SINK_H */
