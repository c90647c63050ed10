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
 * Standbys.  The launcher also runs on a hot standby, for the syncs that
 * run there (option run_on, docs/operations.md).  What the primary decides
 * reaches a standby as replayed catalog rows, which notify no one, so the
 * launcher probes there: every STANDBY_PROBE_MS the databases whose last
 * probe found such syncs (shmem.h, standby_dbs), every STANDBY_PROBE_ALL_MS
 * all of them.  A standby without such syncs costs a short probe per
 * database every half a minute.  When the server is promoted, every database is probed
 * at once, as at a start.
 *
 * A worker that fails is restarted after a delay that doubles with each
 * consecutive failure (1 s up to 5 min); one that finished a run without a
 * schedule, or whose batch the endpoint refused, waits for start_sync (the
 * life of a slot: shmem.h).  A worker that should stop is sent SIGTERM by
 * the transaction that stopped its sync, at commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
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

#include "compressor.h"
#include "launcher.h"
#include "shmem.h"
#include "xact.h"

/* at most this many database probes at a time */
#define MAX_CONCURRENT_PROBES	2

/*
 * On a hot standby, how often the databases with syncs that run here are
 * probed, and how often every database is (to find new ones): see
 * "Standbys" above.
 */
#define STANDBY_PROBE_MS		5000
#define STANDBY_PROBE_ALL_MS	30000

PGDLLEXPORT void calabi_push_launcher_main(Datum main_arg);

/*
 * The handle of the worker last launched from a slot, and that launch's
 * generation; freed once the worker has exited, however it did.  Lost
 * (harmlessly) if the launcher restarts.
 */
typedef struct LaunchedWorker
{
	BackgroundWorkerHandle *handle;
	uint64		generation;
} LaunchedWorker;

static LaunchedWorker *sync_workers = NULL; /* by sync slot */
static LaunchedWorker probe_workers[CP_PROBE_SLOTS];

/* what outlives a pass: the handles, the probe queue */
static MemoryContext launcher_context = NULL;

/* the last attempt to start a worker found max_worker_processes used up */
static bool workers_exhausted = false;

/* databases still to be probed */
static List *probe_queue = NIL;

/* still a hot standby, as far as the launcher knows; its next probes */
static bool in_recovery = false;
static TimestampTz next_standby_probe = 0;
static TimestampTz next_standby_probe_all = 0;

void
cp_register_launcher(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_ConsistentState;
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
	MemoryContext caller = cp_xact_start();

	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (!db->datallowconn || db->datistemplate)
			continue;
		oldcontext = MemoryContextSwitchTo(launcher_context);
		probe_queue = list_append_unique_oid(probe_queue, db->oid);
		MemoryContextSwitchTo(oldcontext);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	cp_xact_commit(caller);
}

/*
 * Register the worker of a sync slot or a probe slot (lock held
 * exclusively); false when no background worker is free.  The caller
 * records the launch in the slot.
 */
static bool
launch(CpProcSlot *proc, LaunchedWorker *launched, int index, bool probe)
{
	uint64		generation = cp_slot_launching(proc);
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;
	MemoryContext oldcontext;
	bool		registered;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_ConsistentState;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher decides */
	bgw.bgw_notify_pid = MyProcPid;
	bgw.bgw_main_arg = Int32GetDatum(index);
	memcpy(bgw.bgw_extra, &generation, sizeof(uint64));
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "calabi_push");
	if (probe)
	{
		snprintf(bgw.bgw_function_name, BGW_MAXLEN, "calabi_push_probe_main");
		snprintf(bgw.bgw_name, BGW_MAXLEN, "calabi_push probe of database %u",
				 proc->dboid);
		snprintf(bgw.bgw_type, BGW_MAXLEN, "calabi_push probe");
	}
	else
	{
		snprintf(bgw.bgw_function_name, BGW_MAXLEN, "calabi_push_worker_main");
		snprintf(bgw.bgw_name, BGW_MAXLEN, "calabi_push sync worker");
		snprintf(bgw.bgw_type, BGW_MAXLEN, "calabi_push sync");
	}

	/* the handle outlives this pass */
	oldcontext = MemoryContextSwitchTo(launcher_context);
	registered = RegisterDynamicBackgroundWorker(&bgw, &handle);
	MemoryContextSwitchTo(oldcontext);
	if (!registered)
		return false;

	/* the previous worker exited (the slot was not FREE otherwise) */
	if (launched->handle != NULL)
		pfree(launched->handle);
	launched->handle = handle;
	launched->generation = generation;
	return true;
}

/*
 * Whether the worker last launched from a slot has exited without telling
 * its slot: before it attached, or without its exit callback.  Its handle
 * is freed as soon as it has exited, however it did.
 */
static bool
reap(CpProcSlot *proc, LaunchedWorker *launched)
{
	pid_t		pid;

	if (launched->handle == NULL ||
		GetBackgroundWorkerPid(launched->handle, &pid) != BGWH_STOPPED)
		return false;
	pfree(launched->handle);
	launched->handle = NULL;
	return launched->generation == proc->generation && cp_slot_has_worker(proc);
}

/* Milliseconds from now until t, at least 1. */
static long
ms_until(TimestampTz now, TimestampTz t)
{
	return Max(TimestampDifferenceMilliseconds(now, t), 1);
}

/*
 * The sync slots: start the workers that are due.  *out_of_workers is set
 * when no background worker was free; a slot that found none waits in
 * state waiting_for_worker, and is tried again at the next pass.
 */
static void
reconcile_syncs(TimestampTz now, long *sleep_ms, bool *out_of_workers,
				bool *launched_sync)
{
	for (int i = 0; i < cp_shared->nslots; i++)
	{
		CpSyncSlot *slot = &cp_shared->slots[i];

		if (reap(&slot->proc, &sync_workers[i]))
			cp_sync_slot_exited(slot, CP_EXIT_UNKNOWN);

		switch (slot->proc.life)
		{
			case CP_SLOT_FREE:
			case CP_SLOT_WAITING:	/* for start_sync or resync */
			case CP_SLOT_STARTING:
			case CP_SLOT_RUNNING:
			case CP_SLOT_STOPPING:	/* its worker's exit moves it on */
				break;
			case CP_SLOT_BACKOFF:
				if (slot->next_start > now)
				{
					*sleep_ms = Min(*sleep_ms, ms_until(now, slot->next_start));
					break;
				}
				/* FALLTHROUGH */
			case CP_SLOT_REQUESTED:
				if (!*out_of_workers &&
					launch(&slot->proc, &sync_workers[i], i, false))
				{
					cp_sync_slot_launched(slot);
					*launched_sync = true;
				}
				else
				{
					cp_sync_slot_no_worker(slot);
					*out_of_workers = true;
				}
				break;
		}
	}
}

/*
 * The probe slots: ask for probes of the databases still queued while
 * fewer than MAX_CONCURRENT_PROBES run, and start those asked for (those
 * asked for at commit by drop_sync or DROP EXTENSION too).
 */
static void
reconcile_probes(bool *out_of_workers)
{
	int			probes = 0;

	for (int i = 0; i < CP_PROBE_SLOTS; i++)
	{
		CpProbeSlot *probe = &cp_shared->probes[i];

		if (reap(&probe->proc, &probe_workers[i]))
			cp_probe_slot_exited(probe);
		if (probe->proc.life != CP_SLOT_FREE)
			probes++;
	}
	while (probe_queue != NIL && probes < MAX_CONCURRENT_PROBES &&
		   cp_probe_slot_request(linitial_oid(probe_queue)))
	{
		probes++;
		probe_queue = list_delete_first(probe_queue);
	}

	for (int i = 0; i < CP_PROBE_SLOTS; i++)
	{
		CpProbeSlot *probe = &cp_shared->probes[i];

		switch (probe->proc.life)
		{
			case CP_SLOT_REQUESTED:
				if (!*out_of_workers &&
					launch(&probe->proc, &probe_workers[i], i, true))
					cp_slot_launched(&probe->proc);
				else
					*out_of_workers = true;
				break;
			case CP_SLOT_FREE:
			case CP_SLOT_STARTING:
			case CP_SLOT_RUNNING:	/* its exit frees it, or asks again */
				break;
			case CP_SLOT_WAITING:
			case CP_SLOT_BACKOFF:
			case CP_SLOT_STOPPING:
				Assert(false);	/* a probe is never in these */
				break;
		}
	}
}

/*
 * A hot standby's probes (see "Standbys"); how long until the next, or -1
 * when this server is not (or no longer) one.
 */
static long
standby_probes(void)
{
	TimestampTz now;

	if (!in_recovery)
		return -1;
	if (!RecoveryInProgress())
	{
		in_recovery = false;
		ereport(LOG,
				(errmsg("calabi_push: this server was promoted; every database is probed for the syncs to run here")));
		queue_all_databases();
		return -1;
	}
	now = GetCurrentTimestamp();
	if (now >= next_standby_probe_all)
	{
		queue_all_databases();
		next_standby_probe_all = TimestampTzPlusMilliseconds(now, STANDBY_PROBE_ALL_MS);
		next_standby_probe = TimestampTzPlusMilliseconds(now, STANDBY_PROBE_MS);
	}
	else if (now >= next_standby_probe)
	{
		bool		all;
		Oid			dbs[CP_STANDBY_DBS];
		int			ndbs = 0;

		LWLockAcquire(cp_shared->lock, LW_SHARED);
		all = cp_shared->standby_dbs_overflow;
		for (int i = 0; i < CP_STANDBY_DBS; i++)
			if (OidIsValid(cp_shared->standby_dbs[i]))
				dbs[ndbs++] = cp_shared->standby_dbs[i];
		LWLockRelease(cp_shared->lock);
		if (all)
			queue_all_databases();
		else
		{
			MemoryContext oldcontext = MemoryContextSwitchTo(launcher_context);

			for (int i = 0; i < ndbs; i++)
				probe_queue = list_append_unique_oid(probe_queue, dbs[i]);
			MemoryContextSwitchTo(oldcontext);
		}
		next_standby_probe = TimestampTzPlusMilliseconds(now, STANDBY_PROBE_MS);
	}
	return ms_until(now, Min(next_standby_probe, next_standby_probe_all));
}

/* One pass over the slots; returns how long to sleep at most. */
static long
reconcile(void)
{
	long		sleep_ms = 10000;
	long		standby_ms = standby_probes();
	bool		out_of_workers = false;
	bool		launched_sync = false;

	if (standby_ms >= 0)
		sleep_ms = Min(sleep_ms, standby_ms);

	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	reconcile_syncs(GetCurrentTimestamp(), &sleep_ms, &out_of_workers,
					&launched_sync);
	reconcile_probes(&out_of_workers);
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
	MemoryContext pass_context;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	launcher_context = AllocSetContextCreate(TopMemoryContext,
											 "calabi_push launcher",
											 ALLOCSET_DEFAULT_SIZES);
	pass_context = AllocSetContextCreate(TopMemoryContext,
										 "calabi_push launcher pass",
										 ALLOCSET_DEFAULT_SIZES);
	sync_workers = MemoryContextAllocZero(launcher_context,
										  sizeof(LaunchedWorker) * cp_shared->nslots);

	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	cp_shared->launcher_pid = MyProcPid;
	LWLockRelease(cp_shared->lock);
	before_shmem_exit(launcher_detach, (Datum) 0);

	ereport(LOG,
			(errmsg("calabi_push %s launcher started; gzip bodies are compressed with %s",
					CALABI_PUSH_VERSION, cp_compressor_name())));

	queue_all_databases();
	in_recovery = RecoveryInProgress();
	if (in_recovery)
	{
		TimestampTz now = GetCurrentTimestamp();

		next_standby_probe = TimestampTzPlusMilliseconds(now, STANDBY_PROBE_MS);
		next_standby_probe_all = TimestampTzPlusMilliseconds(now, STANDBY_PROBE_ALL_MS);
	}

	/* whatever a pass allocates is gone at the next */
	MemoryContextSwitchTo(pass_context);
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
		MemoryContextReset(pass_context);
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
		bool		available;

		LWLockAcquire(cp_shared->lock, LW_SHARED);
		available = cp_slot_available(MyDatabaseId, sync_id);
		LWLockRelease(cp_shared->lock);
		if (!available)
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
	bool		probe_lost = false;

	if (cp_shared == NULL)
		return;
	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	foreach(lc, pending_changes)
	{
		PendingChange *change = lfirst(lc);

		if (change->dropped)
			probe = true;
		if (change->should_run)
		{
			/* checked when asked; a race lost: the next probe finds it */
			if (cp_sync_slot_start(MyDatabaseId, &change->sync_id,
								   change->restart) == NULL)
				continue;
		}
		else
		{
			CpSyncSlot *slot = cp_slot_find(MyDatabaseId, &change->sync_id);

			if (slot == NULL)
				continue;
			cp_sync_slot_stop(slot);
		}
		wake = true;
	}
	if (pending_stop_database)
	{
		for (int i = 0; i < cp_shared->nslots; i++)
		{
			CpSyncSlot *slot = &cp_shared->slots[i];

			if (slot->proc.life != CP_SLOT_FREE && slot->proc.dboid == MyDatabaseId)
			{
				cp_sync_slot_stop(slot);
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
		if (cp_probe_slot_request(MyDatabaseId))
			wake = true;
		else
			probe_lost = true;
	}
	LWLockRelease(cp_shared->lock);
	if (wake)
		cp_wake_launcher();
	if (probe_lost)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("calabi_push could not send a probe into this database: all %d probe slots are in use",
						CP_PROBE_SLOTS),
				 errdetail("The replication slots of CDC syncs dropped here are dropped by the next probe of this database, at the latest at the next server start; until then they keep WAL."),
				 errhint("Restart the server to drop them sooner.")));
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
