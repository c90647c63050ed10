/*-------------------------------------------------------------------------
 *
 * changed.c
 *	  What changed since a run (see changed.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/bufpage.h"
#include "utils/rel.h"

#include "changed.h"

/*
 * Ids kept of the transactions running at a snapshot: beyond this many the
 * snapshot counts every id between its xmin and xmax as running.
 */
#define CP_CHANGED_MAX_XIP 1024

/* Marks kept for later runs (one per run while a transaction stays open). */
#define CP_CHANGED_MAX_MARKS 16

/*
 * Pages a scan reads in one chunk, so that a chunk's transaction (and its
 * snapshot) stays short even where almost nothing changed.  Blocks passed
 * over unread (not in the WAL's set) cost a bit test: not counted.
 */
#define CP_CHANGED_PAGES_PER_CHUNK 16384

/*
 * xid as a full id, xid being at most 2^32 - 1 transactions before next
 * (every xid of a snapshot or of a tuple is before the next id).
 */
static FullTransactionId
widen(FullTransactionId next, TransactionId xid)
{
	uint64		n = U64FromFullTransactionId(next);
	uint32		back = (uint32) n - xid;

	if (back > n)
		return FullTransactionIdFromU64(FirstNormalTransactionId);
	return FullTransactionIdFromU64(n - back);
}

static int
compare_full(const void *a, const void *b)
{
	uint64		x = U64FromFullTransactionId(*(const FullTransactionId *) a);
	uint64		y = U64FromFullTransactionId(*(const FullTransactionId *) b);

	return x < y ? -1 : x > y ? 1 : 0;
}

void
cp_changed_take(CpChangedSnapshot *snap, CpChangedMark *mark)
{
	Snapshot	s;
	FullTransactionId next;
	int			n;

	/*
	 * In this order: see changed.h.  On a hot standby the position is the
	 * end of the last record replayed: replay advances the next id past a
	 * record's transaction before it applies the record, and moves this
	 * position after, so the same holds.
	 */
	mark->lsn = RecoveryInProgress() ? GetXLogReplayRecPtr(NULL) : GetXLogInsertRecPtr();
	mark->next = ReadNextFullTransactionId();
	s = GetLatestSnapshot();
	/* every id of s is before it */
	next = ReadNextFullTransactionId();

	snap->xmin = widen(next, s->xmin);
	snap->xmax = widen(next, s->xmax);
	snap->nxip = 0;
	snap->xip = NULL;
	n = s->xcnt + s->subxcnt;
	snap->all_running = s->suboverflowed || s->takenDuringRecovery ||
		n > CP_CHANGED_MAX_XIP;
	if (snap->all_running || n == 0)
		return;
	snap->xip = palloc(sizeof(FullTransactionId) * n);
	for (int i = 0; i < s->xcnt; i++)
		snap->xip[snap->nxip++] = widen(next, s->xip[i]);
	for (int i = 0; i < s->subxcnt; i++)
		snap->xip[snap->nxip++] = widen(next, s->subxip[i]);
	qsort(snap->xip, snap->nxip, sizeof(FullTransactionId), compare_full);
}

char *
cp_changed_snapshot_text(const CpChangedSnapshot *snap)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, UINT64_FORMAT ":" UINT64_FORMAT ":",
					 U64FromFullTransactionId(snap->xmin),
					 U64FromFullTransactionId(snap->xmax));
	if (snap->all_running)
		appendStringInfoChar(&buf, '*');
	for (int i = 0; i < snap->nxip; i++)
		appendStringInfo(&buf, "%s" UINT64_FORMAT, i > 0 ? "," : "",
						 U64FromFullTransactionId(snap->xip[i]));
	return buf.data;
}

/* A decimal id at *p, moving p past it; false if there is none. */
static bool
parse_id(const char **p, FullTransactionId *id)
{
	char	   *end;
	uint64		v;

	if (**p < '0' || **p > '9')
		return false;
	errno = 0;
	v = strtou64(*p, &end, 10);
	if (errno != 0)
		return false;
	*id = FullTransactionIdFromU64(v);
	*p = end;
	return true;
}

bool
cp_changed_snapshot_parse(const char *text, CpChangedSnapshot *snap)
{
	const char *p = text;
	int			room = 1;

	memset(snap, 0, sizeof(*snap));
	if (text == NULL || !parse_id(&p, &snap->xmin) || *p++ != ':' ||
		!parse_id(&p, &snap->xmax) || *p++ != ':' ||
		FullTransactionIdPrecedes(snap->xmax, snap->xmin))
		return false;
	if (*p == '*')
	{
		snap->all_running = true;
		return p[1] == '\0';
	}
	for (const char *q = p; *q; q++)
		room += *q == ',';
	snap->xip = palloc(sizeof(FullTransactionId) * room);
	while (*p != '\0')
	{
		if (snap->nxip > 0 && *p++ != ',')
			return false;
		if (!parse_id(&p, &snap->xip[snap->nxip]))
			return false;
		snap->nxip++;
	}
	qsort(snap->xip, snap->nxip, sizeof(FullTransactionId), compare_full);
	return true;
}

char *
cp_changed_marks_text(List *marks)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	foreach(lc, marks)
	{
		CpChangedMark *m = lfirst(lc);

		appendStringInfo(&buf, "%s" UINT64_FORMAT "@%X/%X",
						 foreach_current_index(lc) > 0 ? "," : "",
						 U64FromFullTransactionId(m->next), LSN_FORMAT_ARGS(m->lsn));
	}
	return buf.data;
}

List *
cp_changed_marks_parse(const char *text)
{
	List	   *marks = NIL;
	const char *p = text;

	if (text == NULL)
		return NIL;
	while (*p != '\0')
	{
		CpChangedMark *m = palloc(sizeof(CpChangedMark));
		uint32		hi,
					lo;
		int			used;

		if ((marks != NIL && *p++ != ',') || !parse_id(&p, &m->next) ||
			sscanf(p, "@%X/%X%n", &hi, &lo, &used) != 2)
		{
			list_free_deep(marks);
			return NIL;
		}
		m->lsn = ((uint64) hi) << 32 | lo;
		p += used;
		marks = lappend(marks, m);
	}
	return marks;
}

/* The latest mark whose next id is at or below since's xmin, or -1. */
static int
floor_mark(List *marks, const CpChangedSnapshot *since)
{
	int			found = -1;
	ListCell   *lc;

	foreach(lc, marks)
	{
		CpChangedMark *m = lfirst(lc);

		if (FullTransactionIdPrecedesOrEquals(m->next, since->xmin))
			found = foreach_current_index(lc);
	}
	return found;
}

XLogRecPtr
cp_changed_page_floor(List *marks, const CpChangedSnapshot *since)
{
	int			i = floor_mark(marks, since);

	return i < 0 ? InvalidXLogRecPtr : ((CpChangedMark *) list_nth(marks, i))->lsn;
}

List *
cp_changed_marks_add(List *marks, const CpChangedSnapshot *since,
					 const CpChangedMark *mark)
{
	int			from = since != NULL ? floor_mark(marks, since) : -1;
	List	   *kept = NIL;
	ListCell   *lc;
	CpChangedMark *copy = palloc(sizeof(CpChangedMark));

	/*
	 * A later run's since is this run's snapshot or later, whose xmin is
	 * not below since's: no mark before the one used now can serve it.
	 */
	foreach(lc, marks)
		if (foreach_current_index(lc) >= Max(from, 0))
			kept = lappend(kept, lfirst(lc));
	/* too many (a transaction open for many runs): drop the second oldest */
	while (list_length(kept) >= CP_CHANGED_MAX_MARKS)
		kept = list_delete_nth_cell(kept, 1);
	*copy = *mark;
	return lappend(kept, copy);
}

bool
cp_changed_too_old(const CpChangedSnapshot *since)
{
	uint64		next = U64FromFullTransactionId(ReadNextFullTransactionId());
	uint64		xmin = U64FromFullTransactionId(since->xmin);

	return xmin > next || next - xmin >= (UINT64CONST(1) << 31);
}

/* Whether the transaction that wrote a tuple was not visible to since. */
static bool
is_new(const CpChangedSnapshot *since, FullTransactionId next, TransactionId xmin)
{
	FullTransactionId x;

	/* the bootstrap and frozen ids are older than any run */
	if (!TransactionIdIsNormal(xmin))
		return false;
	x = widen(next, xmin);
	if (FullTransactionIdPrecedes(x, since->xmin))
		return false;
	if (!FullTransactionIdPrecedes(x, since->xmax) || since->all_running)
		return true;
	return bsearch(&x, since->xip, since->nxip, sizeof(FullTransactionId),
				   compare_full) != NULL;
}

CpChangedBlocks *
cp_changed_blocks_create(BlockNumber nblocks)
{
	CpChangedBlocks *blocks;

	/* at most 2^32 bits: 512 MB, below MaxAllocSize */
	blocks = palloc0(offsetof(CpChangedBlocks, bits) + (Size) nblocks / 8 + 1);
	blocks->nblocks = nblocks;
	return blocks;
}

void
cp_changed_blocks_add(CpChangedBlocks *blocks, BlockNumber blk)
{
	if (blk < blocks->nblocks)
		blocks->bits[blk / 8] |= (uint8) (1 << (blk % 8));
}

/*
 * The first block at or after blk, before end, that blocks holds (or that
 * is past its nblocks); end if none.  Whole bytes of unset bits at a time:
 * a set of 8 M blocks is passed over in about a millisecond.
 */
static BlockNumber
next_block(const CpChangedBlocks *blocks, BlockNumber blk, BlockNumber end)
{
	BlockNumber stop = Min(end, blocks->nblocks);

	while (blk < stop)
	{
		if (blk % 8 == 0 && blocks->bits[blk / 8] == 0)
			blk += 8;
		else if (blocks->bits[blk / 8] & (1 << (blk % 8)))
			return blk;
		else
			blk++;
	}
	/* end, or the first block past the set (a whole byte may overshoot it) */
	return stop;
}

BlockNumber
cp_changed_scan(Relation rel, Snapshot snapshot, const CpChangedSnapshot *since,
				XLogRecPtr floor, const CpChangedBlocks *blocks,
				BlockNumber first, int max, ItemPointerData *tids, int *ntids,
				bool *last, CpChangedCounts *counts)
{
	BlockNumber nblocks = RelationGetNumberOfBlocks(rel);
	BufferAccessStrategy strategy = GetAccessStrategy(BAS_BULKREAD);
	/* every visible tuple's xmin is before it */
	FullTransactionId next = ReadNextFullTransactionId();
	BlockNumber blk;
	int			read = 0;

	*ntids = 0;
	for (blk = first; blk < nblocks && *ntids < max &&
		 read < CP_CHANGED_PAGES_PER_CHUNK; blk++)
	{
		Buffer		buf;
		Page		page;
		OffsetNumber maxoff;

		CHECK_FOR_INTERRUPTS();
		if (blocks != NULL)
		{
			BlockNumber found = next_block(blocks, blk, nblocks);

			/* no record references the blocks before it: nothing new there */
			counts->pages_skipped += found - blk;
			blk = found;
			if (blk >= nblocks)
				break;
		}
		read++;
		buf = ReadBufferExtended(rel, MAIN_FORKNUM, blk, RBM_NORMAL, strategy);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!XLogRecPtrIsInvalid(floor) && PageGetLSN(page) <= floor)
		{
			counts->pages_skipped++;
			UnlockReleaseBuffer(buf);
			continue;
		}
		counts->pages_examined++;
		maxoff = PageIsNew(page) ? InvalidOffsetNumber : PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
		{
			ItemId		id = PageGetItemId(page, off);
			HeapTupleData tup;

			if (!ItemIdIsNormal(id))
				continue;
			tup.t_data = (HeapTupleHeader) PageGetItem(page, id);
			tup.t_len = ItemIdGetLength(id);
			tup.t_tableOid = RelationGetRelid(rel);
			ItemPointerSet(&tup.t_self, blk, off);
			if (!HeapTupleSatisfiesVisibility(&tup, snapshot, buf))
				continue;
			/* the raw xmin: freezing keeps it */
			if (since != NULL &&
				!is_new(since, next, HeapTupleHeaderGetRawXmin(tup.t_data)))
				continue;
			tids[(*ntids)++] = tup.t_self;
		}
		UnlockReleaseBuffer(buf);
	}
	FreeAccessStrategy(strategy);
	*last = blk >= nblocks;
	return blk;
}
