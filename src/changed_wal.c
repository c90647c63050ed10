/*-------------------------------------------------------------------------
 *
 * changed_wal.c
 *	  The blocks the WAL references from a position on (see changed_wal.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/rmgr.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogreader.h"
#include "access/xlogutils.h"
#include "catalog/storage_xlog.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "changed_wal.h"

/* records decoded between two checks for interrupts */
#define RECORDS_PER_CHECK 4096

/*
 * The WAL a run reads at most, as a multiple of the size of the relations
 * it looks for: past it, reading every page's header is taken to be
 * cheaper (a page's header against a page's worth of WAL records decoded:
 * about the same, by a rough estimate, not a measurement).
 */
static double wal_ratio = 1.0;

#ifdef CP_HAVE_WAL_NO_WAIT

/* One read of the WAL: what the subtransaction's error path must see. */
typedef struct WalRead
{
	CpWalRelation *rels;		/* sorted by file */
	int			nrels;
	XLogRecPtr	from;
	XLogRecPtr	upto;			/* records starting before it are read */
	XLogReaderState *reader;	/* freed whatever happens */
	XLogRecPtr	next;			/* where the next read begins */
	bool		ok;
	char	   *why;
} WalRead;

/* Files in any total order: memcmp of their three Oids. */
static int
compare_files(const void *a, const void *b)
{
	return memcmp(&((const CpWalRelation *) a)->file,
				  &((const CpWalRelation *) b)->file, sizeof(CpRelFile));
}

static CpWalRelation *
find_relation(WalRead *r, const CpRelFile *file)
{
	CpWalRelation key;

	key.file = *file;
	return bsearch(&key, r->rels, r->nrels, sizeof(CpWalRelation), compare_files);
}

/*
 * A position where the next record starts (GetXLogInsertRecPtr) as the end
 * of the last one: past a page's header it means the page's start, which
 * is as far as anything was written (XLogFlush complains of a request past
 * it).  No record ends right after a page header.
 */
static XLogRecPtr
as_record_end(XLogRecPtr ptr)
{
	if (XLogSegmentOffset(ptr, wal_segment_size) == SizeOfXLogLongPHD)
		return ptr - SizeOfXLogLongPHD;
	if (ptr % XLOG_BLCKSZ == SizeOfXLogShortPHD)
		return ptr - SizeOfXLogShortPHD;
	return ptr;
}

/* A record's block references to the relations' main forks, into their sets. */
static bool
take_record(WalRead *r)
{
	XLogReaderState *reader = r->reader;

	for (int b = 0; b <= XLogRecMaxBlockId(reader); b++)
	{
		CpRelFile	file;
		ForkNumber	fork;
		BlockNumber blk;
		CpWalRelation *rel;

		if (!XLogRecGetBlockTagExtended(reader, b, &file, &fork, &blk, NULL) ||
			fork != MAIN_FORKNUM)
			continue;
		rel = find_relation(r, &file);
		if (rel != NULL)
			cp_changed_blocks_add(rel->blocks, blk);
	}

	/*
	 * A file created after the position: under wal_level = minimal the
	 * transaction that created it wrote its pages without WAL.  Its
	 * relfilenode differs from the previous run's, so it is read whole
	 * unless created between the floor and the previous run: then the
	 * pages decide, as before the WAL was read.
	 */
	if (XLogRecGetRmid(reader) == RM_SMGR_ID &&
		(XLogRecGetInfo(reader) & ~XLR_INFO_MASK) == XLOG_SMGR_CREATE)
	{
		xl_smgr_create *xlrec = (xl_smgr_create *) XLogRecGetData(reader);

		if (find_relation(r, &cp_smgr_create_file(xlrec)) != NULL)
		{
			r->why = psprintf("the storage of a relation read was created at %X/%X, after the position",
							  LSN_FORMAT_ARGS(reader->ReadRecPtr));
			return false;
		}
	}
	return true;
}

/* Read the records from r->from up to r->upto (in a subtransaction). */
static void
read_records(WalRead *r)
{
	ReadLocalXLogPageNoWaitPrivate *priv = palloc0(sizeof(ReadLocalXLogPageNoWaitPrivate));
	XLogRecPtr	end = as_record_end(r->upto);
	int64		n = 0;

	r->reader = XLogReaderAllocate(wal_segment_size, NULL,
								   XL_ROUTINE(.page_read = read_local_xlog_page_no_wait,
											  .segment_open = wal_segment_open,
											  .segment_close = wal_segment_close),
								   priv);
	if (r->reader == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Failed while allocating a WAL reading processor.")));

	/* the position is where a record began; this also steps over page headers */
	if (XLogRecPtrIsInvalid(XLogFindNextRecord(r->reader, r->from)))
	{
		r->why = psprintf("no WAL record found at or after %X/%X", LSN_FORMAT_ARGS(r->from));
		return;
	}
	while (r->reader->EndRecPtr < end)
	{
		char	   *errormsg = NULL;

		if (++n % RECORDS_PER_CHECK == 0)
			CHECK_FOR_INTERRUPTS();
		/* flushed up to end before: a record that begins before it is there */
		if (XLogReadRecord(r->reader, &errormsg) == NULL)
		{
			r->why = psprintf("the WAL could not be read at %X/%X: %s",
							  LSN_FORMAT_ARGS(r->reader->EndRecPtr),
							  errormsg != NULL ? errormsg : "it ends there");
			return;
		}
		if (!take_record(r))
			return;
	}
	r->next = r->reader->EndRecPtr;
	r->ok = true;
}

#endif							/* CP_HAVE_WAL_NO_WAIT */

void
cp_changed_wal_define_setting(void)
{
	DefineCustomRealVariable("calabi_push.xmin_wal_ratio",
							 "How much WAL an incremental xmin or cursor run reads to find the pages changed, at most, as a multiple of the relations' size.",
							 "Beyond it (and at 0) the run reads every page's header instead; a run uses the value read when it reads the WAL.",
							 &wal_ratio,
							 1.0, 0.0, 1000000.0,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
}

bool
cp_changed_wal_read(CpWalRelation *rels, int nrels, XLogRecPtr *from,
					uint64 *bytes, uint64 relation_bytes, char **why)
{
#ifndef CP_HAVE_WAL_NO_WAIT
	*why = pstrdup("this PostgreSQL version cannot read its WAL without waiting for more");
	return false;
#else
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	MemoryContext cxt;
	WalRead    *r;
	XLogRecPtr	upto;
	XLogSegNo	segno;
	double		limit = wal_ratio * (double) relation_bytes;
	bool		ok;

	if (wal_ratio <= 0.0)
	{
		*why = pstrdup("calabi_push.xmin_wal_ratio is 0");
		return false;
	}
	if (RecoveryInProgress())
	{
		*why = pstrdup("the server is in recovery");
		return false;
	}
	/* after the caller's snapshot: a visible transaction's records are before it */
	upto = GetXLogInsertRecPtr();
	if (upto <= *from)
		return true;
	XLByteToSeg(*from, segno, wal_segment_size);
	if (segno <= XLogGetLastRemovedSegno())
	{
		*why = psprintf("the WAL from %X/%X has been removed", LSN_FORMAT_ARGS(*from));
		return false;
	}
	if ((double) (*bytes + (upto - *from)) > limit)
	{
		*why = psprintf("the WAL to read (" UINT64_FORMAT " bytes from %X/%X) is larger than calabi_push.xmin_wal_ratio (%g) times the relations (" UINT64_FORMAT " bytes): reading their pages is cheaper",
						*bytes + (upto - *from), LSN_FORMAT_ARGS(*from), wal_ratio,
						relation_bytes);
		return false;
	}
	/* a transaction committed asynchronously may not be on disk yet */
	XLogFlush(as_record_end(upto));

	cxt = AllocSetContextCreate(caller, "calabi_push WAL blocks", ALLOCSET_DEFAULT_SIZES);
	r = MemoryContextAllocZero(cxt, sizeof(WalRead));
	r->rels = MemoryContextAlloc(cxt, sizeof(CpWalRelation) * Max(nrels, 1));
	memcpy(r->rels, rels, sizeof(CpWalRelation) * nrels);
	r->nrels = nrels;
	qsort(r->rels, nrels, sizeof(CpWalRelation), compare_files);
	r->from = *from;
	r->upto = upto;

	/*
	 * A segment removed, or recycled, while it is read raises an ERROR in
	 * the page reader: caught in a subtransaction (which restores what the
	 * chunk's transaction holds), it only means the WAL cannot tell.  A
	 * cancel is not ours to swallow.
	 */
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		read_records(r);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
		if (r->reader != NULL)
		{
			XLogReaderFree(r->reader);
			r->reader = NULL;
		}
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		{
			MemoryContextDelete(cxt);
			ReThrowError(edata);
		}
		r->ok = false;
		r->why = MemoryContextStrdup(cxt, edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	if (r->reader != NULL)
		XLogReaderFree(r->reader);	/* closes the segment it has open */

	ok = r->ok;
	/* removed while read: a recycled file may have been read */
	if (ok && segno <= XLogGetLastRemovedSegno())
	{
		ok = false;
		r->why = psprintf("the WAL from %X/%X was removed while it was read",
						  LSN_FORMAT_ARGS(*from));
	}
	if (ok)
	{
		*bytes += r->next - *from;
		*from = r->next;
	}
	else
		*why = pstrdup(r->why != NULL ? r->why : "the WAL could not be read");
	MemoryContextDelete(cxt);
	return ok;
#endif
}
