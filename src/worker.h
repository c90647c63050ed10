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

#include "access/tupdesc.h"
#include "access/xlogdefs.h"
#include "fmgr.h"
#include "utils/relcache.h"

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
	/*
	 * The keyset query's condition "after the last key" ($1..$nkeys) and
	 * its ORDER BY list, both from the key index's btree operator families
	 * and collations (see cp_stream_run_describe).
	 */
	char	   *key_after;
	char	   *key_order;
	char	   *cursor_name;
	bool		cursor_open;

	/* where the current read is */
	int64		generation;
	int64		rows;
	Oid			relfilenode;
	List	   *after;			/* keyset: key of the last row, as text */

	/* a row too large for any batch, found by the read (see row_too_large) */
	char	   *too_large;		/* NULL, or the row's key for messages */
	int64		too_large_bytes;	/* its values' size before encoding */

	CpRowEncoder *enc;			/* built from the first chunk's result */
	TupleDesc	enc_desc;		/* the row shape enc was built for */

	/* CDC backfill: where it began in the WAL (its refresh_start's lsn) */
	XLogRecPtr	refresh_lsn;
} CpStreamRun;

/*
 * Acknowledgements received while decoding: the replay transaction cannot
 * commit a checkpoint, so they wait, merged, until the record is decoded.
 */
typedef struct CpDeferredAck
{
	bool		pending;
	char	  **states;			/* per stream: last acknowledged state, or NULL */
	int64		records;
	int64		bytes;
	int64		retries;
	XLogRecPtr	position;
} CpDeferredAck;

/* A request started in the background (delivery.c). */
typedef struct CpSend
{
	bool		active;
	StringInfoData body;		/* gzip: the body; else the STATE line */
	CpHttpRequest req;
	int			records;
} CpSend;

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
	CpBatch    *sending;		/* sent, its answer not yet awaited */
	CpSend		send;
	struct CpCompressor *compressor;	/* NULL: compress in this thread */
	CpHttpClient *http;
	int64		seq_next;		/* next Calabi-Batch-Seq to use */
	int64		seq_limit;		/* first number not reserved */

	/* CDC (cdc_sync.c) */
	struct CpCdcRun *cdc;		/* NULL for other methods */
	bool		in_decoding;	/* inside a replayed transaction: no catalog writes */
	XLogRecPtr	sent_lsn;		/* position of the last batch sent */
	CpDeferredAck deferred;
	int64		abandoned_seq;	/* a batch given up unanswered at a stop, or 0 */
} CpRun;

/*
 * Reads run as the sync's role, in a restricted operation (what a view or a
 * policy calls cannot change the session), as a maintenance command does.
 */
#define CP_RUN_AS_FLAGS (SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION)

/* full_refresh.c: read one stream to its end, flushing as batches fill */
extern void cp_full_refresh_stream(CpRun *run, int stream);

/*
 * full_refresh.c, for every method that reads a stream: describe it (its
 * names, prefixes, query and key) from rel, in a transaction; the keyset
 * query for the rows after s->after (args: the key as parameters); the
 * result columns of the key; the key of a row as the new s->after.
 */
extern void cp_stream_run_describe(CpRun *run, int idx, Relation rel);
/* full_refresh.c: open the stream's relation as the sync's role; errors name the fix */
extern Relation cp_stream_run_open(CpRun *run, CpStreamRun *s);
extern char *cp_keyset_query(CpStreamRun *s, int max_rows, Datum **args);
extern void cp_stream_run_key_columns(CpStreamRun *s, TupleDesc desc);
extern void cp_stream_run_remember_key(CpRun *run, CpStreamRun *s, const Datum *values);
/* full_refresh.c: whether the acknowledged read used the key the table has now */
extern bool cp_stream_run_same_key(CpStreamRun *s);
/*
 * full_refresh.c: a row whose JSON does not fit in a batch: note it (in a
 * transaction, its values at hand), then, outside any transaction, deliver
 * what the batch holds and stop the sync in error naming it.
 */
extern void cp_stream_run_note_too_large(CpRun *run, CpStreamRun *s, TupleDesc desc,
										 const Datum *values, const bool *isnull);
extern void cp_stream_run_stop_too_large(CpRun *run, CpStreamRun *s) pg_attribute_noreturn();

/*
 * delivery.c: cp_delivery_flush sends the batch in flight, and makes the
 * current batch the one in flight; final sends it too.
 */
extern bool cp_delivery_batch_full(CpRun *run);
extern void cp_delivery_flush(CpRun *run, bool final);

/*
 * delivery.c, for CDC: whether the batch reached its row or byte limit
 * (linger aside); send items [0, keep_from) of the current batch, keeping
 * the rest (a transaction is not split across batches unless it alone
 * exceeds the limits); make sure n batch numbers are reserved (none can be
 * while decoding); commit the acknowledgements deferred while decoding.
 */
extern bool cp_delivery_batch_at_limit(CpRun *run);
/* delivery.c: whether anything is batched, sent or in flight, unacknowledged */
extern bool cp_delivery_pending(CpRun *run);
extern void cp_delivery_flush_upto(CpRun *run, int keep_from);
extern void cp_delivery_reserve(CpRun *run, int n);
extern void cp_delivery_commit_deferred(CpRun *run);

/*
 * delivery.c, for a clean stop: await the answer to the batch sent in the
 * background, if any (one attempt, no retry, bounded by cp_http_wait_limit)
 * and checkpoint it when accepted.  False when it was not: *seq is its
 * number and *result says why.
 */
extern bool cp_delivery_await_sent(CpRun *run, int64 *seq, CpHttpResult *result);

/* cdc_sync.c: a CDC sync's run; never returns but by error or signal */
extern void cp_cdc_run(CpRun *run);
/* cdc_sync.c: the endpoint acknowledged (and the catalog holds) position */
extern void cp_cdc_acknowledged(CpRun *run, XLogRecPtr position);

/* worker.c: publish the live state for sync_status */
extern void cp_worker_set_state(CpRun *run, CpRunState state, TimestampTz retry_at);
/* worker.c: a batch was acknowledged: reset the restart backoff */
extern void cp_worker_acknowledged(void);
/* worker.c: publish a CDC sync's positions and the oldest unacknowledged commit */
extern void cp_worker_report_cdc(XLogRecPtr sent, XLogRecPtr acked,
								 TimestampTz pending_since);
/* worker.c: sleep until then, serving signals (and stop points, see below) */
extern void cp_worker_wait_until(TimestampTz until);

/*
 * worker.c: what SIGTERM does in the code running now.  DIE, the default,
 * ends the process at once, as die() does.  Code that can stop cleanly
 * defers it: SIGTERM only notes the request (and sets the latch), and the
 * code stops at its next stop point, where cp_worker_stop_point raises an
 * ERROR (ERRCODE_ADMIN_SHUTDOWN) for it to catch; waits for an answer
 * (http.c) give up CP_STOP_GRACE_MS after they saw the request.  Code that
 * reads the user's tables or waits for their locks is cancelled instead:
 * the statement or wait under way ends with ERRCODE_QUERY_CANCELED.  The
 * caller's PG_CATCH asks cp_worker_stop_caught whether the error is such a
 * stop, then cp_worker_stop_recover leaves any transaction and the error
 * behind (mode DEFER from then on, so a second SIGTERM changes nothing).
 */
typedef enum CpStopMode
{
	CP_STOP_DIE,
	CP_STOP_CANCEL,
	CP_STOP_DEFER
} CpStopMode;

extern CpStopMode cp_worker_set_stop_mode(CpStopMode mode);
extern bool cp_worker_stop_requested(void);
extern void cp_worker_stop_point(void);
extern bool cp_worker_stop_caught(void);
extern void cp_worker_stop_recover(MemoryContext cxt);

/* how long a clean stop awaits the answer to a batch sent, at most */
#define CP_STOP_GRACE_MS 5000
/*
 * worker.c: the error being raised stops the sync in 'error' (until
 * start_sync or resync) instead of restarting its worker.
 */
extern void cp_worker_stop_on_error(void);
/*
 * worker.c: the endpoint refused a batch: record it and stop the sync.
 * message_redacted: the message without the endpoint's response, for roles
 * that may not see it (NULL: message holds none).
 */
extern void cp_worker_stop_refused(CpRun *run, const char *message,
								   const char *message_redacted) pg_attribute_noreturn();

#endif							/* CALABI_PUSH_WORKER_H */
