/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared slots of calabi_push (see shmem.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

#include "shmem.h"
#include "wakeup.h"

CpShared   *cp_shared = NULL;
int			cp_max_syncs = 64;

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

		if (slot->in_use && !slot->probe && slot->dboid == dboid &&
			memcmp(&slot->sync_id, sync_id, sizeof(pg_uuid_t)) == 0)
			return slot;
	}
	return NULL;
}

CpSyncSlot *
cp_slot_claim(Oid dboid, const pg_uuid_t *sync_id)
{
	CpSyncSlot *slot = cp_slot_find(dboid, sync_id);

	if (slot != NULL)
		return slot;
	for (int i = 0; i < cp_shared->nslots; i++)
	{
		slot = &cp_shared->slots[i];
		if (!slot->in_use)
		{
			uint64		generation = slot->generation;

			memset(slot, 0, sizeof(*slot));
			slot->generation = generation;	/* keeps growing: stale
											 * workers can tell */
			slot->in_use = true;
			slot->dboid = dboid;
			slot->sync_id = *sync_id;
			return slot;
		}
	}
	return NULL;
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
