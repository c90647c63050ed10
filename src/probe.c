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

/* Tell the launcher which syncs of this database should run. */
static void
probe_database(void)
{
	List	   *ids;
	ListCell   *lc;

	/* copies of syncs made elsewhere are stopped, never started */
	cp_home_check_syncs();
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
