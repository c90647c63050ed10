/*-------------------------------------------------------------------------
 *
 * reader.h
 *	  The chunked reader: a stream read in chunks, each in a short
 *	  transaction of its own, as the sync's role, under pinned settings.
 *
 * A method describes each of its streams once per run
 * (cp_stream_run_describe), then asks for one chunk at a time
 * (cp_read_chunk): the reader runs the chunk's query, encodes each row as a
 * RECORD's head and data object, hands it to the method, and says where
 * the next chunk begins.  No transaction, snapshot or cursor portal
 * outlives a chunk but a held cursor's (whose query ran at its
 * declaration), so the vacuum horizon is never held back for a whole
 * read.
 *
 * Three ways to read a stream:
 * - keyset: a table with a primary key (or replica identity index), by
 *   WHERE (key) > (last key read) ORDER BY key LIMIT n, in the key index's
 *   order (see describe_key_order);
 * - a held cursor (full refresh of views, matviews, foreign and keyless
 *   tables): its query runs once, into a tuplestore, at the commit of the
 *   transaction that declared it;
 * - ranges of blocks (CDC backfill of a keyless table): a TID range scan.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_READER_H
#define CALABI_PUSH_READER_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "storage/block.h"
#include "storage/itemptr.h"
#include "access/xlogdefs.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

#include "compat.h"
#include "catalog.h"
#include "encoder.h"
#include "worker.h"

/*
 * Reads run as the sync's role, in a restricted operation (what a view or a
 * policy calls cannot change the session), as a maintenance command does.
 */
#define CP_RUN_AS_FLAGS (SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION)

/* A stream of a run, and where its read is. */
struct CpStreamRun
{
	CpStreamDef *def;
	MemoryContext mcxt;			/* what describes it (reset per preparation) */
	char	   *nspname;
	char	   *relname;
	char	   *names_json;		/* "namespace":..,"name":.. */
	char	   *control_names;	/* "namespace":..,"stream":.. */
	char	   *record_prefix;	/* a RECORD up to its emitted_at (protocol.h) */
	char	   *select_query;	/* SELECT * FROM [ONLY] rel */

	/* how it is read: keyset pagination on a key, or else (by_blocks) */
	bool		keyset;
	bool		by_blocks;		/* keyless: ranges of blocks, not a held cursor */
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
	List	   *after;			/* keyset: key of the last row; blocks: next block */

	/* a row too large for any batch, found by the read */
	char	   *too_large;		/* NULL, or the row's key for messages */
	int64		too_large_bytes;	/* its values' size before encoding */

	/*
	 * The encoder, built by the first chunk read after it is set to NULL;
	 * a later chunk whose rows have another shape is CP_READ_RESHAPED.
	 */
	CpRowEncoder *enc;
	TupleDesc	enc_desc;		/* the row shape enc was built for */
	MemoryContext enccxt;		/* enc's, a child of mcxt */

	/* CDC backfill: where it began in the WAL (its refresh_start's lsn) */
	XLogRecPtr	refresh_lsn;
};

/* What a chunk's read came to. */
typedef enum CpReadResult
{
	CP_READ_OK,					/* read (maybe no row, maybe stopped early) */
	CP_READ_SKIPPED,			/* the caller's begin declined the chunk */
	CP_READ_REWRITTEN,			/* keyset, blocks: the table was rewritten since
								 * the read began (s->relfilenode) */
	CP_READ_RESHAPED,			/* the rows no longer have the encoder's shape */
} CpReadResult;

/*
 * Called in the chunk's transaction, under its snapshot, before the query:
 * anything but CP_READ_OK gives up the chunk with that result.
 */
typedef CpReadResult (*CpReadBeginFn) (void *arg, Snapshot snapshot);

/*
 * One row read: its line, from start in the chunk's out, holds the
 * record's head and its data object, closed; values and isnull the row.
 */
typedef void (*CpReadRowFn) (void *arg, int start, const Datum *values,
							 const bool *isnull);

/*
 * By blocks: choose which tuples of rel to read, from block first on, in
 * the chunk's transaction and under its snapshot: about max of them, into
 * tids (room for max + MaxHeapTuplesPerPage, in TID order), whole blocks
 * only.  Returns the block the next chunk begins with; *last: none left.
 */
typedef BlockNumber (*CpReadTidsFn) (void *arg, Relation rel, Snapshot snapshot,
									 BlockNumber first, int max,
									 ItemPointerData *tids, int *ntids,
									 bool *last);

typedef struct CpReadChunk
{
	/* set by the caller */
	int			max_rows;
	StringInfo	out;			/* where rows are encoded */
	int			line_room;		/* bytes a line takes after its data object */
	bool		restart_if_rewritten;	/* keyset, blocks: CP_READ_REWRITTEN */
	MemoryContext cxt;			/* the chunk's memory; the caller resets it */
	TimestampTz emitted_at;		/* 0: when the chunk is read; begin may set it */
	CpReadBeginFn begin;		/* or NULL */
	CpReadRowFn row;
	CpReadTidsFn tids;			/* by blocks: or NULL, every tuple */
	void	   *arg;

	/*
	 * By blocks: the relation whose blocks are read, when not the stream's
	 * own (a partition of it: the stream's privileges apply), and the query
	 * that reads its rows through the stream's relation; or 0 and NULL.
	 */
	Oid			block_relid;
	const char *block_query;

	/*
	 * A held cursor: the query it is opened with (its $n are the args,
	 * none NULL), when not the stream's SELECT; used by the chunk that
	 * opens it, the first after cp_read_close.
	 */
	const char *cursor_query;
	int			cursor_nargs;
	Oid		   *cursor_argtypes;
	Datum	   *cursor_args;

	/* set by the reader */
	int			rows;			/* rows handed to row */
	bool		exhausted;		/* nothing after them */
	List	   *after;			/* where the next chunk begins (keyset, blocks),
								 * in cxt; NIL: where this one did */
} CpReadChunk;

/* Open the stream's relation as the sync's role; errors name the fix. */
extern Relation cp_stream_run_open(CpRun *run, CpStreamRun *s);

/*
 * Describe stream idx (its names, prefixes, query and key) from rel, in a
 * transaction, into the stream's memory.
 */
extern void cp_stream_run_describe(CpRun *run, int idx, Relation rel);

/* Whether the acknowledged read used the key the table has now. */
extern bool cp_stream_run_same_key(CpStreamRun *s);

/* Read from the start: no position, the relation as it is now. */
extern void cp_stream_run_rewind(CpStreamRun *s);

/* The key of a row read (values), as the new s->after, in the run's memory. */
extern void cp_stream_run_remember_key(CpRun *run, CpStreamRun *s, const Datum *values);

/*
 * Read the next chunk of s: at most c->max_rows rows, fewer when out
 * reaches batch_bytes first (keyset, cursor), each row handed to c->row.
 * A row whose line would exceed batch_bytes ends a keyset chunk before it
 * or, met first or in any other read, is noted in s->too_large: the caller
 * then calls cp_stream_run_stop_too_large outside the transaction.
 */
extern CpReadResult cp_read_chunk(CpRun *run, CpStreamRun *s, CpReadChunk *c);

/*
 * Ordering by a btree operator family, whatever the search_path: the
 * operator of strategy for intype (errors name column), written as
 * OPERATOR(schema.name); and a column compared by it, "(col[::intype]
 * [COLLATE c])", with its parameter $param cast alike.  Returns the type
 * the two are compared as.
 */
extern Oid	cp_reader_operator(Oid opfamily, Oid intype, int16 strategy, const char *column);
extern void cp_reader_append_operator(StringInfo buf, Oid opno);
extern Oid	cp_reader_ordered_column(const char *quoted, Oid type, Oid intype,
									 Oid collation, int param, char **expr,
									 char **paramtext);

/* Drop the stream's held cursor, if it has one open. */
extern void cp_read_close(CpStreamRun *s);

/*
 * Outside any transaction: deliver what the batch holds and stop the sync
 * in error, naming the row too large for any batch.
 */
pg_noreturn extern void cp_stream_run_stop_too_large(CpRun *run, CpStreamRun *s);

#endif							/* CALABI_PUSH_READER_H */
