/*-------------------------------------------------------------------------
 *
 * cdc_precondition.c
 *	  What stops a CDC sync loudly rather than lose a change: a table whose
 *	  preconditions no longer hold (dropped, no SELECT for run_as, row-level
 *	  security, unlogged, no key, REPLICA IDENTITY NOTHING, run_as gone),
 *	  and a decoded change too large to send.
 *
 * The present catalog is checked at the start and after invalidations
 * (cp_cdc_check_streams); a decoded change is checked under the catalog of
 * its own time by the output plugin's change writer, which calls the sink
 * callbacks here.  Every message names the table, the cause and the way out.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "cdc_relcache.h"
#include "cdc_sync.h"
#include "xact.h"

/*
 * Stop the sync: a precondition of table relid is violated.  The message
 * (what sync_status shows) names the table, the cause and the way out;
 * nothing of the table was sent since the cause.  Names are looked up by
 * the caller: this may run outside any transaction, where the catalog
 * cannot be read.
 */
static void
raise_violation(CpRun *run, Oid relid, const char *nspname, const char *relname,
				const char *role_name, CpCdcViolation violation)
{
	const char *sync = run->sync->name;
	const char *table = nspname != NULL && relname != NULL ?
		quote_qualified_identifier(nspname, relname) : psprintf("%u", relid);
	const char *role = role_name != NULL ? quote_identifier(role_name) :
		psprintf("%u", run->sync->run_as);

	/* no retry can help: the sync stops in error until start_sync */
	cp_worker_stop_on_error();
	switch (violation)
	{
		case CP_CDC_DROPPED:
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("a table of sync \"%s\" was dropped (OID %u): drop the sync and create it again without it",
							sync, relid),
					 errhint("SELECT calabi_push.drop_sync('%s'); then calabi_push.create_sync() with its other tables.",
							 sync)));
			break;
		case CP_CDC_ROLE_GONE:
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("the role sync \"%s\" reads as (OID %u) no longer exists: nothing is sent; drop the sync and create it again with another run_as role",
							sync, run->sync->run_as),
					 errhint("SELECT calabi_push.drop_sync('%s'); then calabi_push.create_sync() with \"run_as\" naming an existing role.",
							 sync)));
			break;
		case CP_CDC_NO_SELECT:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("role %s may no longer SELECT table %s: its changes are not sent (GRANT SELECT ON %s TO %s, then start_sync)",
							role, table, table, role),
					 errhint("GRANT SELECT ON %s TO %s; then SELECT calabi_push.start_sync('%s'); the table is read again if it changed meanwhile.",
							 table, role, sync)));
			break;
		case CP_CDC_RLS:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("table %s has row-level security that role %s is subject to: decoded changes cannot be filtered by policies, so none is sent (ALTER TABLE %s DISABLE ROW LEVEL SECURITY or run_as a role with BYPASSRLS, then start_sync)",
							table, role, table),
					 errhint("ALTER TABLE %s DISABLE ROW LEVEL SECURITY; or ALTER ROLE %s BYPASSRLS; then SELECT calabi_push.start_sync('%s'); the table is read again if it changed meanwhile.",
							 table, role, sync)));
			break;
		case CP_CDC_UNLOGGED:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table %s is no longer WAL-logged: its changes cannot be captured (ALTER TABLE %s SET LOGGED, then start_sync: the table is read again)",
							table, table),
					 errhint("ALTER TABLE %s SET LOGGED; then SELECT calabi_push.start_sync('%s').",
							 table, sync)));
			break;
		case CP_CDC_NO_KEY:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table %s has no primary key any more: its append_dedup destination cannot match its changes to rows (ALTER TABLE %s ADD PRIMARY KEY (...), then start_sync; a table changed meanwhile is read again, as resync('%s', '%s') does)",
							table, table, sync, table),
					 errhint("ALTER TABLE %s ADD PRIMARY KEY (...); then SELECT calabi_push.start_sync('%s'); or calabi_push.resync('%s', '%s') to read the table again in any case.",
							 table, sync, sync, table)));
			break;
		case CP_CDC_REPLIDENT_NOTHING:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table %s has REPLICA IDENTITY NOTHING: its deletes carry no key for the append_dedup destination (ALTER TABLE %s REPLICA IDENTITY DEFAULT, then start_sync)",
							table, table),
					 errhint("ALTER TABLE %s REPLICA IDENTITY DEFAULT; then SELECT calabi_push.start_sync('%s'); the table is read again if it changed meanwhile.",
							 table, sync)));
			break;
		case CP_CDC_OK:
			break;
	}
	elog(ERROR, "unexpected CDC precondition violation %d", (int) violation);
}

/*
 * Check every stream against the present catalog, in a transaction of our
 * own (outside decoding: the replay's historic snapshot shows the past).
 * A violation stops the sync; an unlogged table's changes are missing from
 * the WAL, so it is marked to be read again at the next start.
 */
void
cp_cdc_check_streams(CpRun *run)
{
	CpCdcRun   *cdc = run->cdc;
	bool		keyed = strcmp(run->sync->mode, "append_dedup") == 0;
	MemoryContext caller;
	CpCdcViolation violation = CP_CDC_OK;
	Oid			relid = InvalidOid;
	char	   *nspname = NULL;
	char	   *relname = NULL;
	char	   *role_name = NULL;

	caller = cp_xact_start();
	for (int i = 0; i < run->nstreams && violation == CP_CDC_OK; i++)
	{
		Relation	rel;

		relid = run->streams[i].def->relid;
		rel = try_relation_open(relid, AccessShareLock);
		if (rel == NULL)
		{
			violation = CP_CDC_DROPPED;
			break;
		}
		violation = cp_cdc_check_relation(rel, run->sync->run_as, keyed);
		if (violation != CP_CDC_OK)
		{
			nspname = get_namespace_name(RelationGetNamespace(rel));
			nspname = nspname != NULL ? MemoryContextStrdup(run->mcxt, nspname) : NULL;
			relname = MemoryContextStrdup(run->mcxt, RelationGetRelationName(rel));
		}
		relation_close(rel, AccessShareLock);
	}
	if (violation != CP_CDC_OK)
	{
		role_name = GetUserNameFromId(run->sync->run_as, true);
		role_name = role_name != NULL ? MemoryContextStrdup(run->mcxt, role_name) : NULL;
	}
	cp_xact_commit(caller);
	/* ordinary catalog access: decoding must not trust the caches it left */
	if (cdc->decoder != NULL)
		cp_decoder_catalog_used(cdc->decoder);

	if (violation == CP_CDC_OK)
		return;
	if (violation == CP_CDC_UNLOGGED)
		cp_catalog_stream_reread(run->sync, relid);
	raise_violation(run, relid, nspname, relname, role_name, violation);
}

/*
 * A decoded change of rel violates a precondition under the catalog of
 * that change.  Made after the start's check: the sync stops before any of
 * it is sent (inside the replayed transaction: the error leaves it the
 * usual way).  Made before: the present catalog passed that check, so the
 * cause was fixed since; the change is skipped, and the table is read again
 * after this decoding round (a new generation), which brings what run_as
 * may see of it now, and what the skipped changes did.
 */
void
cp_cdc_sink_violation(void *arg, Relation rel, int violation)
{
	CpRun	   *run = arg;
	CpCdcRun   *cdc = run->cdc;
	int			idx = cp_cdc_stream_index(run, RelationGetRelid(rel));

	if (idx < 0)
		return;
	if (cdc->txn_end <= cdc->trusted_lsn)
	{
		if (cdc->reread[idx] == CP_REREAD_NONE)
			cdc->reread[idx] = CP_REREAD_OWED;
		return;
	}
	/* inside the replayed transaction: the catalog of the change */
	raise_violation(run, RelationGetRelid(rel),
					get_namespace_name(RelationGetNamespace(rel)),
					RelationGetRelationName(rel),
					GetUserNameFromId(run->sync->run_as, true),
					(CpCdcViolation) violation);
}

/* ---- a change too large to send ---- */

/*
 * A decoded change whose record would exceed batch_bytes: cdc_change.c sent
 * nothing of it, nor sends anything after it in its transaction.  Noted
 * here (names under the catalog of the change), and decoding stops after
 * that transaction's commit, which is not counted as decoded: its position
 * is never reached.
 */
void
cp_cdc_sink_too_large(void *arg, Relation rel, XLogRecPtr lsn, const char *key,
			   int64 bytes)
{
	CpRun	   *run = arg;
	CpCdcRun   *cdc = run->cdc;
	MemoryContext oldcxt;
	const char *nspname = get_namespace_name(RelationGetNamespace(rel));
	CpCdcTooLarge *t;

	if (cdc->too_large != NULL)
		return;					/* the first one is the one to report */
	oldcxt = MemoryContextSwitchTo(run->mcxt);
	t = palloc0(sizeof(CpCdcTooLarge));
	t->nspname = pstrdup(nspname != NULL ? nspname : "?");
	t->relname = pstrdup(RelationGetRelationName(rel));
	t->key = pstrdup(key);
	t->bytes = bytes;
	t->lsn = lsn;
	t->xid = cdc->txn_xid;
	t->txn_end = cdc->txn_end;
	MemoryContextSwitchTo(oldcxt);
	cdc->too_large = t;
}

/*
 * Decoding stopped after the transaction of a change too large to send:
 * deliver and checkpoint what came before it (the slot's position stays
 * before that transaction, which is decoded again at the next start), then
 * stop the sync.  Retrying could only meet the same change again.
 */
void
cp_cdc_stop_too_large(CpRun *run)
{
	const CpCdcTooLarge *t = run->cdc->too_large;
	const char *sync = run->sync->name;

	cp_delivery_flush(run, true);
	cp_worker_stop_on_error();
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("%s%s of \"%s\".\"%s\" at %X/%X is too large to send: its record would exceed batch_bytes (%d bytes); its values take " INT64_FORMAT " bytes before encoding",
					t->key[0] != '\0' ? "change " : "a change", t->key,
					t->nspname, t->relname, LSN_FORMAT_ARGS(t->lsn),
					run->sync->batch_bytes, t->bytes),
			 errdetail("A record is never split across batches; text escapes up to six times its size in JSON, bytea to twice.  Every change before it was delivered; the sync's position stays before its transaction (xid %u, ending at %X/%X), so start_sync meets it again.",
					   t->xid, LSN_FORMAT_ARGS(t->txn_end)),
			 errhint("Create the sync again with a larger batch_bytes (at most 256MB), which reads every table again; or make the value smaller (or drop its column), then SELECT calabi_push.resync('%s'); which reads every table again through a new slot that begins after the change.",
					 sync)));
}
