/*-------------------------------------------------------------------------
 *
 * probe.c
 *	  A database probe: a short-lived background worker the launcher sends
 *	  into each database at its start, and into one database after
 *	  drop_sync or DROP EXTENSION there.
 *
 * The launcher is connected to no database; a probe tells it which syncs of
 * its database should run, stops the copies of syncs made elsewhere, drops
 * the replication slots of syncs that no longer exist, and exits.  It runs
 * in a probe slot of shared memory, never a sync's: it runs even when every
 * one of calabi_push.max_syncs is taken.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"

#include "catalog.h"
#include "cdc_slot.h"
#include "home.h"
#include "shmem.h"
#include "state_file.h"

PGDLLEXPORT void calabi_push_probe_main(Datum main_arg);

static int	my_probeno = -1;
static uint64 my_generation = 0;

static void
probe_detach(int code, Datum arg)
{
	CpProbeSlot *probe = &cp_shared->probes[my_probeno];

	/* an error may have left our lock held: this runs before any cleanup */
	LWLockReleaseAll();
	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	if (probe->proc.generation == my_generation && cp_slot_has_worker(&probe->proc))
		cp_probe_slot_exited(probe);
	LWLockRelease(cp_shared->lock);
	cp_wake_launcher();
}

/*
 * On a hot standby: the syncs of this database that run here (option
 * run_on).  What the primary decides -- start_sync, stop_sync, resync,
 * drop_sync -- arrives as replayed catalog rows, which tell no process
 * here: the launcher sends a probe every CP_STANDBY_PROBE_MS to look, and
 * the probe brings the slots in line.  The workers apply the commands to
 * their state files when they start (sql/install/24_run_on.sql).
 */
static void
probe_standby(void)
{
	List	   *syncs = cp_catalog_standby_syncs();
	ListCell   *lc;

	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	foreach(lc, syncs)
	{
		CpStandbySync *sync = lfirst(lc);
		CpSyncSlot *slot = cp_slot_find(MyDatabaseId, &sync->id);

		if (!sync->run)
		{
			if (slot != NULL && slot->should_run)
				cp_sync_slot_stop(slot);
		}
		/*
		 * A command restarts the worker, which applies it; one waiting out
		 * its backoff after failures applies it when it starts (restarting
		 * it at each probe would undo the backoff).
		 */
		else if ((sync->commanded && (slot == NULL || slot->proc.life != CP_SLOT_BACKOFF)) ||
				 slot == NULL || !slot->should_run)
		{
			if (cp_sync_slot_start(MyDatabaseId, &sync->id, sync->commanded) == NULL)
			{
				ereport(WARNING,
						(errmsg("calabi_push cannot run every enabled sync: calabi_push.max_syncs (%d) is too low",
								cp_max_syncs),
						 errhint("Raise calabi_push.max_syncs and restart the server.")));
				break;
			}
		}
	}
	/* dropped on the primary, or moved to another server */
	for (int i = 0; i < cp_shared->nslots; i++)
	{
		CpSyncSlot *slot = &cp_shared->slots[i];
		bool		listed = false;

		if (slot->proc.life == CP_SLOT_FREE || slot->proc.dboid != MyDatabaseId ||
			!slot->should_run)
			continue;
		foreach(lc, syncs)
			if (memcmp(&((CpStandbySync *) lfirst(lc))->id, &slot->sync_id,
					   sizeof(pg_uuid_t)) == 0)
				listed = true;
		if (!listed)
			cp_sync_slot_stop(slot);
	}
	cp_standby_db_note(MyDatabaseId, syncs != NIL);
	LWLockRelease(cp_shared->lock);

	/*
	 * The files of syncs dropped on the primary go; a sync that runs
	 * elsewhere keeps its file (the cluster_name may come back).
	 */
	cp_state_file_remove_others(MyDatabaseId, cp_catalog_sync_ids());

	/*
	 * The slots the CDC syncs that ran here made on this standby (16+),
	 * once drop_sync is replayed: left, each would hold WAL here, and the
	 * primary's vacuum through hot_standby_feedback.
	 */
	cp_cdc_drop_orphan_slots();
}

/* Tell the launcher which syncs of this database should run. */
static void
probe_database(void)
{
	List	   *ids;
	ListCell   *lc;

	if (RecoveryInProgress())
	{
		probe_standby();
		return;
	}

	/* copies of syncs made elsewhere are stopped, never started */
	cp_home_check_syncs();
	/* what this server kept in state files while it was a standby */
	cp_catalog_import_states();
	ids = cp_catalog_enabled_syncs();

	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	foreach(lc, ids)
	{
		if (cp_sync_slot_start(MyDatabaseId, lfirst(lc), false) == NULL)
		{
			ereport(WARNING,
					(errmsg("calabi_push cannot run every enabled sync: calabi_push.max_syncs (%d) is too low",
							cp_max_syncs),
					 errhint("Raise calabi_push.max_syncs and restart the server.")));
			break;
		}
	}
	LWLockRelease(cp_shared->lock);

	/* the slots of dropped CDC syncs (drop_sync, DROP EXTENSION) */
	cp_cdc_drop_orphan_slots();
}

void
calabi_push_probe_main(Datum main_arg)
{
	Oid			dboid;

	my_probeno = DatumGetInt32(main_arg);
	memcpy(&my_generation, MyBgworkerEntry->bgw_extra, sizeof(uint64));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	if (!cp_probe_slot_attach(&cp_shared->probes[my_probeno], my_generation))
	{
		LWLockRelease(cp_shared->lock);
		proc_exit(0);
	}
	dboid = cp_shared->probes[my_probeno].proc.dboid;
	LWLockRelease(cp_shared->lock);
	before_shmem_exit(probe_detach, (Datum) 0);

	cp_catalog_connect(dboid);
	pgstat_report_appname("calabi_push probe");
	probe_database();
	proc_exit(0);
}
