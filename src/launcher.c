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
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "commands/tablespace.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "compat.h"
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
 * DROP DATABASE, and renaming a database or moving it to another
 * tablespace, need every session of the database gone: stop its sync
 * workers first, wait for them (a few seconds at most), and let them start
 * again if the command fails or the database lives on.
 */
static ProcessUtility_hook_type prev_process_utility = NULL;

/*
 * Stop the database's sync workers: mark them not to run and return the ids
 * of the syncs that were running, so that resume_database can start them
 * again even after the launcher freed their slots meanwhile.
 */
static List *
pause_database(Oid dboid)
{
	List	   *paused = NIL;

	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < cp_shared->nslots; i++)
	{
		CpSyncSlot *slot = &cp_shared->slots[i];

		if (slot->in_use && slot->dboid == dboid && !slot->probe && slot->should_run)
		{
			pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

			*id = slot->sync_id;
			slot->should_run = false;
			paused = lappend(paused, id);
		}
	}
	LWLockRelease(cp_shared->lock);
	if (paused != NIL)
		cp_wake_launcher();
	return paused;
}

/* Wait (10 s at most) until the database's workers have exited. */
static void
wait_for_database_workers(Oid dboid)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 10000);

	for (;;)
	{
		bool		alive = false;

		LWLockAcquire(cp_shared->lock, LW_SHARED);
		for (int i = 0; i < cp_shared->nslots; i++)
		{
			CpSyncSlot *slot = &cp_shared->slots[i];

			if (slot->in_use && slot->dboid == dboid && slot->launched)
				alive = true;
		}
		LWLockRelease(cp_shared->lock);
		if (!alive || GetCurrentTimestamp() >= deadline)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 50, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
resume_database(Oid dboid, List *paused)
{
	ListCell   *lc;

	if (paused == NIL)
		return;
	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	foreach(lc, paused)
	{
		CpSyncSlot *slot = cp_slot_claim(dboid, lfirst(lc));

		if (slot == NULL)
			break;				/* all slots taken meanwhile: the next
								 * start_sync or server start finds it */
		slot->should_run = true;
		slot->kick = true;
	}
	LWLockRelease(cp_shared->lock);
	cp_wake_launcher();
}

/*
 * Whether the current user (GetUserId(), as the command itself will check)
 * owns the database: superusers pass.
 */
static bool
caller_owns_database(Oid dboid)
{
	return cp_database_ownercheck(dboid, GetUserId());
}

/* The CREATEDB attribute, as RenameDatabase checks it (superusers pass). */
static bool
caller_has_createdb(void)
{
	HeapTuple	tuple;
	bool		result;

	if (superuser())
		return true;
	tuple = SearchSysCache1(AUTHOID, ObjectIdGetDatum(GetUserId()));
	if (!HeapTupleIsValid(tuple))
		return false;
	result = ((Form_pg_authid) GETSTRUCT(tuple))->rolcreatedb;
	ReleaseSysCache(tuple);
	return result;
}

/*
 * The database's template flag and tablespace, from its pg_database row;
 * false if it vanished meanwhile.
 */
static bool
database_row(Oid dboid, bool *istemplate, Oid *tablespace)
{
	HeapTuple	tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));

	if (!HeapTupleIsValid(tuple))
		return false;
	*istemplate = ((Form_pg_database) GETSTRUCT(tuple))->datistemplate;
	*tablespace = ((Form_pg_database) GETSTRUCT(tuple))->dattablespace;
	ReleaseSysCache(tuple);
	return true;
}

/*
 * The database whose sync workers must be stopped before this statement
 * runs, or InvalidOid.  The workers are stopped only when the command will
 * get as far as counting the database's sessions: the caller passes the
 * checks PostgreSQL makes before that (dropdb, RenameDatabase, movedb in
 * dbcommands.c), in the same order.  Otherwise any login role could
 * interrupt every worker of a database, again and again, with a command
 * that then fails with "must be owner of database".  A command that will
 * fail for another reason (the current database, a template, a name in
 * use, the same tablespace) stops nothing either.
 *
 * Not inlined: its locals must not live across the PG_TRY below.
 */
static pg_noinline Oid
database_needing_exclusive_access(Node *stmt)
{
	const char *dbname = NULL;
	const char *newname = NULL;
	const char *tablespace = NULL;
	Oid			dboid;
	bool		istemplate;
	Oid			current_tablespace;

	if (IsA(stmt, DropdbStmt))
		dbname = ((DropdbStmt *) stmt)->dbname;
	else if (IsA(stmt, RenameStmt) &&
			 ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
	{
		dbname = ((RenameStmt *) stmt)->subname;
		newname = ((RenameStmt *) stmt)->newname;
	}
	else if (IsA(stmt, AlterDatabaseStmt))
	{
		ListCell   *lc;

		foreach(lc, ((AlterDatabaseStmt *) stmt)->options)
		{
			DefElem    *opt = lfirst(lc);

			if (strcmp(opt->defname, "tablespace") == 0)
			{
				dbname = ((AlterDatabaseStmt *) stmt)->dbname;
				tablespace = defGetString(opt);
			}
		}
	}
	if (dbname == NULL)
		return InvalidOid;

	dboid = get_database_oid(dbname, true);
	if (!OidIsValid(dboid) || dboid == MyDatabaseId ||
		!database_row(dboid, &istemplate, &current_tablespace))
		return InvalidOid;
	/* every one of the three commands: "must be owner of database" */
	if (!caller_owns_database(dboid))
		return InvalidOid;

	if (IsA(stmt, DropdbStmt))
	{
		if (istemplate)			/* "cannot drop a template database" */
			return InvalidOid;
	}
	else if (newname != NULL)
	{
		/* "permission denied to rename database"; a name in use */
		if (!caller_has_createdb() || OidIsValid(get_database_oid(newname, true)))
			return InvalidOid;
	}
	else
	{
		Oid			spcoid = get_tablespace_oid(tablespace, true);

		/* a tablespace that does not exist, without CREATE, or the same one */
		if (!OidIsValid(spcoid) ||
			cp_tablespace_aclcheck(spcoid, GetUserId(), ACL_CREATE) != ACLCHECK_OK ||
			spcoid == current_tablespace)
			return InvalidOid;
	}
	return dboid;
}

/*
 * DROP ROLE of a role that syncs of this database read as (sync.run_as),
 * or that owns destinations of it (destination.created_by):
 * refused, since those syncs could no longer run and only a superuser could
 * drop them.  Called after the DROP ROLE itself succeeded, inside its
 * transaction, so that PostgreSQL's own checks (privileges, objects the role
 * owns) come first and nobody learns sync names from a DROP ROLE they may
 * not run; our error then rolls the drop back.  The roles' oids were taken
 * before the drop, as their names no longer resolve.
 *
 * Syncs of other databases are not visible from here: see docs/syncs.md.
 */
static void
refuse_drop_of_run_as_roles(List *role_names, List *role_oids)
{
	Oid			save_userid;
	int			save_sec_context;
	Datum	   *elems;
	ArrayType  *oids;
	Oid			types[2] = {OIDARRAYOID, NAMEARRAYOID};
	Datum		values[2];
	Datum	   *name_elems;
	int			n = list_length(role_oids);
	int			i = 0;
	ListCell   *lc;
	StringInfoData detail;
	char	   *first_role = NULL;
	bool		first_is_sync = false;
	MemoryContext caller_context = CurrentMemoryContext;

	if (n == 0)
		return;
	elems = palloc(sizeof(Datum) * n);
	foreach(lc, role_oids)
		elems[i++] = ObjectIdGetDatum(lfirst_oid(lc));
	oids = construct_array(elems, n, OIDOID, sizeof(Oid), true, TYPALIGN_INT);
	values[0] = PointerGetDatum(oids);
	name_elems = palloc(sizeof(Datum) * n);
	i = 0;
	foreach(lc, role_names)
		name_elems[i++] = DirectFunctionCall1(namein, CStringGetDatum(lfirst(lc)));
	values[1] = PointerGetDatum(construct_array(name_elems, n, NAMEOID, NAMEDATALEN,
												false, TYPALIGN_CHAR));

	/* in our context: SPI_finish frees what is allocated in between */
	initStringInfo(&detail);

	/*
	 * The catalog table is readable by superusers only, and a role with
	 * CREATEROLE need not be one: read it as the bootstrap superuser, in a
	 * restricted operation, with every name qualified.  An error restores
	 * the user (transaction or subtransaction abort).
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/*
	 * A destination belongs to the role named in created_by: a role created
	 * later under the same name would inherit it, so its owner is kept as
	 * a sync's role is.  Syncs come first (kind 1), then destinations.
	 */
	if (SPI_execute_with_args("SELECT s.run_as::pg_catalog.oid, 1,"
							  " pg_catalog.string_agg(s.name, ', ' ORDER BY s.name COLLATE \"C\")"
							  " FROM calabi_push.sync s"
							  " WHERE s.run_as::pg_catalog.oid OPERATOR(pg_catalog.=) ANY ($1)"
							  " GROUP BY 1"
							  " UNION ALL"
							  " SELECT r.oid, 2,"
							  " pg_catalog.string_agg(d.name, ', ' ORDER BY d.name COLLATE \"C\")"
							  " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) r(oid, name)"
							  " JOIN calabi_push.destination d"
							  " ON d.created_by OPERATOR(pg_catalog.=) r.name"
							  " GROUP BY 1"
							  " ORDER BY 2, 1",
							  2, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read calabi_push.sync");

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Oid			roleid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[r],
														   SPI_tuptable->tupdesc, 1, &isnull));
		bool		is_sync = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r],
														  SPI_tuptable->tupdesc, 2, &isnull)) == 1;
		char	   *syncs = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 3);
		const char *role = NULL;
		ListCell   *lo;

		forboth(lc, role_names, lo, role_oids)
			if (lfirst_oid(lo) == roleid)
				role = lfirst(lc);
		if (role == NULL)
			continue;
		if (first_role == NULL)
		{
			first_role = MemoryContextStrdup(caller_context, role);
			first_is_sync = is_sync;
		}
		appendStringInfo(&detail, is_sync ? "%sSyncs reading as role \"%s\": %s." :
						 "%sDestinations owned by role \"%s\": %s.",
						 detail.len > 0 ? "\n" : "", role, syncs);
	}
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec_context);

	if (first_role != NULL && first_is_sync)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("role \"%s\" cannot be dropped because calabi_push syncs of database \"%s\" read as it",
						first_role, get_database_name(MyDatabaseId)),
				 errdetail_internal("%s", detail.data),
				 errhint("Drop those syncs with calabi_push.drop_sync(), or drop and create them again with another \"run_as\" option, then drop the role.")));
	if (first_role != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("role \"%s\" cannot be dropped because it owns calabi_push destinations of database \"%s\"",
						first_role, get_database_name(MyDatabaseId)),
				 errdetail_internal("%s", detail.data),
				 errhint("Drop those destinations with calabi_push.drop_destination() (a superuser may), then drop the role.")));
}

/*
 * The roles a DROP ROLE names that exist, with their oids, when this
 * database has calabi_push; else nothing.
 */
static pg_noinline void
roles_being_dropped(Node *stmt, List **names, List **oids)
{
	ListCell   *lc;

	*names = NIL;
	*oids = NIL;
	if (!IsA(stmt, DropRoleStmt) || !OidIsValid(get_extension_oid("calabi_push", true)))
		return;
	foreach(lc, ((DropRoleStmt *) stmt)->roles)
	{
		RoleSpec   *spec = lfirst(lc);
		Oid			roleid;

		/* CURRENT_USER and the like are refused by DROP ROLE itself */
		if (spec->roletype != ROLESPEC_CSTRING)
			continue;
		roleid = get_role_oid(spec->rolename, true);
		if (!OidIsValid(roleid))
			continue;
		*names = lappend(*names, pstrdup(spec->rolename));
		*oids = lappend_oid(*oids, roleid);
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

static void
calabi_push_process_utility(PlannedStmt *pstmt, const char *queryString,
							bool readOnlyTree, ProcessUtilityContext context,
							ParamListInfo params, QueryEnvironment *queryEnv,
							DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;
	volatile Oid dboid = cp_shared ? database_needing_exclusive_access(stmt) : InvalidOid;
	List	   *volatile paused = NIL;
	List	   *drop_role_names;
	List	   *drop_role_oids;

	roles_being_dropped(stmt, &drop_role_names, &drop_role_oids);

	if (OidIsValid(dboid))
		paused = pause_database(dboid);

	PG_TRY();
	{
		/* a cancel while waiting must let the workers start again too */
		if (paused != NIL)
			wait_for_database_workers(dboid);
		if (prev_process_utility)
			prev_process_utility(pstmt, queryString, readOnlyTree, context,
								 params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		resume_database(dboid, paused);
		PG_RE_THROW();
	}
	PG_END_TRY();

	/* a dropped database's slots are freed by the launcher (should_run off) */
	if (!IsA(stmt, DropdbStmt))
		resume_database(dboid, paused);

	refuse_drop_of_run_as_roles(drop_role_names, drop_role_oids);
}

void
cp_launcher_init_backend_hooks(void)
{
	RegisterXactCallback(launcher_xact_callback, NULL);
	RegisterSubXactCallback(launcher_subxact_callback, NULL);
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = calabi_push_process_utility;
	prev_object_access = object_access_hook;
	object_access_hook = calabi_push_object_access;
}
