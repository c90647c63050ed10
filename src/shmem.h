/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  Shared state of calabi_push: one slot per sync that should run (or has
 *	  a worker), in whichever database; the launcher's pid.
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
	CP_RUN_CREATING_SLOT		/* CDC: creating its slot, which may wait
								 * for the transactions running then */
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

typedef struct CpSyncSlot
{
	bool		in_use;
	Oid			dboid;
	pg_uuid_t	sync_id;
	bool		probe;			/* a database probe, not a sync */

	/* desired state, set at commit by the management functions */
	bool		should_run;
	bool		kick;			/* start now: start_sync / resync / probe */
	bool		restart;		/* stop the running worker, then start anew */

	/* the launcher's bookkeeping */
	uint64		generation;		/* bumped at each launch */
	pid_t		pid;			/* worker's pid once attached, else 0 */
	bool		launched;		/* a worker was registered and not reaped */
	bool		signalled;		/* SIGTERM sent */
	int			failures;		/* consecutive failed runs: backoff */
	TimestampTz next_start;		/* not before (backoff) */
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

typedef struct CpShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	int			nslots;
	CpSyncSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} CpShared;

extern CpShared *cp_shared;
extern int	cp_max_syncs;

extern void cp_shmem_init(void);
extern void cp_shmem_attach(void);

/* Find the slot of a sync (lock held by caller); NULL when none. */
extern CpSyncSlot *cp_slot_find(Oid dboid, const pg_uuid_t *sync_id);
/* Find or claim a slot (exclusive lock held); NULL when all are in use. */
extern CpSyncSlot *cp_slot_claim(Oid dboid, const pg_uuid_t *sync_id);

/* Wake the launcher (SIGUSR1 sets its latch). */
extern void cp_wake_launcher(void);

#endif							/* CALABI_PUSH_SHMEM_H */
