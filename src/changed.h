/*-------------------------------------------------------------------------
 *
 * changed.h
 *	  What changed since a run: a run's snapshot with 64-bit transaction
 *	  ids, the WAL position before it, and the page scan that finds the
 *	  tuples written by transactions that snapshot did not see.
 *
 * A tuple is new to a run when the transaction that wrote it (its xmin,
 * which may be a subtransaction) was not visible to the previous run's
 * snapshot ("since"): at or after its xmax, or running when it was taken.
 * A transaction that was open during the previous run and committed after
 * it (a late committer) is therefore new, wherever its xid lies; one that
 * had committed is not.  Ids are kept as 64-bit FullTransactionIds, so the
 * test holds across wraparound; a tuple's 32-bit xmin is widened against
 * the next transaction id, which is exact for every tuple not frozen (its
 * xmin is at most 2^31 old) and for a tuple frozen since the previous run
 * (freezing keeps the raw xmin).
 *
 * Pages: a page's LSN is the end of the last WAL record that changed it.
 * Each run keeps a mark: the WAL insert position (on a hot standby, the
 * replayed one), then the next transaction id, read in that order before
 * its snapshot.  A transaction
 * whose id is at or above a mark's next id was assigned after that mark's
 * position was read, so every page it changed has an LSN above that
 * position.  Every transaction new to a run has an id at or above the
 * since snapshot's xmin; so a page whose LSN is at or below the position of
 * the latest mark whose next id is at or below since's xmin holds no new
 * tuple (cp_changed_page_floor), and is not looked into.  Pages written
 * without WAL (unlogged relations, a relation written in the transaction
 * that created it under wal_level = minimal) carry no such LSN: the caller
 * passes no floor for them (every page examined).
 *
 * Which pages are read at all: reading every page's header to compare its
 * LSN costs what the table's size costs, whatever changed.  Every change
 * to a logged page is a WAL record that references the block (the record
 * whose end becomes the page's LSN), so the blocks referenced by the WAL
 * from the floor on are a superset of the pages whose LSN is above it
 * (changed_wal.h reads them): a scan given that set (CpChangedBlocks)
 * reads only those pages, and still skips those among them whose LSN is at
 * or below the floor.  The set holds the blocks the relation had when it
 * was made; a block past them (the relation grew) is read and judged by
 * its LSN.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_CHANGED_H
#define CALABI_PUSH_CHANGED_H

#include "postgres.h"

#include "access/transam.h"
#include "access/xlogdefs.h"
#include "nodes/pg_list.h"
#include "storage/block.h"
#include "storage/itemptr.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

/* A run's snapshot, as far as the next run needs it. */
typedef struct CpChangedSnapshot
{
	FullTransactionId xmin;
	FullTransactionId xmax;
	/*
	 * Every id in [xmin, xmax) counts as running: the snapshot did not know
	 * all subtransactions (overflowed), or there were too many to keep.
	 * Conservative: a tuple of such an id is sent again, none is lost.
	 */
	bool		all_running;
	int			nxip;
	FullTransactionId *xip;		/* running, with subtransactions; sorted */
} CpChangedSnapshot;

/* The WAL insert position, and the next transaction id read after it. */
typedef struct CpChangedMark
{
	FullTransactionId next;
	XLogRecPtr	lsn;
} CpChangedMark;

/* What a page scan looked at. */
typedef struct CpChangedCounts
{
	int64		pages_examined; /* whose tuples were looked at */
	int64		pages_skipped;	/* whose LSN, or the WAL, showed no change */
} CpChangedCounts;

/*
 * A set of blocks of one relation: one bit per block of the relation as it
 * was when the set was made (nblocks), so bounded by its size: 1 MB per
 * 8,388,608 blocks, 64 GB of table at 8 kB a block.
 */
typedef struct CpChangedBlocks
{
	BlockNumber nblocks;
	uint8		bits[FLEXIBLE_ARRAY_MEMBER];
} CpChangedBlocks;

/*
 * In a transaction: the mark, then a new snapshot (allocated in the
 * current memory context).
 */
extern void cp_changed_take(CpChangedSnapshot *snap, CpChangedMark *mark);

/*
 * A snapshot as text, "xmin:xmax:xip,xip" as pg_snapshot writes it, or
 * "xmin:xmax:*" when every id in between counts as running; and back
 * (false: not such a text).
 */
extern char *cp_changed_snapshot_text(const CpChangedSnapshot *snap);
extern bool cp_changed_snapshot_parse(const char *text, CpChangedSnapshot *snap);

/*
 * Marks as text, "next@lsn,...", oldest first; and back (NIL when text is
 * NULL or not such a text: no page is skipped then).
 */
extern char *cp_changed_marks_text(List *marks);
extern List *cp_changed_marks_parse(const char *text);

/*
 * The position at or below which a page holds nothing new to a run that
 * compares with since; InvalidXLogRecPtr when no mark tells (every page is
 * examined).
 */
extern XLogRecPtr cp_changed_page_floor(List *marks, const CpChangedSnapshot *since);

/*
 * The marks a later run can still use, with mark added: those from the
 * one since's floor uses on, at most CP_CHANGED_MAX_MARKS.
 */
extern List *cp_changed_marks_add(List *marks, const CpChangedSnapshot *since,
								  const CpChangedMark *mark);

/* Whether a snapshot is too old to judge the tuples of now (2^31 ids). */
extern bool cp_changed_too_old(const CpChangedSnapshot *since);

/* An empty set for a relation of nblocks blocks (current memory context). */
extern CpChangedBlocks *cp_changed_blocks_create(BlockNumber nblocks);

/* Add blk (one at or past the set's nblocks is in it already). */
extern void cp_changed_blocks_add(CpChangedBlocks *blocks, BlockNumber blk);

/*
 * Scan rel from block first under snapshot: the TIDs of its visible
 * tuples new since "since" (all visible tuples when since is NULL), whole
 * pages at a time, until max are found or the relation ends; pages with
 * an LSN at or below floor are skipped, and so are, unread, the blocks
 * not in blocks (when not NULL).  Returns the next block to scan; *last
 * when none is left.  tids has room for max + MaxHeapTuplesPerPage.
 */
extern BlockNumber cp_changed_scan(Relation rel, Snapshot snapshot,
								   const CpChangedSnapshot *since,
								   XLogRecPtr floor,
								   const CpChangedBlocks *blocks,
								   BlockNumber first, int max,
								   ItemPointerData *tids, int *ntids,
								   bool *last, CpChangedCounts *counts);

#endif							/* CALABI_PUSH_CHANGED_H */
