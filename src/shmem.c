/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared slots of calabi_push, and every change of a slot's life
 *	  (see shmem.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "shmem.h"
#include "wakeup.h"

CpShared   *cp_shared = NULL;
int			cp_max_syncs = 64;

/* restart delays of a failing sync worker */
#define RESTART_DELAY_MIN_MS	1000
#define RESTART_DELAY_MAX_MS	(5 * 60 * 1000)

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif

static Size
cp_shmem_size(void)
{
	return add_size(offsetof(CpShared, slots),
					mul_size(cp_max_syncs, sizeof(CpSyncSlot)));
}

static void
cp_shmem_request(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(add_size(cp_shmem_size(), cp_wakeup_shmem_size()));
	RequestNamedLWLockTranche("calabi_push", 1);
}

static void
cp_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	cp_shared = ShmemInitStruct("calabi_push", cp_shmem_size(), &found);
	if (!found)
	{
		memset(cp_shared, 0, cp_shmem_size());
		cp_shared->lock = &(GetNamedLWLockTranche("calabi_push"))->lock;
		cp_shared->nslots = cp_max_syncs;
	}
	cp_wakeup_shmem_startup();
	LWLockRelease(AddinShmemInitLock);
}

/* From _PG_init, when loaded by shared_preload_libraries. */
void
cp_shmem_init(void)
{
#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = cp_shmem_request;
#else
	cp_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = cp_shmem_startup;
}

/*
 * Make sure this process can see the shared state: everything that needs it
 * calls this first, and gets a clear error when the library was loaded
 * without shared_preload_libraries.
 */
void
cp_shmem_attach(void)
{
	if (cp_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("calabi_push is not loaded at server start"),
				 errdetail("Syncs run in background workers that only a library loaded through shared_preload_libraries can start."),
				 errhint("Add \"calabi_push\" to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/*
 * Called by the install script: CREATE EXTENSION in a server that did not
 * preload the library warns at once, instead of the first start_sync
 * failing later.  The library knows: only a preloaded library has attached
 * the shared state (cp_shmem_startup runs in the postmaster, and every
 * backend inherits it), while this call just loaded it into this backend.
 */
PG_FUNCTION_INFO_V1(calabi_push_warn_unless_preloaded);

Datum
calabi_push_warn_unless_preloaded(PG_FUNCTION_ARGS)
{
	if (cp_shared == NULL)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("calabi_push is not loaded at server start: preview() works, but no sync can run"),
				 errdetail("Syncs run in background workers that only a library loaded through shared_preload_libraries can start."),
				 errhint("Add \"calabi_push\" to shared_preload_libraries in postgresql.conf and restart the server.")));
	PG_RETURN_VOID();
}

CpSyncSlot *
cp_slot_find(Oid dboid, const pg_uuid_t *sync_id)
{
	for (int i = 0; i < cp_shared->nslots; i++)
	{
		CpSyncSlot *slot = &cp_shared->slots[i];

		if (slot->proc.life != CP_SLOT_FREE && slot->proc.dboid == dboid &&
			memcmp(&slot->sync_id, sync_id, sizeof(pg_uuid_t)) == 0)
			return slot;
	}
	return NULL;
}

/* A free sync slot, or NULL. */
static CpSyncSlot *
free_sync_slot(void)
{
	for (int i = 0; i < cp_shared->nslots; i++)
		if (cp_shared->slots[i].proc.life == CP_SLOT_FREE)
			return &cp_shared->slots[i];
	return NULL;
}

bool
cp_slot_available(Oid dboid, const pg_uuid_t *sync_id)
{
	return cp_slot_find(dboid, sync_id) != NULL || free_sync_slot() != NULL;
}

/*
 * Take a free slot (a CpSyncSlot or a CpProbeSlot, of size bytes, whose
 * first member is its CpProcSlot) for a database, keeping its generation
 * counter.
 */
StaticAssertDecl(offsetof(CpSyncSlot, proc) == 0, "proc first in CpSyncSlot");
StaticAssertDecl(offsetof(CpProbeSlot, proc) == 0, "proc first in CpProbeSlot");

static void
claim(void *slot, Size size, Oid dboid)
{
	CpProcSlot *proc = (CpProcSlot *) slot;
	uint64		generation = proc->generation;

	Assert(proc->life == CP_SLOT_FREE);

	memset(proc, 0, size);
	proc->generation = generation;
	proc->dboid = dboid;
}

/* SIGTERM to the worker of a slot that has one attached. */
static void
stop_worker(CpProcSlot *proc)
{
	Assert(proc->life == CP_SLOT_RUNNING && proc->pid != 0);
	kill(proc->pid, SIGTERM);
	proc->life = CP_SLOT_STOPPING;
}

/*
 * Start the sync's worker now: start_sync, resync, a probe.  A worker that
 * runs is stopped if restart asks for a new one (new settings, a new run);
 * else it runs on, and a new one starts as soon as it exits, however it
 * does (the request may have come as it was finishing).  One that is
 * stopping is followed by a new one.  A worker still starting has read
 * nothing yet: it serves the request.
 */
CpSyncSlot *
cp_sync_slot_start(Oid dboid, const pg_uuid_t *sync_id, bool restart)
{
	CpSyncSlot *slot = cp_slot_find(dboid, sync_id);

	if (slot == NULL)
	{
		slot = free_sync_slot();
		if (slot == NULL)
			return NULL;
		claim(slot, sizeof(*slot), dboid);
		slot->sync_id = *sync_id;
	}
	slot->should_run = true;
	switch (slot->proc.life)
	{
		case CP_SLOT_FREE:
		case CP_SLOT_WAITING:
		case CP_SLOT_REQUESTED:
		case CP_SLOT_BACKOFF:
			/* asked for: the backoff of earlier failures no longer holds */
			slot->failures = 0;
			slot->next_start = 0;
			slot->proc.life = CP_SLOT_REQUESTED;
			break;
		case CP_SLOT_RUNNING:
			if (restart)
				stop_worker(&slot->proc);
			else
				slot->start_pending = true;
			break;
		case CP_SLOT_STARTING:
		case CP_SLOT_STOPPING:
			break;
	}
	return slot;
}

/*
 * The sync should no longer run: a slot without a worker is free at once;
 * a worker is stopped (one still starting is refused when it attaches).
 */
void
cp_sync_slot_stop(CpSyncSlot *slot)
{
	slot->should_run = false;
	switch (slot->proc.life)
	{
		case CP_SLOT_WAITING:
		case CP_SLOT_REQUESTED:
		case CP_SLOT_BACKOFF:
			slot->proc.life = CP_SLOT_FREE;
			break;
		case CP_SLOT_RUNNING:
			stop_worker(&slot->proc);
			break;
		case CP_SLOT_FREE:
		case CP_SLOT_STARTING:
		case CP_SLOT_STOPPING:
			break;
	}
}

bool
cp_probe_slot_request(Oid dboid)
{
	CpProbeSlot *free = NULL;

	for (int i = 0; i < CP_PROBE_SLOTS; i++)
	{
		CpProbeSlot *probe = &cp_shared->probes[i];

		if (probe->proc.life == CP_SLOT_FREE)
		{
			if (free == NULL)
				free = probe;
		}
		else if (probe->proc.dboid == dboid)
		{
			if (probe->proc.life != CP_SLOT_REQUESTED)
				probe->again = true;
			return true;
		}
	}
	if (free == NULL)
		return false;
	claim(free, sizeof(*free), dboid);
	free->proc.life = CP_SLOT_REQUESTED;
	return true;
}

uint64
cp_slot_launching(CpProcSlot *proc)
{
	Assert(proc->life == CP_SLOT_REQUESTED || proc->life == CP_SLOT_BACKOFF);
	return ++proc->generation;
}

void
cp_slot_launched(CpProcSlot *proc)
{
	proc->life = CP_SLOT_STARTING;
	proc->pid = 0;
}

void
cp_sync_slot_launched(CpSyncSlot *slot)
{
	cp_slot_launched(&slot->proc);
	slot->start_pending = false;
	slot->last_exit = CP_EXIT_UNKNOWN;
	slot->state = CP_RUN_STARTING;
	slot->started_at = GetCurrentTimestamp();
	slot->retries = 0;
}

/* Tried again at each of the launcher's passes, backoff or not. */
void
cp_sync_slot_no_worker(CpSyncSlot *slot)
{
	slot->proc.life = CP_SLOT_REQUESTED;
	slot->state = CP_RUN_NO_WORKER;
}

/* The worker launched for generation, if the slot still waits for it. */
static bool
attach(CpProcSlot *proc, uint64 generation)
{
	if (proc->generation != generation || proc->life != CP_SLOT_STARTING)
		return false;
	proc->pid = MyProcPid;
	proc->life = CP_SLOT_RUNNING;
	return true;
}

bool
cp_sync_slot_attach(CpSyncSlot *slot, uint64 generation)
{
	if (!attach(&slot->proc, generation))
		return false;
	if (!slot->should_run)
	{
		/* stopped while it started: it ends at once, as if it had run */
		cp_sync_slot_exited(slot, CP_EXIT_GONE);
		return false;
	}
	return true;
}

bool
cp_probe_slot_attach(CpProbeSlot *probe, uint64 generation)
{
	return attach(&probe->proc, generation);
}

/*
 * Delay before the n-th consecutive restart: 1 s, doubling up to 5 min.
 */
static void
schedule_restart(CpSyncSlot *slot)
{
	int64		delay = RESTART_DELAY_MIN_MS;

	slot->failures++;
	for (int i = 1; i < slot->failures && delay < RESTART_DELAY_MAX_MS; i++)
		delay *= 2;
	delay = Min(delay, RESTART_DELAY_MAX_MS);
	slot->next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);
}

/*
 * A worker told to stop, or asked for again while it ran, starts anew if
 * the sync should run; one that failed on its own is restarted after a
 * delay; one that finished (or was refused) waits for start_sync.
 */
void
cp_sync_slot_exited(CpSyncSlot *slot, CpExitKind how)
{
	bool		stopped = slot->proc.life == CP_SLOT_STOPPING ||
		slot->start_pending;

	Assert(cp_slot_has_worker(&slot->proc));
	slot->proc.pid = 0;
	slot->state = CP_RUN_NONE;
	slot->last_exit = how;
	if (!slot->should_run)
		slot->proc.life = CP_SLOT_FREE;
	else if (stopped)
	{
		slot->failures = 0;
		slot->next_start = 0;
		slot->proc.life = CP_SLOT_REQUESTED;
	}
	else if (how == CP_EXIT_UNKNOWN || how == CP_EXIT_ERROR)
	{
		schedule_restart(slot);
		slot->proc.life = CP_SLOT_BACKOFF;
	}
	else
		slot->proc.life = CP_SLOT_WAITING;
}

void
cp_probe_slot_exited(CpProbeSlot *probe)
{
	Assert(cp_slot_has_worker(&probe->proc));
	probe->proc.pid = 0;
	probe->proc.life = probe->again ? CP_SLOT_REQUESTED : CP_SLOT_FREE;
	probe->again = false;
}

void
cp_standby_db_note(Oid dboid, bool has_syncs)
{
	int			free_entry = -1;

	for (int i = 0; i < CP_STANDBY_DBS; i++)
	{
		if (cp_shared->standby_dbs[i] == dboid)
		{
			if (!has_syncs)
				cp_shared->standby_dbs[i] = InvalidOid;
			return;
		}
		if (cp_shared->standby_dbs[i] == InvalidOid && free_entry < 0)
			free_entry = i;
	}
	if (!has_syncs)
		return;
	if (free_entry >= 0)
		cp_shared->standby_dbs[free_entry] = dboid;
	else
		cp_shared->standby_dbs_overflow = true;
}

void
cp_wake_launcher(void)
{
	pid_t		pid;

	LWLockAcquire(cp_shared->lock, LW_SHARED);
	pid = cp_shared->launcher_pid;
	LWLockRelease(cp_shared->lock);
	if (pid != 0)
		kill(pid, SIGUSR1);
}
