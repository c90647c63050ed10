/*-------------------------------------------------------------------------
 *
 * status.c
 *	  calabi_push._sync_runtime(): what the workers of this database's syncs
 *	  are doing right now, from shared memory, for the sync_status view.
 *
 * A view runs the functions it calls with the privileges of the role that
 * queries it, so EXECUTE on this function is granted to PUBLIC and the
 * function itself admits exactly the roles that may read the view: those
 * with SELECT on calabi_push.sync_status (superusers and the extension's
 * owner among them).  Granting SELECT on the view is then all a DBA does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

#include "compat.h"
#include "shmem.h"
#include "status.h"

PG_FUNCTION_INFO_V1(calabi_push_sync_runtime);

static const char *
state_name(CpRunState state)
{
	switch (state)
	{
		case CP_RUN_STARTING:
			return "starting";
		case CP_RUN_RUNNING:
			return "running";
		case CP_RUN_RETRYING:
			return "retrying";
		case CP_RUN_IDLE:
			return "idle";
		case CP_RUN_NO_WORKER:
			return "waiting_for_worker";
		case CP_RUN_CREATING_SLOT:
			/* sync_status tells whether it waits, and for whom */
			return "creating_slot";
		case CP_RUN_WAITING_FOR_STANDBYS:
			return "waiting_for_standbys";
		case CP_RUN_NONE:
			break;
	}
	return NULL;
}

static const char *
exit_name(CpExitKind kind)
{
	switch (kind)
	{
		case CP_EXIT_ERROR:
			return "error";
		case CP_EXIT_DONE:
			return "done";
		case CP_EXIT_REFUSED:
			return "refused";
		case CP_EXIT_GONE:
			return "gone";
		case CP_EXIT_UNKNOWN:
			break;
	}
	return NULL;
}

/*
 * The functions sync_status calls are executable by PUBLIC, since a view
 * checks EXECUTE as the role querying it; they answer exactly the roles
 * that may read the view.
 */
void
cp_require_status_reader(FunctionCallInfo fcinfo)
{
	Oid			nsp = get_func_namespace(fcinfo->flinfo->fn_oid);
	Oid			view = get_relname_relid("sync_status", nsp);

	if (!OidIsValid(view) ||
		pg_class_aclcheck(view, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s",
						get_func_name(fcinfo->flinfo->fn_oid)),
				 errdetail("Only roles allowed to read the view sync_status may call it."),
				 errhint("Query calabi_push.sync_status; a superuser grants it with GRANT SELECT ON calabi_push.sync_status TO the role.")));
}

#define RUNTIME_COLUMNS 12

Datum
calabi_push_sync_runtime(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleDesc	tupdesc;
	Tuplestorestate *store;
	MemoryContext oldcontext;

	cp_require_status_reader(fcinfo);

	cp_shmem_attach();

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	oldcontext = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	store = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = store;
	rsinfo->setDesc = CreateTupleDescCopy(tupdesc);
	MemoryContextSwitchTo(oldcontext);

	LWLockAcquire(cp_shared->lock, LW_SHARED);
	for (int i = 0; i < cp_shared->nslots; i++)
	{
		CpSyncSlot *slot = &cp_shared->slots[i];
		Datum		values[RUNTIME_COLUMNS];
		bool		nulls[RUNTIME_COLUMNS];
		const char *state = state_name(slot->state);
		const char *last_exit = exit_name(slot->last_exit);
		bool		launched = cp_slot_has_worker(&slot->proc);
		pg_uuid_t  *id;

		if (slot->proc.life == CP_SLOT_FREE || slot->proc.dboid != MyDatabaseId)
			continue;
		memset(nulls, 0, sizeof(nulls));
		id = palloc(sizeof(pg_uuid_t));
		*id = slot->sync_id;
		values[0] = UUIDPGetDatum(id);
		values[1] = BoolGetDatum(slot->should_run);
		nulls[2] = slot->proc.pid == 0;
		values[2] = Int32GetDatum(slot->proc.pid);
		/* a slot without a worker shows only why it has none */
		nulls[3] = state == NULL ||
			(!launched && slot->state != CP_RUN_NO_WORKER);
		values[3] = state ? CStringGetTextDatum(state) : (Datum) 0;
		nulls[4] = !launched;
		values[4] = TimestampTzGetDatum(slot->started_at);
		values[5] = Int64GetDatum(slot->retries);
		nulls[6] = slot->state != CP_RUN_RETRYING || !launched;
		values[6] = TimestampTzGetDatum(slot->retry_at);
		nulls[7] = launched || slot->next_start == 0;
		values[7] = TimestampTzGetDatum(slot->next_start);
		nulls[8] = last_exit == NULL;
		values[8] = last_exit ? CStringGetTextDatum(last_exit) : (Datum) 0;
		nulls[9] = !launched || slot->cdc_sent_lsn == InvalidXLogRecPtr;
		values[9] = LSNGetDatum(slot->cdc_sent_lsn);
		nulls[10] = !launched || slot->cdc_acked_lsn == InvalidXLogRecPtr;
		values[10] = LSNGetDatum(slot->cdc_acked_lsn);
		nulls[11] = !launched || slot->cdc_pending_since == 0;
		values[11] = TimestampTzGetDatum(slot->cdc_pending_since);
		tuplestore_putvalues(store, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(cp_shared->lock);
	return (Datum) 0;
}
