/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  A sync worker (one per running sync).
 *
 * One error boundary: any error is logged, recorded in the sync's row for
 * sync_status, and ends the process; the launcher restarts it with backoff.
 * A refusal by the endpoint (a 4xx other than 408/409/413/425/429) stops
 * the sync instead: retrying would only be refused again; so does a CDC
 * slot that cannot continue (only resync can).
 *
 * SIGTERM (stop_sync, a server's shutdown, pg_terminate_backend) ends a
 * worker at once, as die() ends a backend, unless the code it runs asked
 * for a clean stop (CpStopMode): a CDC sync's run awaits the answer to the
 * batch it sent, for CP_STOP_GRACE_MS at most, checkpoints what the endpoint
 * acknowledged and exits (cdc_sync.c), so that a clean restart sends
 * nothing twice.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "compressor.h"
#include "method.h"
#include "reader.h"
#include "xact.h"

PGDLLEXPORT void calabi_push_worker_main(Datum main_arg);

static int	my_slotno = -1;
static uint64 my_generation = 0;
static CpExitKind my_exit = CP_EXIT_UNKNOWN;
static pg_uuid_t my_sync_id;

/* SIGTERM arrived, and what it does in the code running now */
static volatile sig_atomic_t stop_requested = false;
static volatile sig_atomic_t stop_mode = CP_STOP_DIE;
static TimestampTz stop_deadline = 0;	/* set when the stop is first served */

static CpSyncSlot *
my_slot(void)
{
	CpSyncSlot *slot = &cp_shared->slots[my_slotno];

	return slot->proc.generation == my_generation &&
		cp_slot_has_worker(&slot->proc) ? slot : NULL;
}

static void
worker_detach(int code, Datum arg)
{
	CpSyncSlot *slot;

	/* an error may have left our lock held: this runs before any cleanup */
	LWLockReleaseAll();
	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	slot = my_slot();
	if (slot != NULL)
		cp_sync_slot_exited(slot, my_exit);
	LWLockRelease(cp_shared->lock);
	cp_wake_launcher();
}

/* a CDC failover slot's wait for the standbys (cp_worker_standby_wait) */
static bool standby_wait = false;

void
cp_worker_set_state(CpRun *run, CpRunState state, TimestampTz retry_at)
{
	/*
	 * While the standbys hold the decoding back, deliveries go on and each
	 * acknowledgement says "running": the wait stays what sync_status shows.
	 */
	if (state == CP_RUN_RUNNING && standby_wait)
		state = CP_RUN_WAITING_FOR_STANDBYS;
	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	if (my_slot() != NULL)
	{
		CpSyncSlot *slot = my_slot();

		if (state == CP_RUN_RETRYING)
			slot->retries++;
		slot->state = state;
		slot->retry_at = retry_at;
	}
	LWLockRelease(cp_shared->lock);
}

void
cp_worker_standby_wait(bool waiting)
{
	if (waiting == standby_wait)
		return;
	standby_wait = waiting;
	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	if (my_slot() != NULL)
	{
		CpSyncSlot *slot = my_slot();

		if (waiting && slot->state == CP_RUN_RUNNING)
			slot->state = CP_RUN_WAITING_FOR_STANDBYS;
		else if (!waiting && slot->state == CP_RUN_WAITING_FOR_STANDBYS)
			slot->state = CP_RUN_RUNNING;
	}
	LWLockRelease(cp_shared->lock);
}

/*
 * The endpoint acknowledged a batch: the sync makes progress, so a later
 * failure of its worker starts the restart backoff from its shortest delay
 * again.  Nothing else resets it: a worker that fails before it delivers
 * anything (a dropped relation, an unreachable endpoint) backs off.
 */
void
cp_worker_acknowledged(void)
{
	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	if (my_slot() != NULL)
		my_slot()->failures = 0;
	LWLockRelease(cp_shared->lock);
}

void
cp_worker_report_cdc(XLogRecPtr sent, XLogRecPtr acked, TimestampTz pending_since)
{
	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	if (my_slot() != NULL)
	{
		CpSyncSlot *slot = my_slot();

		slot->cdc_sent_lsn = sent;
		slot->cdc_acked_lsn = acked;
		slot->cdc_pending_since = pending_since;
	}
	LWLockRelease(cp_shared->lock);
}

/*
 * SIGTERM.  A second one changes nothing: a clean stop under way goes on,
 * bounded by CP_STOP_GRACE_MS.
 */
static void
worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	stop_requested = true;
	switch ((CpStopMode) stop_mode)
	{
		case CP_STOP_DIE:
			die(postgres_signal_arg);
			break;
		case CP_STOP_CANCEL:
			/* the statement or lock wait under way ends with an ERROR */
			QueryCancelPending = true;
			InterruptPending = true;
			SetLatch(MyLatch);
			break;
		case CP_STOP_DEFER:
			SetLatch(MyLatch);
			break;
	}
	errno = save_errno;
}

CpStopMode
cp_worker_set_stop_mode(CpStopMode mode)
{
	CpStopMode	old = (CpStopMode) stop_mode;

	stop_mode = mode;

	/*
	 * A cancel the section left pending would end the next wait instead,
	 * that for the answer to a batch, say: the caller stops at its next
	 * stop point anyway.
	 */
	if (old == CP_STOP_CANCEL && mode != CP_STOP_CANCEL && stop_requested)
		QueryCancelPending = false;
	return old;
}

bool
cp_worker_stop_requested(void)
{
	return stop_requested && stop_mode != CP_STOP_DIE;
}

void
cp_worker_stop_point(void)
{
	if (cp_worker_stop_requested())
		ereport(ERROR,
				(errcode(ERRCODE_ADMIN_SHUTDOWN),
				 errmsg_internal("calabi_push sync worker stopping")));
}

bool
cp_worker_stop_caught(void)
{
	int			code = geterrcode();

	return cp_worker_stop_requested() &&
		(code == ERRCODE_ADMIN_SHUTDOWN || code == ERRCODE_QUERY_CANCELED);
}

void
cp_worker_stop_recover(MemoryContext cxt)
{
	/* from here a SIGTERM only notes: the stop is under way */
	cp_worker_set_stop_mode(CP_STOP_DEFER);
	HOLD_INTERRUPTS();
	LWLockReleaseAll();			/* outside a transaction nothing else does */
	FlushErrorState();
	AbortOutOfAnyTransaction();
	MemoryContextSwitchTo(cxt);
	RESUME_INTERRUPTS();
}

/*
 * cp_http_wait_limit while a clean stop is under way: CP_STOP_GRACE_MS from
 * the first wait that saw it (the latch wakes a wait at once).
 */
static long
stop_grace_left(void)
{
	TimestampTz now;

	if (!cp_worker_stop_requested())
		return -1;
	now = GetCurrentTimestamp();
	if (stop_deadline == 0)
		stop_deadline = TimestampTzPlusMilliseconds(now, CP_STOP_GRACE_MS);
	return TimestampDifferenceMilliseconds(now, stop_deadline);
}

void
cp_worker_wait_until(TimestampTz until)
{
	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		cp_worker_stop_point();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}

/*
 * A refusal is raised as an error, so that a refusal met while decoding
 * leaves the replayed transaction the usual way; the error boundary records
 * it as what stops the sync.
 */
static bool refused = false;

/*
 * A refusal's message, as sync_status shows it (the error says more), and
 * the same without the endpoint's response (see CpHttpResult), for the
 * error boundary: NULL when the error is no refusal, or holds no response.
 */
static char *refused_message = NULL;
static char *refused_redacted = NULL;

void
cp_worker_stop_on_error(void)
{
	refused = true;
}

void
cp_worker_stop_refused(CpRun *run, const char *message,
					   const char *message_redacted)
{
	refused_message = MemoryContextStrdup(TopMemoryContext, message);
	if (message_redacted != NULL)
		refused_redacted = MemoryContextStrdup(TopMemoryContext, message_redacted);
	refused = true;
	/* logged once, by the error boundary */
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_EXCEPTION),
			 errmsg("the sync stopped, no retry can help: %s", message),
			 errhint("Fix the cause, then run SELECT calabi_push.start_sync('%s').",
					 run->sync->name)));
}

static CpRun *
build_run(void)
{
	MemoryContext mcxt = AllocSetContextCreate(TopMemoryContext, "calabi_push run",
											   ALLOCSET_DEFAULT_SIZES);
	CpRun	   *run = MemoryContextAllocZero(mcxt, sizeof(CpRun));
	ListCell   *lc;

	run->mcxt = mcxt;
	run->chunkcxt = AllocSetContextCreate(mcxt, "calabi_push chunk",
										  ALLOCSET_DEFAULT_SIZES);
	run->deliverycxt = AllocSetContextCreate(mcxt, "calabi_push delivery",
											 ALLOCSET_DEFAULT_SIZES);
	run->sync = cp_catalog_load_sync(&my_sync_id, mcxt);
	if (run->sync == NULL || !run->sync->enabled)
		return NULL;

	run->overwrite = strcmp(run->sync->mode, "overwrite") == 0;
	run->nstreams = list_length(run->sync->streams);
	run->streams = MemoryContextAllocZero(mcxt, sizeof(CpStreamRun) * Max(run->nstreams, 1));
	run->stream_names = MemoryContextAllocZero(mcxt, sizeof(char *) * Max(run->nstreams, 1));
	foreach(lc, run->sync->streams)
		run->streams[foreach_current_index(lc)].def = lfirst(lc);
	run->batch = MemoryContextAllocZero(mcxt, sizeof(CpBatch));
	run->inflight = MemoryContextAllocZero(mcxt, sizeof(CpBatch));
	run->sending = MemoryContextAllocZero(mcxt, sizeof(CpBatch));
	cp_batch_init(run->batch, mcxt);
	cp_batch_init(run->inflight, mcxt);
	cp_batch_init(run->sending, mcxt);
	return run;
}

/*
 * The session becomes the sync's run_as role.  Whatever a read or decoding
 * runs -- a view's functions, a policy, the functions of an index
 * expression -- then sees run_as as both session_user and current_user,
 * never the superuser the worker connected as: code that trusts
 * session_user cannot be fooled, and RESET ROLE or SET SESSION
 * AUTHORIZATION lead nowhere higher.  The catalog keeps being read and
 * written as that superuser (cp_catalog_connect).  A role dropped since
 * start_sync stops the sync: nothing can be read for it.
 */
static void
become_run_as(CpRun *run)
{
	MemoryContext caller = cp_xact_start();
	HeapTuple	tuple;
	bool		rolsuper;

	tuple = SearchSysCache1(AUTHOID, ObjectIdGetDatum(run->sync->run_as));
	if (!HeapTupleIsValid(tuple))
	{
		cp_worker_stop_on_error();
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the sync cannot run: the role it reads as (OID %u) no longer exists",
						run->sync->run_as),
				 errhint("Drop the sync and create it again with another run_as role.")));
	}
	rolsuper = ((Form_pg_authid) GETSTRUCT(tuple))->rolsuper;
	ReleaseSysCache(tuple);
	cp_xact_commit(caller);

	SetSessionAuthorization(run->sync->run_as, rolsuper);
}

/* Every error of a worker says which sync it belongs to. */
static void
sync_error_context(void *arg)
{
	errcontext("calabi_push sync \"%s\"", (const char *) arg);
}

/*
 * The methods a sync worker runs (method.h).  A sync whose method is not
 * here was created by a newer version of calabi_push.
 */
static const struct
{
	const char *name;
	CpMethodRun run;
}			methods[] =
{
	{"full_refresh", cp_full_refresh_run},
	{"xmin", cp_xmin_run},
	{"cursor", cp_cursor_run},
	{"cdc", cp_cdc_run},
};

static void
run_sync(void)
{
	CpRun	   *run = build_run();
	CpMethodRun method = NULL;

	/* static: it stays on the stack of contexts for the rest of the run */
	static ErrorContextCallback errcallback;

	if (run == NULL)
	{
		my_exit = CP_EXIT_GONE;
		return;
	}
	pgstat_report_appname(psprintf("calabi_push sync %s", run->sync->name));
	errcallback.callback = sync_error_context;
	errcallback.arg = run->sync->name;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	for (int i = 0; i < lengthof(methods); i++)
		if (strcmp(run->sync->method, methods[i].name) == 0)
			method = methods[i].run;
	if (method == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the sync uses method \"%s\", which this version cannot run",
						run->sync->method),
				 errhint("Drop the sync, or update calabi_push.")));

	become_run_as(run);
	run->http = cp_http_client_create(&run->sync->dest, run->mcxt);
	if (run->sync->gzip)
	{
		run->sync->gzip_level = cp_compressor_level(run->sync->name, run->sync->gzip_level);
		run->compressor = cp_compressor_create(run->sync->gzip_level);
	}
	my_exit = method(run);
}

void
calabi_push_worker_main(Datum main_arg)
{
	CpSyncSlot *slot;
	Oid			dboid;

	my_slotno = DatumGetInt32(main_arg);
	memcpy(&my_generation, MyBgworkerEntry->bgw_extra, sizeof(uint64));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, worker_sigterm);
	cp_http_wait_limit = stop_grace_left;
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	slot = &cp_shared->slots[my_slotno];
	if (!cp_sync_slot_attach(slot, my_generation))
	{
		/* launched for a sync that was since stopped, dropped or relaunched */
		LWLockRelease(cp_shared->lock);
		proc_exit(0);
	}
	dboid = slot->proc.dboid;
	my_sync_id = slot->sync_id;
	LWLockRelease(cp_shared->lock);
	before_shmem_exit(worker_detach, (Datum) 0);

	/* a sync worker's session becomes its sync's role (become_run_as) */
	cp_catalog_connect(dboid);

	PG_TRY();
	{
		run_sync();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* the worker ends: from here a SIGTERM ends it at once */
		cp_worker_set_stop_mode(CP_STOP_DIE);
		HOLD_INTERRUPTS();
		LWLockReleaseAll();		/* outside a transaction nothing else does */
		EmitErrorReport();
		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		RESUME_INTERRUPTS();

		cp_catalog_record_error(&my_sync_id,
								refused_message ? refused_message : edata->message,
								refused_redacted, refused);
		if (refused)
		{
			my_exit = CP_EXIT_REFUSED;
			proc_exit(0);
		}
		my_exit = CP_EXIT_ERROR;
		proc_exit(1);
	}
	PG_END_TRY();

	proc_exit(0);
}
