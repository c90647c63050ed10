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

#include "access/xlogdefs.h"

#include "compat.h"
#include "batch.h"
#include "catalog.h"
#include "encoder.h"
#include "http.h"
#include "shmem.h"

/* A stream of the run, and where its read is (reader.h). */
typedef struct CpStreamRun CpStreamRun;

/*
 * Acknowledgements whose checkpoint waits, merged: received while decoding
 * (the replay transaction cannot commit one), or, where the method groups
 * them (CpRun.group_acks), until the oldest is old enough.
 */
typedef struct CpDeferredAck
{
	bool		pending;
	TimestampTz since;			/* when the first of them arrived */
	char	  **states;			/* per stream: last acknowledged state, or NULL */
	int64		batches;
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

	/*
	 * Called by delivery once the checkpoint of an acknowledged batch is
	 * committed, with the WAL position it reached; set by a method that
	 * follows acknowledgements (CDC: its slot), so delivery knows no method.
	 */
	void		(*acknowledged) (struct CpRun *run, XLogRecPtr position);

	/* CDC (cdc_sync.c) */
	struct CpCdcRun *cdc;		/* NULL for other methods */
	bool		in_decoding;	/* inside a replayed transaction: no catalog writes */
	bool		group_acks;		/* acknowledgements wait in deferred (CDC) */
	XLogRecPtr	sent_lsn;		/* position of the last batch sent */
	CpDeferredAck deferred;
	int64		abandoned_seq;	/* a batch given up unanswered at a stop, or 0 */
} CpRun;

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
/*
 * delivery.c: whether anything is batched, sent or in flight,
 * unacknowledged, or acknowledged but not yet checkpointed; whether
 * anything is batched, sent or in flight.
 */
extern bool cp_delivery_pending(CpRun *run);
extern bool cp_delivery_unsent(CpRun *run);
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

/* worker.c: publish the live state for sync_status */
extern void cp_worker_set_state(CpRun *run, CpRunState state, TimestampTz retry_at);

/*
 * A CDC sync with a failover slot waits (or no longer waits) for the
 * standbys of synchronized_standby_slots: sync_status shows
 * waiting_for_standbys instead of running meanwhile, whatever else sets
 * the state to running.
 */
extern void cp_worker_standby_wait(bool waiting);
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
 * (cp_http_wait_limit) give up CP_STOP_GRACE_MS after they saw the
 * request.  Code that reads the user's tables or waits for their locks is
 * cancelled instead: the statement or wait under way ends with
 * ERRCODE_QUERY_CANCELED.  The caller's PG_CATCH asks cp_worker_stop_caught
 * whether the error is such a stop, then cp_worker_stop_recover leaves any
 * transaction and the error behind (mode DEFER from then on, so a second
 * SIGTERM changes nothing).
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
pg_noreturn extern void cp_worker_stop_refused(CpRun *run, const char *message,
											   const char *message_redacted);

#endif							/* CALABI_PUSH_WORKER_H */
