/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  A sync worker's run: what the reader, the delivery and the worker's
 *	  main loop share.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_WORKER_H
#define CALABI_PUSH_WORKER_H

#include "postgres.h"

#include "fmgr.h"

#include "batch.h"
#include "catalog.h"
#include "encoder.h"
#include "http.h"
#include "shmem.h"

typedef struct CpStreamRun
{
	CpStreamDef *def;
	MemoryContext mcxt;			/* what describes it (reset per preparation) */
	char	   *nspname;
	char	   *relname;
	char	   *names_json;		/* "namespace":..,"name":.. */
	char	   *control_names;	/* "namespace":..,"stream":.. */
	char	   *record_prefix;	/* {"type":"RECORD","record":{...,"emitted_at": */
	char	   *select_query;	/* SELECT * FROM [ONLY] rel */

	/* how it is read: keyset pagination on a key, or a held cursor */
	bool		keyset;
	int			nkeys;
	char	  **key_names;		/* as in the catalog */
	char	  **key_quoted;		/* quoted for queries */
	Oid		   *key_types;
	int32	   *key_typmods;
	int		   *key_columns;	/* 1-based, in the SELECT's result */
	FmgrInfo   *key_out;
	char	   *cursor_name;
	bool		cursor_open;

	/* where the current read is */
	int64		generation;
	int64		rows;
	Oid			relfilenode;
	List	   *after;			/* keyset: key of the last row, as text */

	CpRowEncoder *enc;			/* built from the first chunk's result */
	TupleDesc	enc_desc;		/* the row shape enc was built for */
} CpStreamRun;

typedef struct CpRun
{
	CpSyncDef  *sync;
	CpSyncSlot *slot;
	MemoryContext mcxt;			/* lives as long as the run */
	MemoryContext chunkcxt;		/* reset per chunk */
	MemoryContext deliverycxt;	/* reset per delivered batch */
	CpStreamRun *streams;
	int			nstreams;
	const char **stream_names;	/* names_json of each stream */
	bool		overwrite;
	CpBatch    *batch;			/* being filled */
	CpBatch    *inflight;		/* full, waiting to be sent (see delivery.c) */
	bool		inflight_prepared;	/* its lines are with the compressor */
	struct CpCompressor *compressor;	/* NULL: compress in this thread */
	CpHttpClient *http;
	int64		seq_next;		/* next Calabi-Batch-Seq to use */
	int64		seq_limit;		/* first number not reserved */
} CpRun;

/* full_refresh.c: read one stream to its end, flushing as batches fill */
extern void cp_full_refresh_stream(CpRun *run, int stream);

/*
 * delivery.c: cp_delivery_flush sends the batch in flight, and makes the
 * current batch the one in flight; final sends it too.
 */
extern bool cp_delivery_batch_full(CpRun *run);
extern void cp_delivery_flush(CpRun *run, bool final);

/* worker.c: publish the live state for sync_status */
extern void cp_worker_set_state(CpRun *run, CpRunState state, TimestampTz retry_at);
/* worker.c: sleep until then, serving signals (SIGTERM ends the process) */
extern void cp_worker_wait_until(TimestampTz until);
/* worker.c: the endpoint refused a batch: record it and stop the sync */
extern void cp_worker_stop_refused(CpRun *run, const char *message) pg_attribute_noreturn();

#endif							/* CALABI_PUSH_WORKER_H */
