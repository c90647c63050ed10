/*-------------------------------------------------------------------------
 *
 * state_file.c
 *	  The state files of the syncs that run on this standby.
 *
 * A hot standby's catalog is its primary's, read-only.  A sync that runs
 * on the standby (option run_on) keeps its progress -- checkpoints, batch
 * numbers, counters, errors -- in a file of the data directory instead,
 * pg_calabi_push/<database oid>/<sync id>.json, as core keeps the
 * checkpoints of replication origins and slots in files of their own.
 * The catalog functions (src/catalog.c) compute each new state with the
 * same SQL rules the primary's catalog follows (sql/install/24_run_on.sql);
 * this file only reads, replaces and removes the files.
 *
 * A file is replaced by writing a temporary file, fsyncing it, renaming it
 * over the old one and fsyncing the directory (durable_rename): a crash at
 * any point leaves the old state or the new one, whole.  Like a slot's
 * state it is the standby's own: base backups copy it, and a server whose
 * cluster_name is not the sync's run_on never reads it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "state_file.h"
#include "status.h"

#define STATE_DIR "pg_calabi_push"
/* a state holds a few checkpoints: anything this large is not one */
#define STATE_FILE_MAX (64 * 1024 * 1024)

PG_FUNCTION_INFO_V1(calabi_push_standby_state);

static void
db_dir(char *path, Oid dboid)
{
	snprintf(path, MAXPGPATH, STATE_DIR "/%u", dboid);
}

static void
file_path(char *path, Oid dboid, const pg_uuid_t *id)
{
	char	   *idtext = DatumGetCString(DirectFunctionCall1(uuid_out,
															 UUIDPGetDatum((pg_uuid_t *) id)));

	snprintf(path, MAXPGPATH, STATE_DIR "/%u/%s.json", dboid, idtext);
	pfree(idtext);
}

/* A directory that must exist; made durably (its parent fsynced). */
static void
ensure_dir(const char *path, const char *parent)
{
	if (MakePGDirectory(path) == 0)
		fsync_fname(parent, true);
	else if (errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", path),
				 errhint("A sync that runs on this standby keeps its progress there: check the space and permissions of the data directory's pg_calabi_push.")));
}

char *
cp_state_file_read(Oid dboid, const pg_uuid_t *id)
{
	char		path[MAXPGPATH];
	struct stat st;
	char	   *data;
	int			fd;
	ssize_t		got;

	file_path(path, dboid, id);
	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		if (errno == ENOENT)
			return NULL;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", path),
				 errhint("A sync that runs on this standby keeps its progress there: check the space and permissions of the data directory's pg_calabi_push.")));
	}
	if (fstat(fd, &st) < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat file \"%s\": %m", path),
				 errhint("A sync that runs on this standby keeps its progress there: check the space and permissions of the data directory's pg_calabi_push.")));
	if (st.st_size > STATE_FILE_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("calabi_push state file \"%s\" is too large (%lld bytes)",
						path, (long long) st.st_size),
				 errhint("Move it away: the sync then starts from the catalog, above every batch number used before.")));
	data = palloc(st.st_size + 1);
	got = read(fd, data, st.st_size);
	if (got != st.st_size)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read file \"%s\": %m", path),
				 errhint("A sync that runs on this standby keeps its progress there: check the space and permissions of the data directory's pg_calabi_push.")));
	data[got] = '\0';
	CloseTransientFile(fd);
	return data;
}

void
cp_state_file_write(Oid dboid, const pg_uuid_t *id, const char *json)
{
	char		dir[MAXPGPATH];
	char		path[MAXPGPATH];
	char		tmp[MAXPGPATH];
	size_t		len = strlen(json);
	int			fd;

	db_dir(dir, dboid);
	ensure_dir(STATE_DIR, ".");
	ensure_dir(dir, STATE_DIR);
	file_path(path, dboid, id);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);

	fd = OpenTransientFile(tmp, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", tmp),
				 errhint("A sync that runs on this standby keeps its progress there: check the space and permissions of the data directory's pg_calabi_push.")));
	errno = 0;
	if (write(fd, json, len) != (ssize_t) len)
	{
		/* no error set: out of disk space, as core assumes */
		if (errno == 0)
			errno = ENOSPC;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", tmp),
				 errhint("A sync that runs on this standby keeps its progress there: check the space and permissions of the data directory's pg_calabi_push.")));
	}
	if (pg_fsync(fd) != 0)
		ereport(data_sync_elevel(ERROR),
				(errcode_for_file_access(),
				 errmsg("could not fsync file \"%s\": %m", tmp),
				 errhint("A sync that runs on this standby keeps its progress there: check the space and permissions of the data directory's pg_calabi_push.")));
	if (CloseTransientFile(fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not close file \"%s\": %m", tmp),
				 errhint("A sync that runs on this standby keeps its progress there: check the space and permissions of the data directory's pg_calabi_push.")));
	(void) durable_rename(tmp, path, ERROR);
}

void
cp_state_file_remove(Oid dboid, const pg_uuid_t *id)
{
	char		path[MAXPGPATH];

	file_path(path, dboid, id);
	if (unlink(path) == 0)
	{
		char		dir[MAXPGPATH];

		db_dir(dir, dboid);
		fsync_fname(dir, true);
	}
	else if (errno != ENOENT)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not remove file \"%s\": %m", path),
				 errhint("A sync that runs on this standby keeps its progress there: check the space and permissions of the data directory's pg_calabi_push.")));
}

void
cp_state_file_remove_others(Oid dboid, List *keep)
{
	char		dir[MAXPGPATH];
	DIR		   *d;
	struct dirent *de;

	db_dir(dir, dboid);
	d = AllocateDir(dir);
	if (d == NULL && errno == ENOENT)
		return;
	while ((de = ReadDir(d, dir)) != NULL)
	{
		char		idtext[UUID_LEN * 2 + 5];
		const char *dot = strrchr(de->d_name, '.');
		pg_uuid_t  *id;
		bool		kept = false;
		ListCell   *lc;

		/*
		 * <uuid>.json, and a .tmp a crash left mid-write (a kept sync's is
		 * overwritten by its next write); nothing else
		 */
		if (dot == NULL || dot - de->d_name != sizeof(idtext) - 1 ||
			strspn(de->d_name, "0123456789abcdef-") != sizeof(idtext) - 1 ||
			(strcmp(dot, ".json") != 0 && strcmp(dot, ".tmp") != 0))
			continue;
		memcpy(idtext, de->d_name, sizeof(idtext) - 1);
		idtext[sizeof(idtext) - 1] = '\0';
		id = DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(idtext)));
		foreach(lc, keep)
			if (memcmp(lfirst(lc), id, sizeof(pg_uuid_t)) == 0)
				kept = true;
		if (!kept)
		{
			char		path[MAXPGPATH];

			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			if (unlink(path) != 0 && errno != ENOENT)
				ereport(WARNING,
						(errcode_for_file_access(),
						 errmsg("could not remove file \"%s\": %m", path)));
			else
				ereport(DEBUG1,
						(errmsg_internal("calabi_push removed state file \"%s\" of a sync that no longer runs here",
										 path)));
		}
	}
	FreeDir(d);
	fsync_fname(dir, true);
}

/*
 * _standby_state(sync_id): the state file of a sync that runs (or ran,
 * until a promoted server took it over) on this server, as jsonb; NULL
 * when there is none, or (with a WARNING: sync_status and the probe go on
 * for the other syncs) when it is not JSON.
 *
 * Its last_error may hold what an endpoint answered, which sync_status
 * shows only to superusers and the destination's owner: to any other
 * role, last_error is the redacted text here, so that no reader of
 * sync_status gets more by calling this function itself.  (The
 * destination's owner sees the redacted text too, on a standby.)
 */
Datum
calabi_push_standby_state(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *id = PG_GETARG_UUID_P(0);
	char	   *text;
	volatile Datum result = (Datum) 0;
	MemoryContext caller = CurrentMemoryContext;

	cp_require_status_reader(fcinfo);
	text = cp_state_file_read(MyDatabaseId, id);
	if (text == NULL)
		PG_RETURN_NULL();

	/* jsonb_in's errors touch no shared state: caught without a subtransaction */
	PG_TRY();
	{
		result = DirectFunctionCall1(jsonb_in, CStringGetDatum(text));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("calabi_push state file of sync %s is not valid JSON: %s",
						DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id))),
						edata->message),
				 errhint("The sync's worker stops on it too. Move the file (pg_calabi_push/%u/ in the data directory) away: the sync then starts from the catalog, above every batch number used before.",
						 MyDatabaseId)));
		PG_RETURN_NULL();
	}
	PG_END_TRY();

	if (!superuser())
	{
		Datum		path[2] = {CStringGetTextDatum("sync"), CStringGetTextDatum("last_error_redacted")};
		bool		isnull;
		Datum		redacted = jsonb_get_element(DatumGetJsonbP(result), path, 2, &isnull, false);
		JsonbValue	value;

		path[1] = CStringGetTextDatum("last_error");
		if (isnull)
			value.type = jbvNull;
		else
		{
			/* a scalar jsonb, as its one element */
			if (!JsonbExtractScalar(&DatumGetJsonbP(redacted)->root, &value))
				value.type = jbvNull;
		}
		result = jsonb_set_element(DatumGetJsonbP(result), path, 2, &value);
	}
	PG_RETURN_DATUM(result);
}
