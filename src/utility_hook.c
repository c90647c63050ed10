/*-------------------------------------------------------------------------
 *
 * utility_hook.c
 *	  The ProcessUtility hook of every backend: commands on a database
 *	  that need its sync workers gone, and DROP ROLE of a role that syncs
 *	  read as.
 *
 * DROP DATABASE, and renaming a database or moving it to another
 * tablespace, need every session of the database gone: stop its sync
 * workers first, wait for them (a few seconds at most), and let them start
 * again if the command fails or the database lives on.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "commands/tablespace.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "shmem.h"
#include "utility_hook.h"

static ProcessUtility_hook_type prev_process_utility = NULL;

/*
 * Stop the database's sync workers: mark them not to run and return the ids
 * of the syncs that were running, so that resume_database can start them
 * again even after their slots were freed meanwhile.
 */
static List *
pause_database(Oid dboid)
{
	List	   *paused = NIL;

	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < cp_shared->nslots; i++)
	{
		CpSyncSlot *slot = &cp_shared->slots[i];

		if (slot->proc.life != CP_SLOT_FREE && slot->proc.dboid == dboid &&
			slot->should_run)
		{
			pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

			*id = slot->sync_id;
			cp_sync_slot_stop(slot);
			paused = lappend(paused, id);
		}
	}
	LWLockRelease(cp_shared->lock);
	return paused;
}

/* Whether a worker of a slot is connected to the database (lock held). */
static bool
worker_in_database(const CpProcSlot *proc, Oid dboid)
{
	return proc->dboid == dboid && cp_slot_has_worker(proc);
}

/* Wait (10 s at most) until the database's workers and probe have exited. */
static void
wait_for_database_workers(Oid dboid)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 10000);

	for (;;)
	{
		bool		alive = false;

		LWLockAcquire(cp_shared->lock, LW_SHARED);
		for (int i = 0; i < cp_shared->nslots; i++)
			if (worker_in_database(&cp_shared->slots[i].proc, dboid))
				alive = true;
		for (int i = 0; i < CP_PROBE_SLOTS; i++)
			if (worker_in_database(&cp_shared->probes[i].proc, dboid))
				alive = true;
		LWLockRelease(cp_shared->lock);
		if (!alive || GetCurrentTimestamp() >= deadline)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 50, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
resume_database(Oid dboid, List *paused)
{
	ListCell   *lc;

	if (paused == NIL)
		return;
	LWLockAcquire(cp_shared->lock, LW_EXCLUSIVE);
	foreach(lc, paused)
	{
		if (cp_sync_slot_start(dboid, lfirst(lc), false) == NULL)
			break;				/* all slots taken meanwhile: the next
								 * start_sync or server start finds it */
	}
	LWLockRelease(cp_shared->lock);
	cp_wake_launcher();
}

/*
 * Whether the current user (GetUserId(), as the command itself will check)
 * owns the database: superusers pass.
 */
static bool
caller_owns_database(Oid dboid)
{
	return cp_database_ownercheck(dboid, GetUserId());
}

/* The CREATEDB attribute, as RenameDatabase checks it (superusers pass). */
static bool
caller_has_createdb(void)
{
	HeapTuple	tuple;
	bool		result;

	if (superuser())
		return true;
	tuple = SearchSysCache1(AUTHOID, ObjectIdGetDatum(GetUserId()));
	if (!HeapTupleIsValid(tuple))
		return false;
	result = ((Form_pg_authid) GETSTRUCT(tuple))->rolcreatedb;
	ReleaseSysCache(tuple);
	return result;
}

/*
 * The database's template flag and tablespace, from its pg_database row;
 * false if it vanished meanwhile.
 */
static bool
database_row(Oid dboid, bool *istemplate, Oid *tablespace)
{
	HeapTuple	tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));

	if (!HeapTupleIsValid(tuple))
		return false;
	*istemplate = ((Form_pg_database) GETSTRUCT(tuple))->datistemplate;
	*tablespace = ((Form_pg_database) GETSTRUCT(tuple))->dattablespace;
	ReleaseSysCache(tuple);
	return true;
}

/*
 * The database whose sync workers must be stopped before this statement
 * runs, or InvalidOid.  The workers are stopped only when the command will
 * get as far as counting the database's sessions: the caller passes the
 * checks PostgreSQL makes before that (dropdb, RenameDatabase, movedb in
 * dbcommands.c), in the same order.  Otherwise any login role could
 * interrupt every worker of a database, again and again, with a command
 * that then fails with "must be owner of database".  A command that will
 * fail for another reason (the current database, a template, a name in
 * use, the same tablespace) stops nothing either.
 *
 * Not inlined: its locals must not live across the PG_TRY below.
 */
static pg_noinline Oid
database_needing_exclusive_access(Node *stmt)
{
	const char *dbname = NULL;
	const char *newname = NULL;
	const char *tablespace = NULL;
	Oid			dboid;
	bool		istemplate;
	Oid			current_tablespace;

	if (IsA(stmt, DropdbStmt))
		dbname = ((DropdbStmt *) stmt)->dbname;
	else if (IsA(stmt, RenameStmt) &&
			 ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
	{
		dbname = ((RenameStmt *) stmt)->subname;
		newname = ((RenameStmt *) stmt)->newname;
	}
	else if (IsA(stmt, AlterDatabaseStmt))
	{
		ListCell   *lc;

		foreach(lc, ((AlterDatabaseStmt *) stmt)->options)
		{
			DefElem    *opt = lfirst(lc);

			if (strcmp(opt->defname, "tablespace") == 0)
			{
				dbname = ((AlterDatabaseStmt *) stmt)->dbname;
				tablespace = defGetString(opt);
			}
		}
	}
	if (dbname == NULL)
		return InvalidOid;

	dboid = get_database_oid(dbname, true);
	if (!OidIsValid(dboid) || dboid == MyDatabaseId ||
		!database_row(dboid, &istemplate, &current_tablespace))
		return InvalidOid;
	/* every one of the three commands: "must be owner of database" */
	if (!caller_owns_database(dboid))
		return InvalidOid;

	if (IsA(stmt, DropdbStmt))
	{
		if (istemplate)			/* "cannot drop a template database" */
			return InvalidOid;
	}
	else if (newname != NULL)
	{
		/* "permission denied to rename database"; a name in use */
		if (!caller_has_createdb() || OidIsValid(get_database_oid(newname, true)))
			return InvalidOid;
	}
	else
	{
		Oid			spcoid = get_tablespace_oid(tablespace, true);

		/* a tablespace that does not exist, without CREATE, or the same one */
		if (!OidIsValid(spcoid) ||
			cp_tablespace_aclcheck(spcoid, GetUserId(), ACL_CREATE) != ACLCHECK_OK ||
			spcoid == current_tablespace)
			return InvalidOid;
	}
	return dboid;
}

/*
 * DROP ROLE of a role that syncs of this database read as (sync.run_as),
 * or that owns destinations of it (destination.created_by):
 * refused, since those syncs could no longer run and only a superuser could
 * drop them.  Called after the DROP ROLE itself succeeded, inside its
 * transaction, so that PostgreSQL's own checks (privileges, objects the role
 * owns) come first and nobody learns sync names from a DROP ROLE they may
 * not run; our error then rolls the drop back.  The roles' oids were taken
 * before the drop, as their names no longer resolve.
 *
 * Syncs of other databases are not visible from here: see docs/syncs.md.
 */
static void
refuse_drop_of_run_as_roles(List *role_names, List *role_oids)
{
	Oid			save_userid;
	int			save_sec_context;
	Datum	   *elems;
	ArrayType  *oids;
	Oid			types[2] = {OIDARRAYOID, NAMEARRAYOID};
	Datum		values[2];
	Datum	   *name_elems;
	int			n = list_length(role_oids);
	int			i = 0;
	ListCell   *lc;
	StringInfoData detail;
	char	   *first_role = NULL;
	bool		first_is_sync = false;
	MemoryContext caller_context = CurrentMemoryContext;

	if (n == 0)
		return;
	elems = palloc(sizeof(Datum) * n);
	foreach(lc, role_oids)
		elems[i++] = ObjectIdGetDatum(lfirst_oid(lc));
	oids = construct_array(elems, n, OIDOID, sizeof(Oid), true, TYPALIGN_INT);
	values[0] = PointerGetDatum(oids);
	name_elems = palloc(sizeof(Datum) * n);
	i = 0;
	foreach(lc, role_names)
		name_elems[i++] = DirectFunctionCall1(namein, CStringGetDatum(lfirst(lc)));
	values[1] = PointerGetDatum(construct_array(name_elems, n, NAMEOID, NAMEDATALEN,
												false, TYPALIGN_CHAR));

	/* in our context: SPI_finish frees what is allocated in between */
	initStringInfo(&detail);

	/*
	 * The catalog table is readable by superusers only, and a role with
	 * CREATEROLE need not be one: read it as the bootstrap superuser, in a
	 * restricted operation, with every name qualified.  An error restores
	 * the user (transaction or subtransaction abort).
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/*
	 * A destination belongs to the role named in created_by: a role created
	 * later under the same name would inherit it, so its owner is kept as
	 * a sync's role is.  Syncs come first (kind 1), then destinations.
	 */
	if (SPI_execute_with_args("SELECT s.run_as::pg_catalog.oid, 1,"
							  " pg_catalog.string_agg(s.name, ', ' ORDER BY s.name COLLATE \"C\")"
							  " FROM calabi_push.sync s"
							  " WHERE s.run_as::pg_catalog.oid OPERATOR(pg_catalog.=) ANY ($1)"
							  " GROUP BY 1"
							  " UNION ALL"
							  " SELECT r.oid, 2,"
							  " pg_catalog.string_agg(d.name, ', ' ORDER BY d.name COLLATE \"C\")"
							  " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) r(oid, name)"
							  " JOIN calabi_push.destination d"
							  " ON d.created_by OPERATOR(pg_catalog.=) r.name"
							  " GROUP BY 1"
							  " ORDER BY 2, 1",
							  2, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read calabi_push.sync");

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Oid			roleid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[r],
														   SPI_tuptable->tupdesc, 1, &isnull));
		bool		is_sync = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r],
														  SPI_tuptable->tupdesc, 2, &isnull)) == 1;
		char	   *syncs = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 3);
		const char *role = NULL;
		ListCell   *lo;

		forboth(lc, role_names, lo, role_oids)
			if (lfirst_oid(lo) == roleid)
				role = lfirst(lc);
		if (role == NULL)
			continue;
		if (first_role == NULL)
		{
			first_role = MemoryContextStrdup(caller_context, role);
			first_is_sync = is_sync;
		}
		appendStringInfo(&detail, is_sync ? "%sSyncs reading as role \"%s\": %s." :
						 "%sDestinations owned by role \"%s\": %s.",
						 detail.len > 0 ? "\n" : "", role, syncs);
	}
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec_context);

	if (first_role != NULL && first_is_sync)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("role \"%s\" cannot be dropped because calabi_push syncs of database \"%s\" read as it",
						first_role, get_database_name(MyDatabaseId)),
				 errdetail_internal("%s", detail.data),
				 errhint("Drop those syncs with calabi_push.drop_sync(), or drop and create them again with another \"run_as\" option, then drop the role.")));
	if (first_role != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("role \"%s\" cannot be dropped because it owns calabi_push destinations of database \"%s\"",
						first_role, get_database_name(MyDatabaseId)),
				 errdetail_internal("%s", detail.data),
				 errhint("Drop those destinations with calabi_push.drop_destination() (a superuser may), then drop the role.")));
}

/*
 * The roles a DROP ROLE names that exist, with their oids, when this
 * database has calabi_push; else nothing.
 */
static pg_noinline void
roles_being_dropped(Node *stmt, List **names, List **oids)
{
	ListCell   *lc;

	*names = NIL;
	*oids = NIL;
	if (!IsA(stmt, DropRoleStmt) || !OidIsValid(get_extension_oid("calabi_push", true)))
		return;
	foreach(lc, ((DropRoleStmt *) stmt)->roles)
	{
		RoleSpec   *spec = lfirst(lc);
		Oid			roleid;

		/* CURRENT_USER and the like are refused by DROP ROLE itself */
		if (spec->roletype != ROLESPEC_CSTRING)
			continue;
		roleid = get_role_oid(spec->rolename, true);
		if (!OidIsValid(roleid))
			continue;
		*names = lappend(*names, pstrdup(spec->rolename));
		*oids = lappend_oid(*oids, roleid);
	}
}

static void
calabi_push_process_utility(PlannedStmt *pstmt, const char *queryString,
							bool readOnlyTree, ProcessUtilityContext context,
							ParamListInfo params, QueryEnvironment *queryEnv,
							DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;
	volatile Oid dboid = cp_shared ? database_needing_exclusive_access(stmt) : InvalidOid;
	List	   *volatile paused = NIL;
	List	   *drop_role_names;
	List	   *drop_role_oids;

	roles_being_dropped(stmt, &drop_role_names, &drop_role_oids);

	if (OidIsValid(dboid))
		paused = pause_database(dboid);

	PG_TRY();
	{
		/* a cancel while waiting must let the workers start again too */
		if (paused != NIL)
			wait_for_database_workers(dboid);
		if (prev_process_utility)
			prev_process_utility(pstmt, queryString, readOnlyTree, context,
								 params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		resume_database(dboid, paused);
		PG_RE_THROW();
	}
	PG_END_TRY();

	/* a dropped database's slots are freed by the launcher (should_run off) */
	if (!IsA(stmt, DropdbStmt))
		resume_database(dboid, paused);

	refuse_drop_of_run_as_roles(drop_role_names, drop_role_oids);
}

void
cp_utility_hook_init(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = calabi_push_process_utility;
}
