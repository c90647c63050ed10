/*-------------------------------------------------------------------------
 *
 * home.c
 *	  Where a sync belongs, and what happens to one found in a copy.
 *
 * A sync's identity at the endpoint is its id: Calabi-Sync-Id, the
 * Idempotency-Keys "<id>:<n>", the batch numbers reserved in its row, and
 * for CDC the replication slot named after it.  pg_dump writes the row with
 * its id, enabled flag, checkpoints and next_batch_seq, and a data directory
 * copied by a base backup holds it too.  A copy that ran it would send under
 * the original's identity: both reserve the same batch numbers, and the
 * copy's slot handling meets the original's slot.
 *
 * So each sync records its home (sync.home_system, home_database,
 * home_timeline): the cluster's system identifier, the database's OID and
 * the timeline it was created or adopted on.  What each tells apart:
 *
 * - a dump restored into another cluster: the system identifier (initdb
 *   draws a new one; so does pg_upgrade's new cluster);
 * - a dump restored into another database of the same cluster, or CREATE
 *   DATABASE ... TEMPLATE: the database OID;
 * - a physical copy (base backup, snapshot) promoted or recovered: same
 *   system identifier and OID, but recovery ends on a new timeline.  That is
 *   also what a failover looks like, which must go on running the syncs.
 *   The server cannot know in general whether the server it was copied from
 *   still runs; it can ask the one it streamed from: at the first probe
 *   after the timeline moved, the probe connects to primary_conninfo (as a
 *   walreceiver would) and asks IDENTIFY_SYSTEM.  A server of the same
 *   system answering there means a copy beside a live primary: the syncs
 *   are marked copies for good (home_timeline 0).  No primary_conninfo, or
 *   nothing answering within CONNECT_TIMEOUT_MS, is taken for a failover:
 *   the syncs are bound to the new timeline and run.  A clone whose
 *   primary_conninfo was removed, or that cannot reach its primary (a
 *   network split), is not detected (docs/operations.md says so).
 *
 * A copied sync does not start (the probe stops it, start_sync and resync
 * refuse it, a worker stops it); sync_status shows it as 'copied' with the
 * way out: adopt_sync() gives it a new identity and a fresh start, or, for
 * a superuser whose original server is gone, keeps the identity.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xlog.h"
#if PG_VERSION_NUM >= 150000
#include "access/xlogrecovery.h"
#endif
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "replication/walreceiver.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timeout.h"

#include "catalog.h"
#include "compat.h"
#include "home.h"
#include "status.h"
#include "xact.h"

/* how long the probe waits for the server at primary_conninfo */
#define CONNECT_TIMEOUT_MS 10000

PG_FUNCTION_INFO_V1(calabi_push_here);
PG_FUNCTION_INFO_V1(calabi_push_copied);

/* The timeline of this server: written on now, or (in recovery) replayed. */
static TimeLineID
current_timeline(void)
{
	TimeLineID	tli = 0;

	if (RecoveryInProgress())
		(void) GetXLogReplayRecPtr(&tli);
	else
		tli = cp_insertion_timeline();
	return tli;
}

/* _here(): the home of a sync created or adopted now. */
Datum
calabi_push_here(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int64GetDatum((int64) GetSystemIdentifier());
	values[1] = ObjectIdGetDatum(MyDatabaseId);
	values[2] = Int32GetDatum((int32) current_timeline());
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * NULL when a sync with that home belongs here; else why not, with the way
 * out (sync_status.last_error shows it as it is).  A hot standby compares
 * no timeline: it replays its primary's.  Neither does a sync whose run_on
 * names this server (runs_here_by_name): promoted, this server carries on
 * the progress it kept as a standby, whoever ran the sync's catalog row
 * (the probe binds it to the new timeline, sql/install/24_run_on.sql).
 */
static char *
copied_reason(const char *name, int64 home_system, Oid home_database,
			  int32 home_timeline, bool runs_here_by_name)
{
	TimeLineID	tli;

	if ((uint64) home_system != GetSystemIdentifier())
		return psprintf("sync \"%s\" is a copy made in another cluster (a restored dump or a copied data directory): it does not run under the original's identity; give it its own with calabi_push.adopt_sync('%s'), or drop it",
						name, name);
	if (home_database != MyDatabaseId)
		return psprintf("sync \"%s\" is a copy made in another database of this cluster (a restored dump or CREATE DATABASE ... TEMPLATE): it does not run under the original's identity; give it its own with calabi_push.adopt_sync('%s'), or drop it",
						name, name);
	if (home_timeline == 0)
		return psprintf("sync \"%s\" is a copy on a promoted server: when this server was promoted, the server it was copied from still answered at primary_conninfo; give it its own identity with calabi_push.adopt_sync('%s'), or drop it",
						name, name);
	if (RecoveryInProgress() || runs_here_by_name)
		return NULL;
	tli = current_timeline();
	if ((TimeLineID) home_timeline != tli)
		return psprintf("sync \"%s\" was bound to timeline %d and this server is on timeline %u (promoted, or recovered to a point in time) while the server it ran on may still run it; give it its own identity with calabi_push.adopt_sync('%s'), or, if that server is gone, a superuser keeps it with calabi_push.adopt_sync('%s', keep_identity => true)",
						name, home_timeline, tli, name, name);
	return NULL;
}

/*
 * _copied(name, home_system, home_database, home_timeline,
 * runs_here_by_name).  Executable by
 * PUBLIC for the sync_status view (which calls it as the querying role);
 * it admits the roles that may read that view, as _sync_runtime() does.
 */
Datum
calabi_push_copied(PG_FUNCTION_ARGS)
{
	char	   *why;

	cp_require_status_reader(fcinfo);

	why = copied_reason(text_to_cstring(PG_GETARG_TEXT_PP(0)), PG_GETARG_INT64(1),
						PG_GETARG_OID(2), PG_GETARG_INT32(3), PG_GETARG_BOOL(4));
	if (why == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(why));
}

/*
 * Whether a server of this system answers at primary_conninfo: the server
 * this one was promoted from still runs.  Asked over a physical replication
 * connection (libpqwalreceiver, as the walreceiver did with the same
 * setting), bounded by CONNECT_TIMEOUT_MS: libpqwalreceiver's wait is
 * interruptible, and statement_timeout's handler interrupts it.  Any
 * failure counts as "no answer".  Called with no transaction open.
 */
static bool
old_primary_answers(TimeLineID *its_tli)
{
	const char *conninfo = GetConfigOption("primary_conninfo", true, false);
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile bool answers = false;

	if (conninfo == NULL || conninfo[0] == '\0')
		return false;

	load_file("libpqwalreceiver", false);
	PG_TRY();
	{
		WalReceiverConn *conn;
		char	   *err = NULL;

		enable_timeout_after(STATEMENT_TIMEOUT, CONNECT_TIMEOUT_MS);
		conn = cp_walrcv_connect_physical(conninfo, "calabi_push probe", &err);
		if (conn != NULL)
		{
			char	   *sysid = walrcv_identify_system(conn, its_tli);

			answers = sysid != NULL &&
				strtou64(sysid, NULL, 10) == GetSystemIdentifier();
			walrcv_disconnect(conn);
		}
		else
			ereport(LOG,
					(errmsg("calabi_push: the server at primary_conninfo does not answer: %s",
							err ? err : "unknown error")));
		disable_timeout(STATEMENT_TIMEOUT, false);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* a timeout or a failed IDENTIFY_SYSTEM: no answer */
		disable_timeout(STATEMENT_TIMEOUT, false);
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(LOG,
				(errmsg("calabi_push: the server at primary_conninfo does not answer: %s",
						edata->message)));
		answers = false;
	}
	PG_END_TRY();
	return answers;
}

/*
 * Probe: settle the syncs of this database that a promotion (or a
 * point-in-time recovery) moved to a new timeline, then stop every enabled
 * sync that is a copy.  Before any sync of the database is started.
 */
void
cp_home_check_syncs(void)
{
	uint64		sysid = GetSystemIdentifier();
	TimeLineID	tli = current_timeline();

	if (cp_catalog_timeline_moved(sysid, tli))
	{
		TimeLineID	its_tli = 0;
		bool		alive = old_primary_answers(&its_tli);
		char	   *dbname;
		MemoryContext caller;

		caller = cp_xact_start();
		dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
		cp_xact_commit(caller);

		cp_catalog_settle_timeline(sysid, tli, !alive);
		if (alive)
			ereport(LOG,
					(errmsg("calabi_push: this server is on timeline %u and a server of the same system still answers at primary_conninfo (timeline %u): the syncs of database \"%s\" made before the promotion are copies and do not run here, but for those that ran here as a standby (option run_on)",
							tli, its_tli, dbname),
					 errhint("Give each its own identity with calabi_push.adopt_sync(), or drop it.")));
		else
			ereport(LOG,
					(errmsg("calabi_push: this server is on timeline %u and no server answers at primary_conninfo: taken for a failover, the syncs of database \"%s\" run here",
							tli, dbname)));
		pfree(dbname);
	}
	(void) cp_catalog_stop_copied();
}
