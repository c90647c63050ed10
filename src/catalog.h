/*-------------------------------------------------------------------------
 *
 * catalog.h
 *	  What a sync worker reads from and writes to the calabi_push tables.
 *
 * Every function runs its own short transaction: call them with none open.
 * The worker writes nothing else, and it writes a checkpoint only after
 * the endpoint acknowledged the batch that reaches it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_CATALOG_H
#define CALABI_PUSH_CATALOG_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "nodes/pg_list.h"
#include "utils/uuid.h"

#include "http.h"

typedef struct CpStreamDef
{
	Oid			relid;
	int			ordinal;
	char	   *phase;			/* pending, reading, done */
	int64		generation;
	int64		rows_sent;
	/* from the acknowledged checkpoint, when a read is under way */
	Oid			relfilenode;
	List	   *key;			/* keyset: the key's column names */
	List	   *after;			/* keyset position: key values as text */
	XLogRecPtr	refresh_lsn;	/* CDC backfill: its refresh_start's lsn */
	/* xmin (xmin.c; NULL or 0 when the checkpoint has none) */
	char	   *read;			/* "full" or "incremental" */
	char	   *since;			/* the snapshot a read compares with */
	char	   *snapshot;		/* a read under way: its own snapshot */
	char	   *marks;
	int64		pages_examined;
	int64		pages_skipped;
	char	   *pages_found_by; /* wal, page_lsn, every_page; or NULL */
	int64		wal_bytes_read;
	char	   *full_reason;
	XLogRecPtr	floor;			/* a read under way: pages at or below skipped */
	char	   *parts;			/* "relid:relfilenode,..." read by the last run */
	Oid			part;			/* a read under way: the relation it is in */
	/* cursor (cursor.c) */
	char	   *cursor_column;	/* the column, as in the catalog */
	char	   *cursor;			/* the largest cursor value sent, as text */
} CpStreamDef;

/*
 * Replace a text of def (one of its own, or NULL) by a copy of value (or
 * NULL), in def's memory: a scheduled sync's definitions live as long as
 * its worker, across runs.
 */
extern void cp_stream_def_set(CpStreamDef *def, char **field, const char *value);

typedef struct CpSyncDef
{
	pg_uuid_t	id;
	char		id_text[UUID_LEN * 2 + 5];
	char	   *name;
	char	   *method;
	char	   *mode;			/* destination_sync_mode */
	Oid			run_as;
	bool		enabled;
	int			batch_rows;
	int			batch_bytes;
	int			batch_linger_ms;
	int			chunk_rows;
	int64		schedule_ms;	/* 0: run once per start */
	int64		max_backoff_ms;
	bool		gzip;
	int			gzip_level;		/* the destination's compression_level; 0: not set */
	CpDestinationConfig dest;
	/* CDC: every change committed before this was acknowledged; 0: no slot yet */
	XLogRecPtr	cdc_lsn;
	/* CDC: the slot fails over to standbys (the option "failover", PG17) */
	bool		failover;
	/* cursor: how far below its position a view's run reads again, or NULL */
	char	   *lookback;
	List	   *streams;		/* CpStreamDef *, in read order */
} CpSyncDef;


/*
 * The defaults of a sync's options: the one place they are defined.  The
 * SQL functions fill them into the stored options (calabi_push.
 * _sync_defaults()); the worker falls back on them for a row that lacks one.
 */
#define CP_SYNC_DEFAULT_BATCH_ROWS			10000
#define CP_SYNC_DEFAULT_BATCH_BYTES			(8 * 1024 * 1024)
#define CP_SYNC_DEFAULT_BATCH_LINGER_MS		1000
#define CP_SYNC_DEFAULT_CHUNK_ROWS			10000
#define CP_SYNC_DEFAULT_MAX_BACKOFF_MS		(5 * 60 * 1000)

/*
 * Connect a background worker (a sync's, a probe) to its database, as the
 * bootstrap superuser, the role the catalog's transactions run as.  A sync
 * worker's session then becomes its sync's run_as role (what the reads and
 * decoding run as); the catalog, on which nothing is granted, is still read
 * and written as that superuser, in a security-restricted operation: none
 * of it runs user code.
 */
extern void cp_catalog_connect(Oid dboid);

/*
 * Load a sync; NULL when it no longer exists or the extension is gone from
 * this database.
 */
extern CpSyncDef *cp_catalog_load_sync(const pg_uuid_t *id, MemoryContext mcxt);

/* Enabled syncs of this database (a probe's question). */
extern List *cp_catalog_enabled_syncs(void);

/*
 * Reserve n batch numbers: returns the first; numbers up to first + n - 1
 * are ours.  Committed before any of them is used.
 */
extern int64 cp_catalog_reserve_batch_seq(const CpSyncDef *sync, int n);

/* One stream's acknowledged state, as sent in the STATE message. */
typedef struct CpStreamAck
{
	Oid			relid;
	const char *state;			/* JSON object text */
} CpStreamAck;

/*
 * The endpoint acknowledged batches (one, or several checkpointed
 * together): record their checkpoint and counters, and for CDC the WAL
 * position they reach (0: none).
 */
extern void cp_catalog_commit_ack(const CpSyncDef *sync, const CpStreamAck *acks,
								  int nacks, int64 batches, int64 records, int64 bytes,
								  int64 retries, XLogRecPtr position);

/*
 * CDC: the slot was created at position (created), or nothing was pending
 * up to position.  A NULL position (resync asked for a new slot) is only
 * replaced by a creation.
 */
extern void cp_catalog_set_cdc_lsn(const CpSyncDef *sync, XLogRecPtr position,
								   bool created);

/*
 * A hot standby's probe: the syncs of this database that run on this server
 * (option run_on), whether they should run, and whether the primary took a
 * command (start_sync, resync) their state file has not applied yet.
 */
typedef struct CpStandbySync
{
	pg_uuid_t	id;
	bool		run;
	bool		commanded;
} CpStandbySync;

extern List *cp_catalog_standby_syncs(void);

/* Every sync of this database (pg_uuid_t *; NIL when the extension is absent). */
extern List *cp_catalog_sync_ids(void);

/*
 * A primary's probe: the state files of syncs this server ran as a standby
 * become the catalog's (each once), and those of dropped syncs go.
 */
extern void cp_catalog_import_states(void);

/* CDC syncs of this database (NIL when the extension is absent). */
extern List *cp_catalog_cdc_syncs(void);

/* A run read every stream to the end / a scheduled run begins. */
extern void cp_catalog_run_completed(const CpSyncDef *sync);
extern void cp_catalog_run_begins(const CpSyncDef *sync);
/*
 * When the sync's current or last run started (run_started_at; 0 if never
 * recorded), and whether it completed (run_completed_at is set).
 */
extern TimestampTz cp_catalog_last_run(const CpSyncDef *sync, bool *completed);

/*
 * Record an error for sync_status; refused = the endpoint refused a batch:
 * the sync stops (enabled = false) until start_sync.
 */
extern void cp_catalog_record_error(const pg_uuid_t *id, const char *message,
									const char *message_redacted, bool refused);

/*
 * CDC: the stream of relid is read again at the sync's next start (a new
 * generation, as resync(name, rel)): changes of it are missing from the WAL.
 */
extern void cp_catalog_stream_reread(const CpSyncDef *sync, Oid relid);

/*
 * Probe, on a server whose timeline moved (src/home.c): whether a sync of
 * this database, created in this cluster, was bound to another timeline;
 * then settle them: a failover binds them to tli, a copy beside a live
 * server of the same system marks them copies for good (timeline 0).
 */
extern bool cp_catalog_timeline_moved(uint64 sysid, TimeLineID tli);
extern void cp_catalog_settle_timeline(uint64 sysid, TimeLineID tli, bool failover);

/*
 * Probe: stop the enabled syncs that are copies of syncs made elsewhere
 * (sync_status says why); returns how many.
 */
extern int	cp_catalog_stop_copied(void);

#endif							/* CALABI_PUSH_CATALOG_H */
