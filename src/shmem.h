/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  Shared state of calabi_push: one slot per sync that should run (or has
 *	  a worker), in whichever database; the slots of database probes; the
 *	  launcher's pid.
 *
 * The catalog tables of each database are the truth; the slots mirror which
 * syncs should run, so that the launcher, which is connected to no database,
 * can start and stop their workers, and so that sync_status can show what a
 * worker is doing right now.  All fields are protected by CpShared->lock.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_SHMEM_H
#define CALABI_PUSH_SHMEM_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "access/xlogdefs.h"
#include "storage/lwlock.h"
#include "utils/uuid.h"

/* What a worker is doing, for sync_status. */
typedef enum CpRunState
{
	CP_RUN_NONE = 0,			/* no worker */
	CP_RUN_STARTING,			/* launched, not yet sending */
	CP_RUN_RUNNING,				/* reading and sending */
	CP_RUN_RETRYING,			/* waiting to retry a batch */
	CP_RUN_IDLE,				/* run complete, waiting for the schedule */
	CP_RUN_NO_WORKER,			/* no background worker free to start it */
	CP_RUN_CREATING_SLOT,		/* CDC: creating its slot, which may wait
								 * for the transactions running then */
	CP_RUN_WAITING_FOR_STANDBYS /* CDC, failover slot: the standbys of
								 * synchronized_standby_slots lack the WAL
								 * it would decode */
} CpRunState;

/* How a worker last ended, so the launcher knows whether to restart it. */
typedef enum CpExitKind
{
	CP_EXIT_UNKNOWN = 0,		/* died (signal, FATAL): restart with backoff */
	CP_EXIT_ERROR,				/* caught an error: restart with backoff */
	CP_EXIT_DONE,				/* run complete, no schedule: wait for start */
	CP_EXIT_REFUSED,			/* endpoint refused a batch: stopped in error */
	CP_EXIT_GONE				/* sync disabled/dropped meanwhile */
} CpExitKind;

/*
 * The life of a slot, and of the worker it launches.  Only the functions of
 * shmem.c move a slot from one to another (each named for the event that
 * does); the launcher acts on what it finds (reconcile in launcher.c).
 *
 *	 FREE -> REQUESTED (start_sync, a probe) -> STARTING (registered) ->
 *	 RUNNING (attached) -> STOPPING (SIGTERM sent: stop_sync, drop_sync, a
 *	 restart).  When its worker exits, a slot goes back to REQUESTED (start
 *	 anew), BACKOFF (failed: start later), WAITING (done, refused: wait for
 *	 start_sync) or FREE (should no longer run).  A sync that should no
 *	 longer run and has no worker is FREE at once.
 */
typedef enum CpSlotLife
{
	CP_SLOT_FREE = 0,			/* not in use */
	CP_SLOT_WAITING,			/* no worker, none due: waits for start_sync */
	CP_SLOT_REQUESTED,			/* no worker: start one at once */
	CP_SLOT_BACKOFF,			/* no worker: start one at next_start */
	CP_SLOT_STARTING,			/* worker registered, not yet attached */
	CP_SLOT_RUNNING,			/* worker attached: pid set */
	CP_SLOT_STOPPING			/* worker told to exit */
} CpSlotLife;

/* What the launcher knows of any slot, a sync's or a probe's. */
typedef struct CpProcSlot
{
	CpSlotLife	life;
	Oid			dboid;
	uint64		generation;		/* bumped at each launch: stale workers can
								 * tell */
	pid_t		pid;			/* worker's pid once attached, else 0 */
} CpProcSlot;

/* Whether a worker of the slot was registered and has not exited. */
static inline bool
cp_slot_has_worker(const CpProcSlot *proc)
{
	return proc->life == CP_SLOT_STARTING || proc->life == CP_SLOT_RUNNING ||
		proc->life == CP_SLOT_STOPPING;
}

/* One sync that should run, or whose worker has yet to exit. */
typedef struct CpSyncSlot
{
	CpProcSlot	proc;
	pg_uuid_t	sync_id;
	bool		should_run;		/* desired state, set at commit */
	bool		start_pending;	/* asked to start while its worker ran */

	/* the restart backoff */
	int			failures;		/* consecutive failed runs */
	TimestampTz next_start;		/* not before (BACKOFF) */
	CpExitKind	last_exit;

	/* the worker's live state, for sync_status */
	CpRunState	state;
	TimestampTz started_at;
	int64		retries;		/* this run, not yet recorded in the catalog */
	TimestampTz retry_at;		/* when RETRYING: next attempt */

	/* CDC: positions sent and acknowledged, and the lag's origin */
	XLogRecPtr	cdc_sent_lsn;
	XLogRecPtr	cdc_acked_lsn;
	TimestampTz cdc_pending_since;	/* oldest unacknowledged commit; 0: none */
} CpSyncSlot;

/*
 * A database probe (probe.c): asked for by the launcher at its start, and
 * by drop_sync or DROP EXTENSION at commit.  Probes have slots of their
 * own, so that one runs even when every sync slot is taken.  A probe asked
 * for while one of the same database runs runs again after it (again):
 * the running one may have read the catalog before the asking transaction
 * committed.
 */
#define CP_PROBE_SLOTS 8

typedef struct CpProbeSlot
{
	CpProcSlot	proc;
	bool		again;
} CpProbeSlot;

/*
 * On a hot standby, the databases whose last probe found syncs that run on
 * this server (option run_on): the launcher probes them often, the others
 * seldom (launcher.c).  More of them than fit: every database often.
 */
#define CP_STANDBY_DBS 64

typedef struct CpShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	CpProbeSlot probes[CP_PROBE_SLOTS];
	Oid			standby_dbs[CP_STANDBY_DBS];	/* InvalidOid: unused */
	bool		standby_dbs_overflow;
	int			nslots;
	CpSyncSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} CpShared;

extern CpShared *cp_shared;
extern int	cp_max_syncs;

extern void cp_shmem_init(void);
extern void cp_shmem_attach(void);

/*
 * The events of a slot's life; the lock is held exclusively by the caller
 * of each.
 */

/* A backend: the sync should run (now; restart: stop its worker first). */
extern CpSyncSlot *cp_sync_slot_start(Oid dboid, const pg_uuid_t *sync_id,
									  bool restart);
/* A backend: the sync should not run; its worker, if any, is stopped. */
extern void cp_sync_slot_stop(CpSyncSlot *slot);
/* A backend: a probe of the database is wanted; false: no slot free. */
extern bool cp_probe_slot_request(Oid dboid);

/* The launcher: a worker is to be launched for proc; its generation. */
extern uint64 cp_slot_launching(CpProcSlot *proc);
extern void cp_slot_launched(CpProcSlot *proc);
extern void cp_sync_slot_launched(CpSyncSlot *slot);
/* The launcher: no background worker was free for the sync. */
extern void cp_sync_slot_no_worker(CpSyncSlot *slot);

/* The worker, at its start: false if the slot no longer wants it. */
extern bool cp_sync_slot_attach(CpSyncSlot *slot, uint64 generation);
extern bool cp_probe_slot_attach(CpProbeSlot *probe, uint64 generation);

/* The worker's exit, or the launcher noticing a worker gone without it. */
extern void cp_sync_slot_exited(CpSyncSlot *slot, CpExitKind how);
extern void cp_probe_slot_exited(CpProbeSlot *probe);

/* Find the slot of a sync (lock held by caller); NULL when none. */
extern CpSyncSlot *cp_slot_find(Oid dboid, const pg_uuid_t *sync_id);
/* Whether the sync has a slot or could claim one (lock held). */
extern bool cp_slot_available(Oid dboid, const pg_uuid_t *sync_id);

/* Wake the launcher (SIGUSR1 sets its latch). */
extern void cp_wake_launcher(void);

/* A standby's probe: whether its database has syncs that run here. */
extern void cp_standby_db_note(Oid dboid, bool has_syncs);

#endif							/* CALABI_PUSH_SHMEM_H */
