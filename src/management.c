/*-------------------------------------------------------------------------
 *
 * management.c
 *	  Who a management function acts for.
 *
 * create_destination(), create_sync(), start_sync() and the other management
 * functions write the extension's catalog, on which nothing is granted, so
 * their work is done by SECURITY DEFINER functions owned by the extension's
 * owner: _create_destination(), _create_sync(), ...  Inside those,
 * current_user is the owner, and session_user is whoever the process logged
 * in as: in autovacuum, in a sync worker or under a superuser's ANALYZE that
 * is a superuser, while the code calling may be a function that an ordinary
 * role planted in a view, an index expression or a policy.  Neither says who
 * really called.
 *
 * So the public functions are this C entry point, which runs with the
 * caller's rights (not SECURITY DEFINER): it takes the caller from
 * GetUserId() before anything has switched it, refuses where that identity
 * is not the author's own (a security-restricted operation, a background
 * process), keeps it for _caller(), and calls the implementation of the same
 * name with a "_" before it, with the same arguments.  fmgr runs that one as
 * its owner; its EXECUTE privilege is not checked on this path (nothing is
 * granted on it, so nobody can call it directly).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(calabi_push_manage);
PG_FUNCTION_INFO_V1(calabi_push_caller);

/*
 * The role the management call under way acts for; InvalidOid outside one.
 * One at a time: an implementation runs as the extension's owner, so a
 * management call nested in it would be taken for the owner's.
 */
static Oid	acting_for = InvalidOid;

typedef struct ManageTarget
{
	FmgrInfo	flinfo;			/* the _-prefixed implementation */
	char	   *name;			/* the public name, for messages */
} ManageTarget;

static ManageTarget *
lookup_target(FunctionCallInfo fcinfo)
{
	ManageTarget *target = fcinfo->flinfo->fn_extra;
	HeapTuple	proctup;
	Form_pg_proc proc;
	char	   *impl_name;
	Oid			impl;

	if (target != NULL)
		return target;

	proctup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
	if (!HeapTupleIsValid(proctup))
		elog(ERROR, "cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
	proc = (Form_pg_proc) GETSTRUCT(proctup);
	impl_name = psprintf("_%s", NameStr(proc->proname));
	impl = GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid,
						   CStringGetDatum(impl_name),
						   PointerGetDatum(&proc->proargtypes),
						   ObjectIdGetDatum(proc->pronamespace));
	if (!OidIsValid(impl))
		elog(ERROR, "calabi_push function %s has no implementation %s",
			 NameStr(proc->proname), impl_name);

	target = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ManageTarget));
	target->name = MemoryContextStrdup(fcinfo->flinfo->fn_mcxt, NameStr(proc->proname));
	ReleaseSysCache(proctup);
	fmgr_info_cxt(impl, &target->flinfo, fcinfo->flinfo->fn_mcxt);
	fcinfo->flinfo->fn_extra = target;
	return target;
}

/*
 * Where the current user is not the author of the code calling, refuse:
 * that identity would be borrowed.
 */
static void
check_caller_is_genuine(const char *name)
{
	if (!AmRegularBackendProcess())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("calabi_push.%s() cannot be called from a background process", name),
				 errdetail("Code running in a sync worker, autovacuum or another background process acts with that process's identity, not its author's."),
				 errhint("Call calabi_push.%s() from a client session.", name)));
	if (InSecurityRestrictedOperation())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("calabi_push.%s() cannot be called within a security-restricted operation", name),
				 errdetail("A function in a view, an index expression or a policy that runs inside ANALYZE, VACUUM, REINDEX, REFRESH MATERIALIZED VIEW or a sync's read would act for the role running that command."),
				 errhint("Call calabi_push.%s() directly from a client session.", name)));
	if (OidIsValid(acting_for))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("calabi_push.%s() cannot be called from inside another calabi_push management function", name),
				 errhint("Call the management functions one after the other.")));
}

/*
 * The public management functions: act for the current user, then run the
 * implementation.  Every argument is passed on as given (defaults were
 * filled in by the parser, and the functions are not STRICT).
 */
Datum
calabi_push_manage(PG_FUNCTION_ARGS)
{
	ManageTarget *target = lookup_target(fcinfo);
	LOCAL_FCINFO(inner, FUNC_MAX_ARGS);
	volatile Datum result = (Datum) 0;
	int			nestlevel;

	/*
	 * The statement may hold secrets (a token, a private key): an error
	 * raised here or below is logged without it, as the implementations
	 * that take secrets do for their own errors.  Restored at the end, or by
	 * the abort.
	 */
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("log_min_error_statement", "panic",
							 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);

	check_caller_is_genuine(target->name);

	InitFunctionCallInfoData(*inner, &target->flinfo, PG_NARGS(),
							 PG_GET_COLLATION(), NULL, NULL);
	for (int i = 0; i < PG_NARGS(); i++)
		inner->args[i] = fcinfo->args[i];

	acting_for = GetUserId();
	PG_TRY();
	{
		result = FunctionCallInvoke(inner);
	}
	PG_FINALLY();
	{
		acting_for = InvalidOid;
	}
	PG_END_TRY();
	AtEOXact_GUC(true, nestlevel);

	if (inner->isnull)
		PG_RETURN_NULL();
	return result;
}

/* _caller(): the role the management call under way acts for. */
Datum
calabi_push_caller(PG_FUNCTION_ARGS)
{
	if (!OidIsValid(acting_for))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("calabi_push._caller() is only for calabi_push's management functions"),
				 errhint("Call the management functions, e.g. calabi_push.create_sync().")));
	PG_RETURN_DATUM(DirectFunctionCall1(namein,
										CStringGetDatum(GetUserNameFromId(acting_for, false))));
}
