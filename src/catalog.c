/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  The sync worker's reads and writes of the calabi_push tables.
 *
 * JSON in the tables (options, checkpoints) is taken apart by the queries
 * themselves: the worker gets plain columns back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"

#include "catalog.h"
#include "reader.h"
#include "state_file.h"
#include "worker.h"
#include "xact.h"

PG_FUNCTION_INFO_V1(calabi_push_sync_defaults);

/*
 * calabi_push._sync_defaults(): the options a sync is stored with unless it
 * gives them (catalog.h), for _sync_options() of 40_syncs.sql.
 */
Datum
calabi_push_sync_defaults(PG_FUNCTION_ARGS)
{
	char	   *json;

	json = psprintf("{\"batch_rows\": %d, \"batch_bytes\": %d, "
					"\"batch_linger_ms\": %d, \"chunk_rows\": %d, "
					"\"max_backoff_ms\": %d}",
					CP_SYNC_DEFAULT_BATCH_ROWS, CP_SYNC_DEFAULT_BATCH_BYTES,
					CP_SYNC_DEFAULT_BATCH_LINGER_MS, CP_SYNC_DEFAULT_CHUNK_ROWS,
					CP_SYNC_DEFAULT_MAX_BACKOFF_MS);
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
}

/* Each function here runs one transaction: the caller's context, for end(). */
static MemoryContext caller_context = NULL;

static Oid	catalog_role = InvalidOid;
static Oid	session_role;
static int	session_sec_context;

void
cp_catalog_connect(Oid dboid)
{
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	catalog_role = GetUserId();

	/* our queries name every object with its schema */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION);
}

/*
 * An error inside needs no undoing of the role: aborting the transaction
 * restores the user it started with.
 */
static void
begin(void)
{
	SetCurrentStatementStartTimestamp();
	caller_context = cp_xact_start();
	GetUserIdAndSecContext(&session_role, &session_sec_context);
	if (OidIsValid(catalog_role))
		SetUserIdAndSecContext(catalog_role,
							   session_sec_context | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
end(void)
{
	SPI_finish();
	PopActiveSnapshot();
	SetUserIdAndSecContext(session_role, session_sec_context);
	cp_xact_commit(caller_context);
	pgstat_report_stat(false);
}

/*
 * The worker runs the same few statements for every batch: each is parsed
 * and planned once per process, and kept (plancache replans it should the
 * catalog change).  Keyed by the statement's address: every caller passes
 * a literal.
 */
#define PLAN_CACHE_SIZE 64

static struct
{
	const char *sql;
	SPIPlanPtr	plan;
}			plan_cache[PLAN_CACHE_SIZE];
static int	plan_cache_used = 0;

static SPIPlanPtr
cached_plan(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan;

	for (int i = 0; i < plan_cache_used; i++)
		if (plan_cache[i].sql == sql)
			return plan_cache[i].plan;
	if (plan_cache_used == PLAN_CACHE_SIZE)
		return NULL;
	plan = SPI_prepare(sql, nargs, types);
	if (plan == NULL)
		elog(ERROR, "calabi_push catalog query could not be prepared (%s): %s",
			 SPI_result_code_string(SPI_result), sql);
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	plan_cache[plan_cache_used].sql = sql;
	plan_cache[plan_cache_used].plan = plan;
	plan_cache_used++;
	return plan;
}

/* nulls: as SPI_execute_plan's ('n': NULL), or NULL for none */
static void
exec_nulls(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
		   int expected)
{
	SPIPlanPtr	plan = cached_plan(sql, nargs, types);
	int			rc = plan != NULL ?
		SPI_execute_plan(plan, values, nulls, false, 0) :
		SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (rc != expected)
		elog(ERROR, "calabi_push catalog query failed (%s): %s",
			 SPI_result_code_string(rc), sql);
}

static void
exec(const char *sql, int nargs, Oid *types, Datum *values, int expected)
{
	exec_nulls(sql, nargs, types, values, NULL, expected);
}

/*
 * Whether this database has calabi_push's tables: the extension may be
 * absent, or (in a database that skipped an upgrade) older than them.
 */
static bool
catalog_present(void)
{
	Oid			nsp;

	if (!OidIsValid(get_extension_oid("calabi_push", true)))
		return false;
	nsp = get_namespace_oid("calabi_push", true);
	return OidIsValid(nsp) && OidIsValid(get_relname_relid("sync", nsp));
}

static Datum
uuid_datum(const pg_uuid_t *id)
{
	return UUIDPGetDatum((pg_uuid_t *) id);
}

/* column n (1-based) of a row as a palloc'd string in mcxt, or NULL */
static char *
row_text_column(HeapTuple row, int n, MemoryContext mcxt)
{
	char	   *value = SPI_getvalue(row, SPI_tuptable->tupdesc, n);
	char	   *copy = value ? MemoryContextStrdup(mcxt, value) : NULL;

	if (value)
		pfree(value);
	return copy;
}

void
cp_stream_def_set(CpStreamDef *def, char **field, const char *value)
{
	char	   *old = *field;

	*field = value != NULL ? MemoryContextStrdup(GetMemoryChunkContext(def), value) : NULL;
	if (old != NULL)
		pfree(old);
}

/* the same of row 0 */
static char *
text_column(int n, MemoryContext mcxt)
{
	return row_text_column(SPI_tuptable->vals[0], n, mcxt);
}

static int64
int_column(HeapTuple tuple, int n)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tuple, SPI_tuptable->tupdesc, n, &isnull);
	Oid			type = SPI_gettypeid(SPI_tuptable->tupdesc, n);

	if (isnull)
		return 0;
	switch (type)
	{
		case INT4OID:
			return DatumGetInt32(d);
		case INT8OID:
			return DatumGetInt64(d);
		case OIDOID:
			return DatumGetObjectId(d);
		case BOOLOID:
			return DatumGetBool(d);
		default:
			elog(ERROR, "unexpected type %u in calabi_push catalog query", type);
	}
	return 0;
}

/* A pg_lsn column of a row; InvalidXLogRecPtr when NULL. */
static XLogRecPtr
lsn_column(HeapTuple row, int n)
{
	bool		isnull;
	Datum		d = SPI_getbinval(row, SPI_tuptable->tupdesc, n, &isnull);

	return isnull ? InvalidXLogRecPtr : DatumGetLSN(d);
}

/* A text[] column of a row as a List of strings in mcxt. */
static List *
text_array_column(HeapTuple row, int n, MemoryContext mcxt)
{
	bool		isnull;
	Datum		array = SPI_getbinval(row, SPI_tuptable->tupdesc, n, &isnull);
	Datum	   *elems;
	int			nelems;
	List	   *list = NIL;
	MemoryContext oldcontext;

	if (isnull)
		return NIL;
	deconstruct_array(DatumGetArrayTypeP(array), TEXTOID, -1, false,
					  TYPALIGN_INT, &elems, NULL, &nelems);
	oldcontext = MemoryContextSwitchTo(mcxt);
	for (int e = 0; e < nelems; e++)
		list = lappend(list, TextDatumGetCString(elems[e]));
	MemoryContextSwitchTo(oldcontext);
	return list;
}

/*
 * A sync that runs on this standby (option run_on) keeps its progress in
 * its state file (state_file.c; sql/install/24_run_on.sql), since the
 * catalog here is the primary's, read-only.  file_state is that file's
 * JSON as last written, in TopMemoryContext; NULL: the sync's progress is
 * in the catalog.  cp_catalog_load_sync decides, at each load.
 *
 * Each write below then computes the next state with a query ($1: the
 * sync's id, $2: the state) whose first column is the new state, and
 * replaces the file with it before the caller goes on, as the catalog's
 * commit would.
 */
static char *file_state = NULL;

static Datum
state_datum(void)
{
	return CStringGetTextDatum(file_state);
}

static void
state_update(const pg_uuid_t *id, const char *sql, int nargs, Oid *types,
			 Datum *values, bool even_if_promoted)
{
	char	   *next;

	/*
	 * Promoted since the worker loaded the sync: the catalog keeps its
	 * progress from now on, once the worker's next start has imported the
	 * file (a write here would be lost).  This is no error of the sync's:
	 * the worker exits, as a worker told to stop by the server does, and
	 * the launcher starts it again; what was acknowledged since the last
	 * write is sent again (at least once).  An error on the way out is
	 * still recorded in the file, and imported with it.
	 */
	if (!even_if_promoted && !RecoveryInProgress())
	{
		ereport(LOG,
				(errmsg("calabi_push sync worker exits: this server was promoted, and the sync starts again from its checkpoint, which the catalog keeps from now on")));
		proc_exit(1);
	}
	exec(sql, nargs, types, values, SPI_OK_SELECT);
	next = SPI_processed == 1 ? text_column(1, TopMemoryContext) : NULL;
	/* the queries that read the catalog return none then */
	if (next == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the sync no longer exists: it was dropped on the primary")));
	cp_state_file_write(MyDatabaseId, id, next);
	pfree(file_state);
	file_state = next;
}

static void
state_file_context(void *arg)
{
	errcontext("reading the state file pg_calabi_push/%u/%s.json (move it away, and the sync starts from the catalog above every batch number used before)",
			   MyDatabaseId,
			   DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum((pg_uuid_t *) arg))));
}

CpSyncDef *
cp_catalog_load_sync(const pg_uuid_t *id, MemoryContext mcxt)
{
	CpSyncDef  *sync = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {uuid_datum(id)};
	char	   *dest_name = NULL;
	bool		missing_token = false;
	bool		missing_client_secret = false;
	bool		missing_client_key = false;
	char	   *copied = NULL;
	Oid			stypes[2] = {UUIDOID, TEXTOID};
	Datum		svalues[2] = {uuid_datum(id), (Datum) 0};
	char		snulls[2] = {' ', 'n'};
	bool		imported = false;

	if (file_state != NULL)
	{
		pfree(file_state);
		file_state = NULL;
	}
	begin();
	if (!catalog_present())
	{
		end();
		return NULL;
	}

	/*
	 * Where the sync runs (option run_on): not here, it is not ours to run.
	 * Here on a standby, its progress is in its state file: made from the
	 * catalog's the first time, brought up to the commands (start_sync,
	 * resync) the primary took since.  Here on a primary that was such a
	 * standby until promoted, the file's progress becomes the catalog's.
	 */
	exec("SELECT calabi_push._runs_here(options), options ? 'run_on'"
		 " FROM calabi_push.sync WHERE id = $1", 1, types, values, SPI_OK_SELECT);
	if (SPI_processed == 1)
	{
		bool		runs_here = int_column(SPI_tuptable->vals[0], 1) != 0;
		bool		named = int_column(SPI_tuptable->vals[0], 2) != 0;
		char	   *old = named ? cp_state_file_read(MyDatabaseId, id) : NULL;

		if (!runs_here)
		{
			end();
			return NULL;
		}
		if (old != NULL)
		{
			svalues[1] = CStringGetTextDatum(old);
			snulls[1] = ' ';
		}
		if (named && RecoveryInProgress())
		{
			ErrorContextCallback errcallback;

			/* a file that is not JSON: say which (its hint: _standby_state) */
			errcallback.callback = state_file_context;
			errcallback.arg = (void *) id;
			errcallback.previous = error_context_stack;
			error_context_stack = &errcallback;
			/* column 1: the state to write, when it changed; else column 2 */
			exec_nulls("SELECT CASE WHEN x IS DISTINCT FROM $2::jsonb"
					   "  THEN calabi_push._state_written(x) END::text, x::text"
					   " FROM (SELECT calabi_push._state_load($1, $2::jsonb) AS x) y",
					   2, stypes, svalues, snulls, SPI_OK_SELECT);
			file_state = text_column(1, TopMemoryContext);
			error_context_stack = errcallback.previous;
			if (file_state != NULL)
				cp_state_file_write(MyDatabaseId, id, file_state);
			else
				file_state = text_column(2, TopMemoryContext);
			if (file_state != NULL)
			{
				svalues[1] = state_datum();
				snulls[1] = ' ';
			}
		}
		else if (old != NULL)
		{
			exec("SELECT calabi_push._state_import($1, calabi_push._state_load($1, $2::jsonb))",
				 2, stypes, svalues, SPI_OK_SELECT);
			imported = true;
			svalues[1] = (Datum) 0;
			snulls[1] = 'n';
		}
	}

	exec_nulls("SELECT s.name, s.method, s.destination_sync_mode, s.run_as::oid, s.enabled,"
		 " COALESCE((s.options->>'batch_rows')::int, " CppAsString2(CP_SYNC_DEFAULT_BATCH_ROWS) "),"
		 " COALESCE((s.options->>'batch_bytes')::int, " CppAsString2(CP_SYNC_DEFAULT_BATCH_BYTES) "),"
		 " COALESCE((s.options->>'batch_linger_ms')::int, " CppAsString2(CP_SYNC_DEFAULT_BATCH_LINGER_MS) "),"
		 " COALESCE((s.options->>'chunk_rows')::int, " CppAsString2(CP_SYNC_DEFAULT_CHUNK_ROWS) "),"
		 " COALESCE(extract(epoch FROM (s.options->>'schedule')::interval) * 1000, 0)::int8,"
		 " COALESCE(extract(epoch FROM (s.options->>'max_backoff')::interval) * 1000, "
		 CppAsString2(CP_SYNC_DEFAULT_MAX_BACKOFF_MS) ")::int8,"
		 " d.url, d.options->>'ca_file', d.options->>'ca_pem', d.options->>'client_cert',"
		 " d.options->>'proxy', COALESCE((d.options->>'allow_http')::bool, "
		 CppAsString2(CP_DESTINATION_DEFAULT_ALLOW_HTTP) " = 1),"
		 " COALESCE((d.options->>'connect_timeout_ms')::int, " CppAsString2(CP_DESTINATION_DEFAULT_CONNECT_TIMEOUT_MS) "),"
		 " COALESCE((d.options->>'request_timeout_ms')::int, " CppAsString2(CP_DESTINATION_DEFAULT_REQUEST_TIMEOUT_MS) "),"
		 " d.options->>'token_url', d.options->>'client_id', d.options->>'scope',"
		 " COALESCE(d.options->>'compression', '" CP_DESTINATION_DEFAULT_COMPRESSION "') <> 'none',"
		 " sec.token, sec.client_secret, sec.client_key, s.id::text,"
		 " (s.cdc_lsn - '0/0')::int8, d.name,"
		 /* secrets the destination was given but lacks (a restored dump) */
		 " 'token' = ANY (d.secrets) AND sec.token IS NULL,"
		 " 'client_secret' = ANY (d.secrets) AND sec.client_secret IS NULL,"
		 " 'client_key' = ANY (d.secrets) AND sec.client_key IS NULL,"
		 /* why it is a copy of a sync made elsewhere (src/home.c) */
		 " calabi_push._copied(s.name, s.home_system, s.home_database, s.home_timeline,"
		 "  s.options ? 'run_on' AND calabi_push._runs_here(s.options)),"
		 " s.options->>'lookback',"
		 " COALESCE((d.options->>'compression_level')::int, 0),"
		 " COALESCE((s.options->>'failover')::bool, false), s.error_stopped"
		 " FROM calabi_push.sync s0"
		 " CROSS JOIN LATERAL calabi_push._sync_state(s0, $2::jsonb) s"
		 " JOIN calabi_push.destination d ON d.name = s.destination"
		 " LEFT JOIN calabi_push.destination_secret sec ON sec.destination = d.name"
		 " WHERE s0.id = $1",
		 2, stypes, svalues, snulls, SPI_OK_SELECT);

	if (SPI_processed == 1)
	{
		HeapTuple	row = SPI_tuptable->vals[0];
		MemoryContext oldcontext;

		sync = MemoryContextAllocZero(mcxt, sizeof(CpSyncDef));
		sync->id = *id;
		sync->name = text_column(1, mcxt);
		sync->method = text_column(2, mcxt);
		sync->mode = text_column(3, mcxt);
		sync->run_as = (Oid) int_column(row, 4);
		/* a standby's state file may say it stopped in error */
		sync->enabled = int_column(row, 5) != 0 && int_column(row, 37) == 0;
		sync->batch_rows = (int) int_column(row, 6);
		sync->batch_bytes = (int) int_column(row, 7);
		sync->batch_linger_ms = (int) int_column(row, 8);
		sync->chunk_rows = (int) int_column(row, 9);
		sync->schedule_ms = int_column(row, 10);
		sync->max_backoff_ms = int_column(row, 11);
		sync->dest.url = text_column(12, mcxt);
		sync->dest.ca_file = text_column(13, mcxt);
		sync->dest.ca_pem = text_column(14, mcxt);
		sync->dest.client_cert = text_column(15, mcxt);
		sync->dest.proxy = text_column(16, mcxt);
		sync->dest.allow_http = int_column(row, 17) != 0;
		sync->dest.connect_timeout_ms = (int) int_column(row, 18);
		sync->dest.request_timeout_ms = (int) int_column(row, 19);
		sync->dest.token_url = text_column(20, mcxt);
		sync->dest.client_id = text_column(21, mcxt);
		sync->dest.scope = text_column(22, mcxt);
		sync->gzip = int_column(row, 23) != 0;
		sync->gzip_level = (int) int_column(row, 35);
		sync->dest.token = text_column(24, mcxt);
		sync->dest.client_secret = text_column(25, mcxt);
		sync->dest.client_key = text_column(26, mcxt);
		oldcontext = MemoryContextSwitchTo(mcxt);
		strlcpy(sync->id_text, SPI_getvalue(row, SPI_tuptable->tupdesc, 27),
				sizeof(sync->id_text));
		MemoryContextSwitchTo(oldcontext);
		sync->cdc_lsn = (XLogRecPtr) int_column(row, 28);
		dest_name = text_column(29, mcxt);
		/* messages about the destination name it (http.c) */
		sync->dest.name = dest_name;
		missing_token = int_column(row, 30) != 0;
		missing_client_secret = int_column(row, 31) != 0;
		missing_client_key = int_column(row, 32) != 0;
		copied = text_column(33, mcxt);
		sync->lookback = text_column(34, mcxt);
		sync->failover = int_column(row, 36) != 0;

		exec_nulls("SELECT relid::oid, ordinal, phase, generation, rows_sent,"
			 " (checkpoint->>'relfilenode')::oid,"
			 " ARRAY(SELECT jsonb_array_elements_text(checkpoint->'after')),"
			 " ARRAY(SELECT jsonb_array_elements_text(checkpoint->'key')),"
			 " (checkpoint->>'refresh_lsn')::int8,"
			 " checkpoint->>'read', checkpoint->>'since', checkpoint->>'snapshot',"
			 " checkpoint->>'marks', (checkpoint->>'pages_examined')::int8,"
			 " (checkpoint->>'pages_skipped')::int8, checkpoint->>'full_reason',"
			 " (checkpoint->>'floor')::pg_lsn, checkpoint->>'parts', (checkpoint->>'part')::oid,"
			 " cursor_column, checkpoint->>'cursor',"
			 " checkpoint->>'pages_found_by', (checkpoint->>'wal_bytes_read')::int8"
			 " FROM (SELECT t.* FROM calabi_push.sync_stream t0,"
			 "  LATERAL calabi_push._stream_state(t0, $2::jsonb) t"
			 "  WHERE t0.sync_id = $1) t"
			 " ORDER BY ordinal",
			 2, stypes, svalues, snulls, SPI_OK_SELECT);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	srow = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			CpStreamDef *stream = MemoryContextAllocZero(mcxt, sizeof(CpStreamDef));

			stream->relid = (Oid) int_column(srow, 1);
			stream->ordinal = (int) int_column(srow, 2);
			stream->phase = MemoryContextStrdup(mcxt, SPI_getvalue(srow, desc, 3));
			stream->generation = int_column(srow, 4);
			stream->rows_sent = int_column(srow, 5);
			stream->relfilenode = (Oid) int_column(srow, 6);
			stream->after = text_array_column(srow, 7, mcxt);
			stream->key = text_array_column(srow, 8, mcxt);
			stream->refresh_lsn = (XLogRecPtr) int_column(srow, 9);
			stream->read = row_text_column(srow, 10, mcxt);
			stream->since = row_text_column(srow, 11, mcxt);
			stream->snapshot = row_text_column(srow, 12, mcxt);
			stream->marks = row_text_column(srow, 13, mcxt);
			stream->pages_examined = int_column(srow, 14);
			stream->pages_skipped = int_column(srow, 15);
			stream->full_reason = row_text_column(srow, 16, mcxt);
			stream->floor = (XLogRecPtr) lsn_column(srow, 17);
			stream->parts = row_text_column(srow, 18, mcxt);
			stream->part = (Oid) int_column(srow, 19);
			stream->cursor_column = row_text_column(srow, 20, mcxt);
			stream->cursor = row_text_column(srow, 21, mcxt);
			stream->pages_found_by = row_text_column(srow, 22, mcxt);
			stream->wal_bytes_read = int_column(srow, 23);
			oldcontext = MemoryContextSwitchTo(mcxt);
			sync->streams = lappend(sync->streams, stream);
			MemoryContextSwitchTo(oldcontext);
		}
	}
	end();

	/* taken over: the catalog's from now on (a crash before this imports nothing twice) */
	if (imported)
		cp_state_file_remove(MyDatabaseId, id);

	/*
	 * A copy of a sync made in another database, cluster or on another
	 * timeline: under the original's id it would reuse its batch numbers,
	 * Idempotency-Keys and slot.  Stop it (the probe does not even start
	 * one; this catches a worker started before the copy was seen).
	 */
	if (sync != NULL && copied != NULL)
	{
		cp_worker_stop_on_error();
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg_internal("%s", copied),
				 errhint("Run SELECT calabi_push.adopt_sync('%s'); then SELECT calabi_push.start_sync('%s');",
						 sync->name, sync->name)));
	}

	/*
	 * A destination restored from a dump has no secrets (they are not
	 * dumped): sending without them would only be refused, so stop the sync
	 * in error, saying how to enter them again.  Outside the transaction:
	 * the worker's error boundary records it.
	 */
	if (sync != NULL && (missing_token || missing_client_secret || missing_client_key))
	{
		StringInfoData what;
		StringInfoData args;

		initStringInfo(&what);
		initStringInfo(&args);
		if (missing_token)
		{
			appendStringInfoString(&what, "token");
			appendStringInfoString(&args, ", token => '...'");
		}
		if (missing_client_secret || missing_client_key)
		{
			appendStringInfo(&what, "%s%s%s%s", what.len > 0 ? ", " : "",
							 missing_client_secret ? "client_secret" : "",
							 missing_client_secret && missing_client_key ? ", " : "",
							 missing_client_key ? "client_key" : "");
			appendStringInfo(&args, ", options => '{%s%s%s}'",
							 missing_client_secret ? "\"client_secret\": \"...\"" : "",
							 missing_client_secret && missing_client_key ? ", " : "",
							 missing_client_key ? "\"client_key\": \"...\"" : "");
		}
		cp_worker_stop_on_error();
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("destination \"%s\" of sync \"%s\" lacks its secrets (%s): enter them again with calabi_push.alter_destination()",
						dest_name, sync->name, what.data),
				 errdetail("Secrets are not part of a dump: a destination restored from one must be given them again."),
				 errhint("Run SELECT calabi_push.alter_destination('%s'%s); then SELECT calabi_push.start_sync('%s').",
						 dest_name, args.data, sync->name)));
	}
	return sync;
}

/* The uuids a query's first column returns, in the caller's memory. */
static List *
uuid_list(const char *query)
{
	List	   *ids = NIL;

	begin();
	if (catalog_present())
	{
		exec(query, 0, NULL, NULL, SPI_OK_SELECT);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			pg_uuid_t  *id = MemoryContextAlloc(caller_context, sizeof(pg_uuid_t));
			MemoryContext oldcontext;

			*id = *DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[i],
											   SPI_tuptable->tupdesc, 1, &isnull));
			/* the list must outlive SPI_finish */
			oldcontext = MemoryContextSwitchTo(caller_context);
			ids = lappend(ids, id);
			MemoryContextSwitchTo(oldcontext);
		}
	}
	end();
	return ids;
}

List *
cp_catalog_enabled_syncs(void)
{
	return uuid_list("SELECT id FROM calabi_push.sync"
					 " WHERE enabled AND calabi_push._runs_here(options)");
}

int64
cp_catalog_reserve_batch_seq(const CpSyncDef *sync, int n)
{
	Oid			types[2] = {UUIDOID, INT4OID};
	Datum		values[2] = {uuid_datum(&sync->id), Int32GetDatum(n)};
	int64		first;

	begin();
	if (file_state != NULL)
	{
		Oid			ftypes[3] = {UUIDOID, TEXTOID, INT4OID};
		Datum		fvalues[3] = {uuid_datum(&sync->id), state_datum(), Int32GetDatum(n)};

		state_update(&sync->id,
					 "SELECT calabi_push._state_written(jsonb_set(s, '{sync,next_batch_seq}',"
					 "  to_jsonb((s#>>'{sync,next_batch_seq}')::int8 + $3)))::text,"
					 " (s#>>'{sync,next_batch_seq}')::int8"
					 " FROM (SELECT $2::jsonb AS s) x"
					 " WHERE EXISTS (SELECT 1 FROM calabi_push.sync WHERE id = $1)",
					 3, ftypes, fvalues, false);
		first = int_column(SPI_tuptable->vals[0], 2);
		end();
		return first;
	}
	exec("UPDATE calabi_push.sync SET next_batch_seq = next_batch_seq + $2"
		 " WHERE id = $1 RETURNING next_batch_seq - $2",
		 2, types, values, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("sync \"%s\" no longer exists", sync->name)));
	first = int_column(SPI_tuptable->vals[0], 1);
	end();
	return first;
}

void
cp_catalog_commit_ack(const CpSyncDef *sync, const CpStreamAck *acks, int nacks,
					  int64 batches, int64 records, int64 bytes, int64 retries,
					  XLogRecPtr position)
{
	Oid			stypes[3] = {UUIDOID, OIDOID, TEXTOID};
	Oid			types[6] = {UUIDOID, INT8OID, INT8OID, INT8OID, LSNOID, INT8OID};
	Datum		values[6] = {uuid_datum(&sync->id), Int64GetDatum(records),
		Int64GetDatum(bytes), Int64GetDatum(retries), LSNGetDatum(position),
	Int64GetDatum(batches)};

	begin();
	if (file_state != NULL)
	{
		Oid			ftypes[8] = {UUIDOID, TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID,
		INT8OID, LSNOID};
		StringInfoData ackarray;
		Datum		fvalues[8];

		initStringInfo(&ackarray);
		appendStringInfoChar(&ackarray, '[');
		for (int i = 0; i < nacks; i++)
			appendStringInfo(&ackarray, "%s{\"relid\": %u, \"state\": %s}",
							 i > 0 ? ", " : "", acks[i].relid, acks[i].state);
		appendStringInfoChar(&ackarray, ']');
		fvalues[0] = uuid_datum(&sync->id);
		fvalues[1] = state_datum();
		fvalues[2] = CStringGetTextDatum(ackarray.data);
		fvalues[3] = Int64GetDatum(batches);
		fvalues[4] = Int64GetDatum(records);
		fvalues[5] = Int64GetDatum(bytes);
		fvalues[6] = Int64GetDatum(retries);
		fvalues[7] = LSNGetDatum(position);
		state_update(&sync->id,
					 "SELECT calabi_push._state_written(calabi_push._state_ack($1, $2::jsonb,"
					 " $3::jsonb, $4, $5, $6, $7, $8))::text",
					 8, ftypes, fvalues, false);
		end();
		return;
	}
	/* the rules are _acked_stream's and _acked_sync's (24_run_on.sql) */
	for (int i = 0; i < nacks; i++)
	{
		Datum		svalues[3] = {uuid_datum(&sync->id),
			ObjectIdGetDatum(acks[i].relid),
		CStringGetTextDatum(acks[i].state)};

		exec("UPDATE calabi_push.sync_stream t SET (checkpoint, phase, rows_sent,"
			 "  read_started_at, read_finished_at, generation) ="
			 " (SELECT a.checkpoint, a.phase, a.rows_sent, a.read_started_at,"
			 "   a.read_finished_at, a.generation"
			 "  FROM calabi_push._acked_stream(t, $3::jsonb) a)"
			 " WHERE sync_id = $1 AND relid = $2",
			 3, stypes, svalues, SPI_OK_UPDATE);
	}
	exec("UPDATE calabi_push.sync y SET (batches_sent, records_sent, bytes_sent,"
		 "  retries, last_ack_at, cdc_lsn) ="
		 " (SELECT a.batches_sent, a.records_sent, a.bytes_sent, a.retries,"
		 "   a.last_ack_at, a.cdc_lsn"
		 "  FROM calabi_push._acked_sync(y, $6, $2, $3, $4, $5) a)"
		 " WHERE id = $1",
		 6, types, values, SPI_OK_UPDATE);
	end();
}

void
cp_catalog_set_cdc_lsn(const CpSyncDef *sync, XLogRecPtr position, bool created)
{
	Oid			types[3] = {UUIDOID, LSNOID, BOOLOID};
	Datum		values[3] = {uuid_datum(&sync->id), LSNGetDatum(position),
	BoolGetDatum(created)};

	begin();
	if (file_state != NULL)
	{
		Oid			ftypes[4] = {UUIDOID, TEXTOID, LSNOID, BOOLOID};
		Datum		fvalues[4] = {uuid_datum(&sync->id), state_datum(),
		LSNGetDatum(position), BoolGetDatum(created)};

		state_update(&sync->id,
					 "SELECT calabi_push._state_written(CASE"
					 "  WHEN s#>'{sync,cdc_lsn}' <> 'null' OR $4"
					 "  THEN jsonb_set(s, '{sync,cdc_lsn}', to_jsonb($3::pg_lsn)) ELSE s END)::text"
					 " FROM (SELECT $2::jsonb AS s) x",
					 4, ftypes, fvalues, false);
		end();
		return;
	}
	/* only a new slot sets it from NULL (see cp_catalog_commit_ack) */
	exec("UPDATE calabi_push.sync SET cdc_lsn = $2"
		 " WHERE id = $1 AND (cdc_lsn IS NOT NULL OR $3)",
		 3, types, values, SPI_OK_UPDATE);
	end();
}

void
cp_catalog_import_states(void)
{
	List	   *ids = uuid_list("SELECT id FROM calabi_push.sync"
								" WHERE options ? 'run_on' AND calabi_push._runs_here(options)");
	ListCell   *lc;

	foreach(lc, ids)
	{
		pg_uuid_t  *id = lfirst(lc);
		char	   *state = cp_state_file_read(MyDatabaseId, id);
		Oid			types[2] = {UUIDOID, TEXTOID};

		if (state == NULL)
			continue;
		begin();
		exec("SELECT calabi_push._state_import($1, calabi_push._state_load($1, $2::jsonb))",
			 2, types, (Datum[]) {uuid_datum(id), CStringGetTextDatum(state)}, SPI_OK_SELECT);
		end();
		cp_state_file_remove(MyDatabaseId, id);
	}
	cp_state_file_remove_others(MyDatabaseId, cp_catalog_sync_ids());
}

List *
cp_catalog_sync_ids(void)
{
	return uuid_list("SELECT id FROM calabi_push.sync");
}

List *
cp_catalog_standby_syncs(void)
{
	List	   *syncs = NIL;

	begin();
	if (catalog_present())
	{
		exec("SELECT id, enabled AND (NOT error_stopped OR commanded), commanded"
			 " FROM (SELECT s.id, s.enabled,"
			 "  coalesce((f#>>'{sync,error_stopped}')::bool, false) AS error_stopped,"
			 "  s.command_seq > coalesce((f->>'applied_command')::int8, s.command_seq) AS commanded"
			 "  FROM calabi_push.sync s"
			 "  LEFT JOIN LATERAL calabi_push._standby_state(s.id) f ON true"
			 "  WHERE s.options ? 'run_on' AND calabi_push._runs_here(s.options)) x",
			 0, NULL, NULL, SPI_OK_SELECT);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	row = SPI_tuptable->vals[i];
			bool		isnull;
			CpStandbySync *sync = MemoryContextAlloc(caller_context, sizeof(CpStandbySync));
			MemoryContext oldcontext;

			sync->id = *DatumGetUUIDP(SPI_getbinval(row, SPI_tuptable->tupdesc, 1, &isnull));
			sync->run = int_column(row, 2) != 0;
			sync->commanded = int_column(row, 3) != 0;
			oldcontext = MemoryContextSwitchTo(caller_context);
			syncs = lappend(syncs, sync);
			MemoryContextSwitchTo(oldcontext);
		}
	}
	end();
	return syncs;
}

List *
cp_catalog_cdc_syncs(void)
{
	return uuid_list("SELECT id FROM calabi_push.sync WHERE method = 'cdc'");
}

void
cp_catalog_run_completed(const CpSyncDef *sync)
{
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {uuid_datum(&sync->id)};

	begin();
	if (file_state != NULL)
		state_update(&sync->id,
					 "SELECT calabi_push._state_written(jsonb_set($2::jsonb,"
					 "  '{sync,run_completed_at}', to_jsonb(now())))::text",
					 2, (Oid[]) {UUIDOID, TEXTOID},
					 (Datum[]) {values[0], state_datum()}, false);
	else
		exec("UPDATE calabi_push.sync SET run_completed_at = now() WHERE id = $1",
			 1, types, values, SPI_OK_UPDATE);
	end();
}

TimestampTz
cp_catalog_last_run(const CpSyncDef *sync, bool *completed)
{
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		values[2] = {uuid_datum(&sync->id), (Datum) 0};
	char		nulls[2] = {' ', 'n'};
	TimestampTz started = 0;

	*completed = false;
	begin();
	if (file_state != NULL)
	{
		values[1] = state_datum();
		nulls[1] = ' ';
	}
	exec_nulls("SELECT run_started_at, run_completed_at IS NOT NULL"
			   " FROM calabi_push._state_sync($1, $2::jsonb)",
			   2, types, values, nulls, SPI_OK_SELECT);
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									  1, &isnull);

		/* int64, by value: it outlives SPI_finish */
		if (!isnull)
			started = DatumGetTimestampTz(d);
		*completed = int_column(SPI_tuptable->vals[0], 2) != 0;
	}
	end();
	return started;
}

void
cp_catalog_run_begins(const CpSyncDef *sync)
{
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {uuid_datum(&sync->id)};

	begin();
	if (file_state != NULL)
	{
		state_update(&sync->id,
					 "SELECT calabi_push._state_written(jsonb_set(jsonb_set(s, '{sync}',"
					 "  s->'sync' || jsonb_build_object('run_started_at', now(), 'run_completed_at', null)),"
					 "  '{streams}', coalesce((SELECT jsonb_agg(CASE WHEN e->>'phase' = 'done'"
					 "   THEN e || '{\"phase\": \"pending\"}' ELSE e END ORDER BY n)"
					 "   FROM jsonb_array_elements(s->'streams') WITH ORDINALITY x(e, n)), '[]')))::text"
					 " FROM (SELECT $2::jsonb AS s) y",
					 2, (Oid[]) {UUIDOID, TEXTOID},
					 (Datum[]) {values[0], state_datum()}, false);
		end();
		return;
	}
	exec("UPDATE calabi_push.sync SET run_started_at = now(), run_completed_at = NULL"
		 " WHERE id = $1", 1, types, values, SPI_OK_UPDATE);
	exec("UPDATE calabi_push.sync_stream SET phase = 'pending'"
		 " WHERE sync_id = $1 AND phase = 'done'", 1, types, values, SPI_OK_UPDATE);
	end();
}

void
cp_catalog_record_error(const pg_uuid_t *id, const char *message,
						const char *message_redacted, bool refused)
{
	Oid			types[4] = {UUIDOID, TEXTOID, BOOLOID, TEXTOID};
	Datum		values[4] = {uuid_datum(id), CStringGetTextDatum(message),
		BoolGetDatum(refused),
	CStringGetTextDatum(message_redacted ? message_redacted : message)};

	/* a standby's worker that failed before it loaded its sync: logged only */
	if (file_state == NULL && RecoveryInProgress())
		return;
	begin();
	if (!catalog_present())
		;
	else if (file_state != NULL)
	{
		Oid			ftypes[5] = {UUIDOID, TEXTOID, TEXTOID, BOOLOID, TEXTOID};
		Datum		fvalues[5] = {values[0], state_datum(), values[1], values[2], values[3]};

		state_update(id,
					 "SELECT calabi_push._state_written(jsonb_set(s, '{sync}', s->'sync'"
					 "  || jsonb_build_object('last_error', $3, 'last_error_redacted', $5,"
					 "   'last_error_at', now(),"
					 "   'error_stopped', coalesce((s#>>'{sync,error_stopped}')::bool, false) OR $4)))::text"
					 " FROM (SELECT $2::jsonb AS s) x",
					 5, ftypes, fvalues, true);
	}
	else if (catalog_present())
		exec("UPDATE calabi_push.sync SET last_error = $2, last_error_redacted = $4,"
			 " last_error_at = now(),"
			 " enabled = enabled AND NOT $3, error_stopped = error_stopped OR $3"
			 " WHERE id = $1", 4, types, values, SPI_OK_UPDATE);
	end();
}

void
cp_catalog_stream_reread(const CpSyncDef *sync, Oid relid)
{
	Oid			types[2] = {UUIDOID, OIDOID};
	Datum		values[2] = {uuid_datum(&sync->id), ObjectIdGetDatum(relid)};

	begin();
	if (file_state != NULL)
	{
		state_update(&sync->id,
					 "SELECT calabi_push._state_written("
					 " calabi_push._state_stream_reset($2::jsonb, $3))::text",
					 3, (Oid[]) {UUIDOID, TEXTOID, OIDOID},
					 (Datum[]) {values[0], state_datum(), values[1]}, false);
		end();
		return;
	}
	/* as resync(name, rel) does */
	exec("UPDATE calabi_push.sync_stream SET phase = 'pending', checkpoint = NULL, rows_sent = 0"
		 " WHERE sync_id = $1 AND relid = $2::regclass", 2, types, values, SPI_OK_UPDATE);
	end();
}

bool
cp_catalog_timeline_moved(uint64 sysid, TimeLineID tli)
{
	Oid			types[3] = {INT8OID, OIDOID, INT4OID};
	Datum		values[3] = {Int64GetDatum((int64) sysid),
		ObjectIdGetDatum(MyDatabaseId), Int32GetDatum((int32) tli)};
	bool		moved = false;

	begin();
	if (catalog_present())
	{
		exec("SELECT 1 FROM calabi_push.sync WHERE home_system = $1"
			 " AND home_database = $2 AND home_timeline > 0 AND home_timeline <> $3 LIMIT 1",
			 3, types, values, SPI_OK_SELECT);
		moved = SPI_processed > 0;
	}
	end();
	return moved;
}

void
cp_catalog_settle_timeline(uint64 sysid, TimeLineID tli, bool failover)
{
	Oid			types[4] = {INT8OID, OIDOID, INT4OID, BOOLOID};
	Datum		values[4] = {Int64GetDatum((int64) sysid),
		ObjectIdGetDatum(MyDatabaseId), Int32GetDatum((int32) tli),
	BoolGetDatum(failover)};

	begin();
	/*
	 * A failover: the catalog replicated here may be behind what the old
	 * primary recorded; batch numbers and generations jump above it (see
	 * _identity_moved()).
	 */
	/*
	 * A sync that runs on this server (run_on) is no copy, even beside a
	 * live old primary: that server never runs it.  The numbers of one
	 * that ran here as a standby are its own: the state file it kept here
	 * holds them (_state_import, next).
	 */
	if (failover)
		exec("SELECT calabi_push._identity_moved(id, false) FROM calabi_push.sync"
			 " WHERE home_system = $1 AND home_database = $2"
			 " AND home_timeline > 0 AND home_timeline <> $3"
			 " AND NOT (options ? 'run_on' AND calabi_push._runs_here(options)"
			 "  AND calabi_push._standby_state(id) IS NOT NULL)",
			 3, types, values, SPI_OK_SELECT);
	exec("UPDATE calabi_push.sync SET home_timeline = CASE WHEN $4"
		 "  OR (options ? 'run_on' AND calabi_push._runs_here(options)) THEN $3 ELSE 0 END"
		 " WHERE home_system = $1 AND home_database = $2"
		 " AND home_timeline > 0 AND home_timeline <> $3",
		 4, types, values, SPI_OK_UPDATE);
	end();
}

int
cp_catalog_stop_copied(void)
{
	int			stopped = 0;

	begin();
	if (catalog_present())
	{
		exec("UPDATE calabi_push.sync s SET enabled = false, error_stopped = true,"
			 " last_error = c.why, last_error_redacted = c.why, last_error_at = now()"
			 " FROM (SELECT id, calabi_push._copied(name, home_system, home_database,"
			 "  home_timeline, options ? 'run_on' AND calabi_push._runs_here(options)) AS why"
			 "  FROM calabi_push.sync) c"
			 " WHERE c.id = s.id AND s.enabled AND c.why IS NOT NULL"
			 " RETURNING c.why",
			 0, NULL, NULL, SPI_OK_UPDATE_RETURNING);
		for (uint64 i = 0; i < SPI_processed; i++)
			ereport(LOG,
					(errmsg("calabi_push stopped a sync: %s",
							SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1))));
		stopped = (int) SPI_processed;
	}
	end();
	return stopped;
}
