/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *	  Waking a CDC sync's worker when there is WAL for it to read.
 *
 * PostgreSQL wakes a walsender when WAL is flushed, but has no such wake-up
 * for a background worker that decodes: polling the WAL every 10 ms cost an
 * idle sync 100 wake-ups a second.  The library is loaded into every
 * backend (shared_preload_libraries), so the backend that commits tells
 * the workers instead: every process registers a commit callback, and a
 * commit that wrote WAL in a database where a CDC worker runs sets that
 * worker's latch.  A worker with nothing to do sleeps until then, or until
 * a slow fallback poll (cp_wakeup_fallback_ms) finds WAL that no commit
 * announced: written in another database (which the slot must move past,
 * not decode), or by a transaction whose commit was not yet flushed when
 * the worker subscribed.
 *
 * The shared table has one entry per sync that can run (max_syncs), claimed
 * by a worker with compare-and-swap: {its PGPROC number, its database, the
 * end of the latest commit announced to it}.  A committing backend takes no
 * lock: it reads a count of subscribed workers (nothing more when it is 0),
 * then scans the entries in use with atomic reads.  An entry being released
 * and claimed again while a backend scans it can earn some worker a
 * spurious wake-up, which costs one look at the WAL and nothing else.
 *
 * At the commit callback the commit record is written, but flushed only
 * with synchronous_commit on: the worker decodes no further than the WAL
 * flushed, so it naps briefly while an announced commit is beyond what it
 * could read (see wait_for_work in cdc_sync.c), until the WAL writer has
 * flushed it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "compat.h"
#include "shmem.h"
#include "wakeup.h"

/*
 * A worker that found no free entry (it cannot happen while each running
 * sync has a slot of max_syncs) is woken by nobody: it polls as often as
 * it did before wake-ups existed.
 */
#define UNSUBSCRIBED_POLL_MS 10

typedef struct CpWakeupEntry
{
	pg_atomic_uint32 owner;		/* PGPROC number + 1 of the worker; 0: free */
	pg_atomic_uint32 dboid;		/* its database; InvalidOid while not set */
	pg_atomic_uint64 announced; /* end of the latest commit announced */
} CpWakeupEntry;

typedef struct CpWakeupShared
{
	pg_atomic_uint32 nsubscribed;	/* entries in use */
	pg_atomic_uint32 high_water;	/* entries at or beyond it were never used */
	int			nentries;
	CpWakeupEntry entries[FLEXIBLE_ARRAY_MEMBER];
} CpWakeupShared;

static CpWakeupShared *wakeup = NULL;

/* this process's entry when it is a subscribed CDC worker, else -1 */
static int	my_entry = -1;

/* ProcLastRecPtr at the last commit: unchanged means no WAL written since */
static XLogRecPtr last_written = InvalidXLogRecPtr;

/* for tests only (see cp_wakeup_define_settings) */
static int	fallback_poll_ms = 1000;
static bool commit_wakeup = true;

Size
cp_wakeup_shmem_size(void)
{
	return add_size(offsetof(CpWakeupShared, entries),
					mul_size(cp_max_syncs, sizeof(CpWakeupEntry)));
}

/* In the postmaster, with AddinShmemInitLock held (shmem.c). */
void
cp_wakeup_shmem_startup(void)
{
	bool		found;

	wakeup = ShmemInitStruct("calabi_push wakeup", cp_wakeup_shmem_size(), &found);
	if (found)
		return;
	pg_atomic_init_u32(&wakeup->nsubscribed, 0);
	pg_atomic_init_u32(&wakeup->high_water, 0);
	wakeup->nentries = cp_max_syncs;
	for (int i = 0; i < wakeup->nentries; i++)
	{
		pg_atomic_init_u32(&wakeup->entries[i].owner, 0);
		pg_atomic_init_u32(&wakeup->entries[i].dboid, InvalidOid);
		pg_atomic_init_u64(&wakeup->entries[i].announced, 0);
	}
}

void
cp_wakeup_define_settings(void)
{
	/*
	 * The TAP tests prove that a commit wakes the worker by making the
	 * fallback too slow to explain a change's arrival, and that the
	 * fallback finds what no commit announced by keeping a session from
	 * announcing.  Hidden like calabi_push.test_stop_at (test_point.c).
	 */
	DefineCustomIntVariable("calabi_push.test_fallback_poll_ms",
							"For tests only: how long an idle CDC worker sleeps when no commit wakes it.",
							NULL,
							&fallback_poll_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS | GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL | GUC_SUPERUSER_ONLY,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("calabi_push.test_commit_wakeup",
							 "For tests only: whether this session's commits wake the CDC workers of its database.",
							 "Off, its changes are found by the fallback poll only.",
							 &commit_wakeup,
							 true,
							 PGC_SUSET,
							 GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL | GUC_SUPERUSER_ONLY,
							 NULL, NULL, NULL);
}

/* Raise *target to value, never lower it. */
static void
advance_lsn(pg_atomic_uint64 *target, XLogRecPtr value)
{
	uint64		current = pg_atomic_read_u64(target);

	while (current < value &&
		   !pg_atomic_compare_exchange_u64(target, &current, value))
		;
}

/*
 * At every commit of every process: when the transaction wrote WAL and a
 * CDC worker runs in this database, announce it and set the worker's latch.
 * Nothing here may fail: the transaction is already committed.
 */
static void
wakeup_xact_callback(XactEvent event, void *arg)
{
	XLogRecPtr	written;
	uint32		nused;

	if (event != XACT_EVENT_COMMIT || ProcLastRecPtr == last_written)
		return;
	last_written = ProcLastRecPtr;

	/* a CDC worker's own writes (checkpoints, watermarks) hold no change */
	if (wakeup == NULL || my_entry >= 0 || !commit_wakeup)
		return;

	/*
	 * The commit's WAL was written (and, with synchronous_commit on,
	 * flushed) before this read; a worker subscribes before it reads the
	 * flushed position.  So either it sees the commit in its first round,
	 * or we see it subscribed.  Pairs with the barrier of the subscription.
	 */
	pg_memory_barrier();
	if (pg_atomic_read_u32(&wakeup->nsubscribed) == 0)
		return;
	pg_read_barrier();
	nused = pg_atomic_read_u32(&wakeup->high_water);

	/*
	 * A transaction with an xid ends at its commit record; one without
	 * (COMMIT PREPARED runs in such a transaction) wrote a record that
	 * starts at ProcLastRecPtr: decoding has not read it before it passes
	 * that point.
	 */
	written = Max(XactLastCommitEnd, ProcLastRecPtr + 1);
	for (uint32 i = 0; i < nused; i++)
	{
		CpWakeupEntry *entry = &wakeup->entries[i];
		uint32		owner;

		if (pg_atomic_read_u32(&entry->dboid) != MyDatabaseId)
			continue;
		owner = pg_atomic_read_u32(&entry->owner);
		if (owner == 0)
			continue;
		advance_lsn(&entry->announced, written);
		SetLatch(&GetPGProcByNumber(owner - 1)->procLatch);
	}
}

/*
 * Registered in the postmaster when it loads the library, so inherited by
 * every process it starts.
 */
void
cp_wakeup_init_backend(void)
{
	RegisterXactCallback(wakeup_xact_callback, NULL);
}

static void
unsubscribe(int code, Datum arg)
{
	CpWakeupEntry *entry;

	if (my_entry < 0)
		return;
	entry = &wakeup->entries[my_entry];
	pg_atomic_write_u32(&entry->dboid, InvalidOid);
	pg_atomic_fetch_sub_u32(&wakeup->nsubscribed, 1);
	pg_atomic_write_u32(&entry->owner, 0);
	my_entry = -1;
}

void
cp_wakeup_subscribe(void)
{
	uint32		me = cp_my_proc_number() + 1;

	Assert(wakeup != NULL);
	if (my_entry >= 0)
		return;
	for (int i = 0; i < wakeup->nentries; i++)
	{
		CpWakeupEntry *entry = &wakeup->entries[i];
		uint32		expected = 0;
		uint32		high_water;

		if (!pg_atomic_compare_exchange_u32(&entry->owner, &expected, me))
			continue;
		pg_atomic_write_u64(&entry->announced, 0);
		pg_atomic_write_u32(&entry->dboid, MyDatabaseId);
		high_water = pg_atomic_read_u32(&wakeup->high_water);
		while (high_water < (uint32) i + 1 &&
			   !pg_atomic_compare_exchange_u32(&wakeup->high_water, &high_water, i + 1))
			;
		/* a full barrier: visible to committers before we read the WAL */
		pg_atomic_fetch_add_u32(&wakeup->nsubscribed, 1);
		my_entry = i;

		/* on every exit, an error's included (the PGPROC is still ours) */
		before_shmem_exit(unsubscribe, (Datum) 0);
		return;
	}
	ereport(LOG,
			(errmsg("calabi_push found no free wake-up entry: this CDC worker polls the WAL every %d ms",
					UNSUBSCRIBED_POLL_MS)));
}

XLogRecPtr
cp_wakeup_announced(void)
{
	if (my_entry < 0)
		return InvalidXLogRecPtr;
	return pg_atomic_read_u64(&wakeup->entries[my_entry].announced);
}

int
cp_wakeup_fallback_ms(void)
{
	return my_entry >= 0 ? fallback_poll_ms : UNSUBSCRIBED_POLL_MS;
}
