/*-------------------------------------------------------------------------
 *
 * state_file.h
 *	  The state file of a sync that runs on a standby: its progress, which
 *	  the standby's read-only catalog cannot hold (sql/install/24_run_on.sql).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_STATE_FILE_H
#define CALABI_PUSH_STATE_FILE_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/uuid.h"

/* The file's JSON text, palloc'd; NULL when the sync has none here. */
extern char *cp_state_file_read(Oid dboid, const pg_uuid_t *id);

/*
 * Replace the file by json, atomically and durably: a crash leaves the old
 * state or the new one, and the new one survives it once this returns.
 */
extern void cp_state_file_write(Oid dboid, const pg_uuid_t *id, const char *json);

/* Remove the file (durably); no error when there is none. */
extern void cp_state_file_remove(Oid dboid, const pg_uuid_t *id);

/* Remove the files of this database's syncs other than keep (pg_uuid_t *). */
extern void cp_state_file_remove_others(Oid dboid, List *keep);

#endif							/* CALABI_PUSH_STATE_FILE_H */
