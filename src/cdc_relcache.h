/*-------------------------------------------------------------------------
 *
 * cdc_relcache.h
 *	  What a decoding session knows about each relation it has seen: whether
 *	  its changes are emitted, its row encoder, its STREAM line and the
 *	  prefixes of its messages, built once and rebuilt after an invalidation.
 *
 * pgoutput's RelationSyncEntry pattern: a hash keyed by relation OID, whose
 * entries a relcache callback marks stale (and a syscache callback on
 * pg_namespace, for schema renames).  A stale entry is rebuilt at the next
 * change of its relation, under the historic snapshot of that change, so the
 * encoder always matches the tuples being decoded.  When the rebuilt STREAM
 * line or the columns' types differ from what was last announced, the entry
 * asks for a new STREAM line before that change: exactly where the ALTER
 * TABLE happened in the WAL.
 *
 * One cache per process (callbacks cannot be unregistered); it lives in a
 * context under the caller's long-lived context and forgets itself when that
 * context goes, so an error that frees the decoding context leaves no
 * dangling pointer behind.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_CDC_RELCACHE_H
#define CALABI_PUSH_CDC_RELCACHE_H

#include "postgres.h"

#include "utils/relcache.h"

#include "encoder.h"

/* Which relations a session emits, and how their streams are declared. */
typedef struct CpCdcOptions
{
	/* "append_dedup" or "append": the STREAM's destination_sync_mode */
	const char *destination_sync_mode;
	/* relation OIDs to emit, sorted; nrelations < 0: every user table */
	int			nrelations;
	const Oid  *relations;
	/* InvalidOid, or the role that must be allowed to SELECT a relation */
	Oid			run_as;
	/* a sync worker: a violated precondition stops it (no log of ours) */
	bool		in_sync;
} CpCdcOptions;

/*
 * What a CDC sync needs of each table, checked when the sync starts, when
 * its definition changes (an invalidation) and for every decoded change
 * under the catalog of that change.  Violated, nothing of the table may be
 * sent: the access kinds (role, privilege, row-level security) because
 * run_as may not see it, the others because what the WAL holds (or not)
 * would be wrong at the destination.
 */
typedef enum CpCdcViolation
{
	CP_CDC_OK = 0,
	CP_CDC_DROPPED,				/* the relation no longer exists */
	CP_CDC_ROLE_GONE,			/* run_as was dropped */
	CP_CDC_NO_SELECT,			/* run_as may not SELECT it */
	CP_CDC_RLS,					/* row-level security applies to run_as */
	CP_CDC_UNLOGGED,			/* not in the WAL (unlogged, temporary) */
	CP_CDC_NO_KEY,				/* append_dedup: no primary key / identity */
	CP_CDC_REPLIDENT_NOTHING	/* append_dedup: deletes carry no key */
} CpCdcViolation;

typedef struct CpCdcRelation
{
	Oid			relid;			/* hash key */
	bool		valid;			/* false: rebuild before the next use */
	bool		built;			/* false: a rebuild did not complete */
	bool		emit;			/* its changes are emitted */
	bool		denied;			/* not emitted: run_as may not see it */
	CpCdcViolation violation;	/* of a relation that would be emitted */
	/* signature of the STREAM last sent in this session (in the cache's context) */
	char	   *announced;

	/* the rest is meaningful when emit; all of it lives in cxt */
	MemoryContext cxt;
	int			natts;			/* of the tuple descriptor it was built from */
	CpRowEncoder *enc;			/* live columns, in attribute order */
	bool	   *col_varlena;	/* per enc column: attlen == -1 (may be TOASTed) */
	bool		needs_settings; /* a column's encoding reads the pinned settings */
	int			nkeys;			/* the stream's primary_key columns ... */
	int		   *key_columns;	/* ... as indexes into enc->columns */
	char	   *stream_line;	/* the whole STREAM message, '\n' included */
	int			stream_line_len;
	char	   *signature;		/* stream_line + column types: a change means a new STREAM */
	char	   *record_prefix;	/* a RECORD up to its emitted_at (protocol.h) */
	int			record_prefix_len;
	char	   *truncate_prefix;	/* a CONTROL truncate up to its lsn (protocol.h) */
	int			truncate_prefix_len;
} CpCdcRelation;

/*
 * Create the process's cache under parent (a context that lives as long as
 * the decoding session), with a copy of options.  Registers the
 * invalidation callbacks the first time.  Needs no catalog access.
 */
extern void cp_cdc_relcache_init(MemoryContext parent, const CpCdcOptions *options);

/* Free the cache (also happens by itself when parent is freed). */
extern void cp_cdc_relcache_destroy(void);

/*
 * The entry of rel, rebuilt first if stale.  Call in a change or truncate
 * callback (catalog access under the historic snapshot).  Never NULL.
 */
extern CpCdcRelation *cp_cdc_relcache_get(Relation rel);

/*
 * Whether the entry's STREAM line is owed before its next message (first
 * message in the session, or its shape differs from the one last
 * announced); cp_cdc_relcache_announced records that it was sent.
 */
extern bool cp_cdc_relcache_stream_owed(const CpCdcRelation *entry);
extern void cp_cdc_relcache_announced(Oid relid, const char *signature);

/*
 * A sync worker's backfill reads rel outside decoding (current catalog):
 * its STREAM line and signature built exactly as for its changes, in the
 * current memory context.
 */
extern void cp_cdc_relcache_describe(Relation rel, char **stream_line,
									 int *stream_line_len, char **signature);

/*
 * Before rows of that shape go out at the decoder's position: 1 when the
 * STREAM line is owed (then call cp_cdc_relcache_announced), 0 when that
 * shape was the last announced, -1 when the decoder already describes the
 * relation otherwise (the rows are older than a schema change decoded
 * since: read them again).
 */
extern int	cp_cdc_relcache_owed(Oid relid, const char *signature);

/*
 * The first precondition rel violates for a sync reading as run_as (none
 * checked when InvalidOid) in a keyed (append_dedup) destination.  Reads
 * the catalog as the current snapshot shows it: the historic one of a
 * change while decoding, the present one otherwise.
 */
extern CpCdcViolation cp_cdc_check_relation(Relation rel, Oid run_as, bool keyed);

/*
 * Whether an invalidation since the last call may have changed what
 * cp_cdc_check_relation says of a listed relation (its definition,
 * policies, privileges, or a role): the sync worker then checks the
 * present catalog, so that a change with no later row of the table (SET
 * UNLOGGED, ENABLE ROW LEVEL SECURITY) is noticed at once.
 */
extern bool cp_cdc_relcache_take_recheck(void);

/*
 * Invalidations while ignoring is set do not ask for a check: the decoder's
 * own reset of every cache after ordinary catalog access is not a change.
 */
extern void cp_cdc_relcache_ignore_resets(bool ignore);

#endif							/* CALABI_PUSH_CDC_RELCACHE_H */
