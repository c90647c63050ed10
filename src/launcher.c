/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: one background worker per cluster that starts, restarts
 *	  and stops the sync workers of every database.
 *
 * It is connected to no database, like core's logical replication launcher,
 * and reads only pg_database.  At its start it sends a short-lived probe
 * worker into each database that accepts connections; a probe marks that
 * database's enabled syncs as "should run" in shared memory and exits.
 * From then on the management functions keep shared memory up to date at
 * commit (calabi_push._sync_changed), so no setting has to list databases.
 *
 * A worker that fails is restarted after a delay that doubles with each
 * consecutive failure (1 s up to 5 min); one that finished a run without a
 * schedule, or whose batch the endpoint refused, waits for start_sync.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_database.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "launcher.h"
#include "shmem.h"

/* restart delays of a failing sync worker */
#define RESTART_DELAY_MIN_MS	1000
#define RESTART_DELAY_MAX_MS	(5 * 60 * 1000)
/* at most this many database probes at a time */
#define MAX_CONCURRENT_PROBES	2

PGDLLEXPORT void calabi_push_launcher_main(Datum main_arg);

/* the launcher's own handles, by slot; lost (harmlessly) if it restarts */
static BackgroundWorkerHandle **handles = NULL;
static uint64 *handle_generations = NULL;

/* the last attempt to start a worker found max_worker_processes used up */
static bool workers_exhausted = false;

/* databases still to be probed */
static List *probe_queue = NIL;

/*
 * Delay before the n-th consecutive restart.  Called with the lock held by
 * whoever notices the failure.
 */
void
cp_schedule_restart(CpSyncSlot *slot)
{
	int64		delay = RESTART_DELAY_MIN_MS;

	slot->failures++;
	for (int i = 1; i < slot->failures && delay < RESTART_DELAY_MAX_MS; i++)
		delay *= 2;
	delay = Min(delay, RESTART_DELAY_MAX_MS);
	slot->next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);
}

void
cp_register_launcher(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "calabi_push");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "calabi_push_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "calabi_push launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "calabi_push launcher");
	RegisterBackgroundWorker(&bgw);
}

static void
launcher_detach(int code, Datum arg)
{
	/* an error may have left our lock held: this runs before any cleanup */
	LWLockReleaseAll();
	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	if (cp_shared->launcher_pid == MyProcPid)
		cp_shared->launcher_pid = 0;
	LWLockRelease(cp_shared->lock);
}

/* Every database a sync could live in. */
static void
queue_all_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext oldcontext;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (!db->datallowconn || db->datistemplate)
			continue;
		oldcontext = MemoryContextSwitchTo(TopMemoryContext);
		probe_queue = lappend_oid(probe_queue, db->oid);
		MemoryContextSwitchTo(oldcontext);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* Register the worker of a slot (lock held exclusively). */
static bool
launch(int slotno)
{
	CpSyncSlot *slot = &cp_shared->slots[slotno];
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;

	slot->generation++;
	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher decides */
	bgw.bgw_notify_pid = MyProcPid;
	bgw.bgw_main_arg = Int32GetDatum(slotno);
	memcpy(bgw.bgw_extra, &slot->generation, sizeof(uint64));
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "calabi_push");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "calabi_push_worker_main");
	if (slot->probe)
	{
		snprintf(bgw.bgw_name, BGW_MAXLEN, "calabi_push probe of database %u",
				 slot->dboid);
		snprintf(bgw.bgw_type, BGW_MAXLEN, "calabi_push probe");
	}
	else
	{
		snprintf(bgw.bgw_name, BGW_MAXLEN, "calabi_push sync worker");
		snprintf(bgw.bgw_type, BGW_MAXLEN, "calabi_push sync");
	}

	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
		return false;

	handles[slotno] = handle;
	handle_generations[slotno] = slot->generation;
	slot->launched = true;
	slot->signalled = false;
	slot->pid = 0;
	slot->last_exit = CP_EXIT_UNKNOWN;
	slot->state = CP_RUN_STARTING;
	slot->started_at = GetCurrentTimestamp();
	slot->retries = 0;
	return true;
}

/*
 * A launched worker that exited before it could attach (or without its exit
 * callback) is noticed through our handle.  Lock held exclusively.
 */
static void
reap(int slotno)
{
	CpSyncSlot *slot = &cp_shared->slots[slotno];
	pid_t		pid;

	if (!slot->launched || handles[slotno] == NULL ||
		handle_generations[slotno] != slot->generation)
		return;
	if (GetBackgroundWorkerPid(handles[slotno], &pid) != BGWH_STOPPED)
		return;
	/* stopped: the exit callback cleared launched unless it never ran */
	if (slot->launched)
	{
		slot->launched = false;
		slot->pid = 0;
		slot->state = CP_RUN_NONE;
		if (!slot->probe)
			cp_schedule_restart(slot);
	}
	pfree(handles[slotno]);
	handles[slotno] = NULL;
}

/* One pass over the slots; returns how long to sleep at most. */
static long
reconcile(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		sleep_ms = 10000;
	int			probes = 0;
	bool		out_of_workers = false;
	bool		launched_sync = false;

	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);

	for (int i = 0; i < cp_shared->nslots; i++)
	{
		CpSyncSlot *slot = &cp_shared->slots[i];

		if (!slot->in_use)
			continue;
		reap(i);

		if (slot->probe)
		{
			if (slot->launched)
				probes++;
			else if (slot->kick && !out_of_workers)
			{
				slot->kick = false;
				if (launch(i))
					probes++;
				else
				{
					slot->kick = true;
					out_of_workers = true;
				}
			}
			else if (!slot->kick)
				slot->in_use = false;	/* probe done */
			continue;
		}

		if (!slot->should_run)
		{
			if (slot->launched)
			{
				if (!slot->signalled && slot->pid != 0)
				{
					kill(slot->pid, SIGTERM);
					slot->signalled = true;
				}
			}
			else
				slot->in_use = false;
			continue;
		}

		if (slot->launched)
		{
			if (slot->restart && !slot->signalled && slot->pid != 0)
			{
				kill(slot->pid, SIGTERM);
				slot->signalled = true;
			}
			continue;
		}

		/* should run, no worker */
		if (slot->restart)
		{
			slot->restart = false;
			slot->kick = true;
		}
		if (slot->kick)
		{
			slot->failures = 0;
			slot->next_start = 0;
		}
		else if (slot->last_exit == CP_EXIT_DONE ||
				 slot->last_exit == CP_EXIT_REFUSED ||
				 slot->last_exit == CP_EXIT_GONE)
			continue;			/* waits for start_sync or resync */
		else if (slot->next_start > now)
		{
			long		ms = TimestampDifferenceMilliseconds(now, slot->next_start);

			sleep_ms = Min(sleep_ms, Max(ms, 1));
			continue;
		}

		if (out_of_workers)
		{
			slot->state = CP_RUN_NO_WORKER;
			continue;
		}
		slot->kick = false;
		if (!launch(i))
		{
			slot->kick = true;
			slot->state = CP_RUN_NO_WORKER;
			out_of_workers = true;
		}
		else
			launched_sync = true;
	}

	/* probe more databases while there is room */
	while (probe_queue != NIL && probes < MAX_CONCURRENT_PROBES && !out_of_workers)
	{
		Oid			dboid = linitial_oid(probe_queue);
		CpSyncSlot *slot = NULL;

		for (int i = 0; i < cp_shared->nslots; i++)
		{
			if (!cp_shared->slots[i].in_use)
			{
				uint64		generation = cp_shared->slots[i].generation;

				slot = &cp_shared->slots[i];
				memset(slot, 0, sizeof(*slot));
				slot->generation = generation;
				slot->in_use = true;
				slot->probe = true;
				slot->dboid = dboid;
				if (!launch(i))
				{
					slot->in_use = false;
					out_of_workers = true;
					slot = NULL;
				}
				break;
			}
		}
		if (slot == NULL)
			break;
		probes++;
		probe_queue = list_delete_first(probe_queue);
	}

	LWLockRelease(cp_shared->lock);

	/*
	 * Said once when it starts and once when it ends, not at every attempt
	 * (every 5 s); sync_status shows the syncs that wait meanwhile.
	 */
	if (out_of_workers)
	{
		if (!workers_exhausted)
			ereport(WARNING,
					(errmsg("calabi_push could not start a background worker: all of max_worker_processes (%d) are in use",
							max_worker_processes),
					 errdetail("Syncs waiting for one show the state waiting_for_worker in calabi_push.sync_status."),
					 errhint("Raise max_worker_processes (one per running sync, plus the launcher) and restart the server, or stop a sync.")));
		workers_exhausted = true;
		sleep_ms = Min(sleep_ms, 5000);
	}
	else if (workers_exhausted && launched_sync)
	{
		ereport(LOG,
				(errmsg("calabi_push could start background workers again")));
		workers_exhausted = false;
	}
	return sleep_ms;
}

void
calabi_push_launcher_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	handles = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(BackgroundWorkerHandle *) * cp_shared->nslots);
	handle_generations = MemoryContextAllocZero(TopMemoryContext,
												sizeof(uint64) * cp_shared->nslots);

	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	cp_shared->launcher_pid = MyProcPid;
	LWLockRelease(cp_shared->lock);
	before_shmem_exit(launcher_detach, (Datum) 0);

	queue_all_databases();

	for (;;)
	{
		long		sleep_ms = reconcile();

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}

/*
 * calabi_push._sync_changed(sync_id, should_run, restart): remember what the
 * management function decided, and tell the launcher when (and only if) the
 * transaction commits, as core's ApplyLauncherWakeupAtCommit does.
 */
typedef struct PendingChange
{
	pg_uuid_t	sync_id;
	bool		should_run;
	bool		restart;
	bool		dropped;		/* drop_sync: its slot, if any, goes too */
	int			nestlevel;		/* subtransaction that asked */
} PendingChange;

static List *pending_changes = NIL;
static bool pending_stop_database = false;	/* DROP EXTENSION */
static int	pending_stop_nestlevel = 0;

PG_FUNCTION_INFO_V1(calabi_push_sync_changed);

Datum
calabi_push_sync_changed(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *sync_id = PG_GETARG_UUID_P(0);
	bool		should_run = PG_GETARG_BOOL(1);
	bool		restart = PG_GETARG_BOOL(2);
	bool		dropped = PG_NARGS() > 3 && PG_GETARG_BOOL(3);
	PendingChange *change;
	MemoryContext oldcontext;

	cp_shmem_attach();

	/* refuse now, not silently at commit, when no slot can take it */
	if (should_run)
	{
		int			free = 0;

		LWLockAcquire(cp_shared->lock, LW_SHARED);
		if (cp_slot_find(MyDatabaseId, sync_id) == NULL)
			for (int i = 0; i < cp_shared->nslots; i++)
				if (!cp_shared->slots[i].in_use)
					free++;
		LWLockRelease(cp_shared->lock);
		if (free == 0 && cp_slot_find(MyDatabaseId, sync_id) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("too many syncs are running in this cluster"),
					 errdetail("calabi_push.max_syncs is %d.", cp_max_syncs),
					 errhint("Stop a sync, or raise calabi_push.max_syncs and restart the server.")));
	}

	oldcontext = MemoryContextSwitchTo(TopMemoryContext);
	change = palloc(sizeof(PendingChange));
	change->sync_id = *sync_id;
	change->should_run = should_run;
	change->restart = restart;
	change->dropped = dropped;
	change->nestlevel = GetCurrentTransactionNestLevel();
	pending_changes = lappend(pending_changes, change);
	MemoryContextSwitchTo(oldcontext);
	PG_RETURN_VOID();
}

static void
apply_pending_changes(void)
{
	ListCell   *lc;
	bool		wake = false;
	bool		probe = pending_stop_database;

	if (cp_shared == NULL)
		return;
	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	foreach(lc, pending_changes)
	{
		PendingChange *change = lfirst(lc);
		CpSyncSlot *slot;

		if (change->dropped)
			probe = true;

		slot = change->should_run ?
			cp_slot_claim(MyDatabaseId, &change->sync_id) :
			cp_slot_find(MyDatabaseId, &change->sync_id);
		if (slot == NULL)
			continue;			/* checked when asked; a race lost: the
								 * next probe finds it */
		slot->should_run = change->should_run;
		if (change->should_run)
			slot->kick = true;
		if (change->restart)
			slot->restart = true;
		wake = true;
	}
	if (pending_stop_database)
	{
		for (int i = 0; i < cp_shared->nslots; i++)
		{
			CpSyncSlot *slot = &cp_shared->slots[i];

			if (slot->in_use && !slot->probe && slot->dboid == MyDatabaseId)
			{
				slot->should_run = false;
				wake = true;
			}
		}
	}

	/*
	 * A probe of this database drops the replication slots of syncs that
	 * no longer exist, once their workers let go of them (cdc_slot.c).
	 */
	if (probe)
	{
		for (int i = 0; i < cp_shared->nslots; i++)
		{
			CpSyncSlot *slot = &cp_shared->slots[i];

			if (!slot->in_use)
			{
				uint64		generation = slot->generation;

				memset(slot, 0, sizeof(*slot));
				slot->generation = generation;
				slot->in_use = true;
				slot->probe = true;
				slot->dboid = MyDatabaseId;
				slot->kick = true;
				wake = true;
				break;
			}
		}
	}
	LWLockRelease(cp_shared->lock);
	if (wake)
		cp_wake_launcher();
}

static void
forget_pending_changes(void)
{
	list_free_deep(pending_changes);
	pending_changes = NIL;
	pending_stop_database = false;
}

static void
launcher_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (pending_changes != NIL || pending_stop_database)
				apply_pending_changes();
			forget_pending_changes();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			forget_pending_changes();
			break;
		case XACT_EVENT_PREPARE:

			/*
			 * A prepared transaction may still roll back, and its commit
			 * comes from another session: its changes reach the launcher at
			 * the next probe (server start) or start_sync.
			 */
			forget_pending_changes();
			break;
		default:
			break;
	}
}

static void
launcher_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;
	int			level = GetCurrentTransactionNestLevel();

	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	if (pending_stop_database && pending_stop_nestlevel >= level)
		pending_stop_database = false;
	foreach(lc, pending_changes)
	{
		PendingChange *change = lfirst(lc);

		if (change->nestlevel >= level)
		{
			pending_changes = foreach_delete_current(pending_changes, lc);
			pfree(change);
		}
	}
}

/*
 * The extension is going away, however it is dropped: DROP EXTENSION, DROP
 * SCHEMA calabi_push CASCADE, DROP OWNED BY its owner.  Each deletes the
 * pg_extension row through the dependency machinery, which calls this hook
 * first; watching statements instead would miss every way but the first.
 * Applied if the drop commits (the database's workers stop and a probe
 * drops the slots of its CDC syncs); forgotten if its subtransaction
 * aborts.
 */
static object_access_hook_type prev_object_access = NULL;

static void
calabi_push_object_access(ObjectAccessType access, Oid classId, Oid objectId,
						  int subId, void *arg)
{
	if (prev_object_access)
		prev_object_access(access, classId, objectId, subId, arg);
	if (access == OAT_DROP && classId == ExtensionRelationId && cp_shared != NULL &&
		objectId == get_extension_oid("calabi_push", true))
	{
		pending_stop_database = true;
		pending_stop_nestlevel = GetCurrentTransactionNestLevel();
	}
}

void
cp_launcher_init_backend_hooks(void)
{
	RegisterXactCallback(launcher_xact_callback, NULL);
	RegisterSubXactCallback(launcher_subxact_callback, NULL);
	prev_object_access = object_access_hook;
	object_access_hook = calabi_push_object_access;
}
