/*-------------------------------------------------------------------------
 *
 * cdc_sync.h
 *	  A CDC sync's run: what its decoding side (cdc_sync.c) and its backfill
 *	  side (cdc_backfill.c) share.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_CDC_SYNC_H
#define CALABI_PUSH_CDC_SYNC_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "cdc_decoder.h"
#include "cdc_sink.h"
#include "reader.h"
#include "worker.h"

/* A change to the backfilled relation, kept until a chunk is placed. */
typedef struct CpCdcTouch
{
	TransactionId xid;			/* top-level transaction */
	XLogRecPtr	lsn;			/* its commit's end */
	bool		partial;		/* values left out ("unchanged") */
	char	   *key;			/* JSON array text; NULL: a truncate */
} CpCdcTouch;

typedef enum CpChunkState
{
	CP_CHUNK_NONE,				/* no chunk read */
	CP_CHUNK_WAITING,			/* read; its watermark not yet decoded */
	CP_CHUNK_REACHED			/* its watermark was decoded: place it */
} CpChunkState;

/* A chunk read by the backfill, waiting for its place in the stream. */
typedef struct CpCdcChunk
{
	CpChunkState state;
	int			stream;
	MemoryContext cxt;			/* reset per chunk */

	/* the snapshot it was read with: which transactions it contains */
	TransactionId xmin;
	TransactionId xmax;
	TransactionId *xip;
	int			xcnt;

	/* the rows: each an unfinished RECORD (data object left open) */
	StringInfoData rows;
	int		   *row_off;
	int		   *row_len;
	char	  **row_key;		/* JSON array text (keyed streams) */
	bool	   *row_dropped;
	int			nrows;
	int			maxrows;
	TimestampTz read_at;
	char	   *read_at_text;	/* as JSON, for _calabi_cdc_updated_at */

	/* the STREAM line for the rows' shape */
	char	   *stream_line;
	int			stream_line_len;
	char	   *signature;

	/* where the read continues after it */
	List	   *after;			/* text values (keyed) or one block number */
	bool		exhausted;

	/*
	 * Its watermark: a logical message (watermark_text), whose position is
	 * watermark_lsn once decoded; or, read on a standby (by_position), the
	 * position itself, taken after the snapshot (cdc_backfill.c).
	 */
	int64		watermark_seq;
	char		watermark_text[64];
	XLogRecPtr	watermark_lsn;
	bool		by_position;
} CpCdcChunk;

/* A decoded change too large to send (cdc_sync.c), for the error. */
typedef struct CpCdcTooLarge
{
	char	   *nspname;
	char	   *relname;
	char	   *key;			/* "(a)=(1)", or "" without a key */
	int64		bytes;			/* its values' size before encoding */
	XLogRecPtr	lsn;			/* the change's */
	TransactionId xid;			/* its transaction's */
	XLogRecPtr	txn_end;		/* ... and the end of its commit record */
} CpCdcTooLarge;

/*
 * Whether a stream's changes were skipped under a cause since fixed, so that
 * the table is read again (cp_cdc_sink_violation): once per run.
 */
typedef enum CpReread
{
	CP_REREAD_NONE = 0,
	CP_REREAD_OWED,
	CP_REREAD_DONE
} CpReread;

typedef struct CpCdcRun
{
	CpDecoder  *decoder;
	char		slot_name[NAMEDATALEN];
	CpCdcSink	sink;

	/* the transaction being replayed */
	TransactionId txn_xid;
	XLogRecPtr	txn_end;
	TimestampTz txn_commit_time;
	int			txn_first_item; /* its first item in the current batch */
	bool	   *txn_touched;	/* per stream: it has lines */

	/* when a caught-up round last sent a partly filled batch */
	TimestampTz last_send_at;

	XLogRecPtr	decoded_lsn;	/* end of the last transaction decoded */
	XLogRecPtr	acked_lsn;		/* acknowledged and checkpointed */
	TimestampTz last_idle_save;
	XLogRecPtr	idle_floor;		/* WAL insert position after the last save */
	bool		delivered_since_save;	/* a checkpoint committed since */

	/* backfill (cdc_backfill.c) */
	int			backfill_stream;	/* -1: none under way */
	CpCdcChunk	chunk;
	MemoryContext touchcxt;
	List	   *touches;		/* CpCdcTouch *, of the backfilled relation */
	int			ntouches;
	bool		touches_overflow;
	int64		watermark_seq;
	int			rereads;		/* of the same chunk, in a row */
	bool		refresh_announced;	/* its refresh_start was sent */

	/* preconditions (cdc_sync.c) */
	XLogRecPtr	trusted_lsn;	/* changes committed before the start's check */
	char	   *reread;			/* per stream: a CpReread */
	TimestampTz recheck_at;		/* 0, or when to check the present catalog again */

	/* a change too large to send: the sync stops once decoding does */
	CpCdcTooLarge *too_large;
} CpCdcRun;

/* cdc_sync.c: stream index of a relation, -1 when not the sync's */
extern int	cp_cdc_stream_index(CpRun *run, Oid relid);
/* cdc_sync.c: append a stream's state item (its checkpoint) to the batch */
extern void cp_cdc_add_state(CpRun *run, int idx);

/*
 * cdc_precondition.c: check every stream against the present catalog (a
 * violation stops the sync); the sink's callbacks for a decoded change that
 * violates a precondition, or is too large to send; and the stop that
 * follows the latter once decoding has stopped.
 */
extern void cp_cdc_check_streams(CpRun *run);
extern void cp_cdc_sink_violation(void *arg, Relation rel, int violation);
extern void cp_cdc_sink_too_large(void *arg, Relation rel, XLogRecPtr lsn,
								  const char *key, int64 bytes);
pg_noreturn extern void cp_cdc_stop_too_large(CpRun *run);

/* cdc_backfill.c */
extern void cp_cdc_backfill_init(CpRun *run);
extern bool cp_cdc_backfill_wants_chunk(CpRun *run);
extern void cp_cdc_backfill_read_chunk(CpRun *run);
extern void cp_cdc_backfill_place_chunk(CpRun *run);
/*
 * Whether the chunk is to be placed now (CP_CHUNK_REACHED): its watermark
 * was decoded, or, read on a standby, the decoder has read up to its
 * position.  Cheap: asked after every record decoded.
 */
extern bool cp_cdc_backfill_reached(CpRun *run);
extern void cp_cdc_backfill_touch(void *arg, const char *key, int len, bool partial);
extern void cp_cdc_backfill_state(CpRun *run, int idx, StringInfo state);
extern void cp_cdc_backfill_restart(CpRun *run, int idx);

#endif							/* CALABI_PUSH_CDC_SYNC_H */
