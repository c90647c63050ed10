/*-------------------------------------------------------------------------
 *
 * stream.h
 *	  A relation as a stream: which relations qualify, how they are read,
 *	  and the "stream" object of the STREAM message that describes them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_STREAM_H
#define CALABI_PUSH_STREAM_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "datatype/timestamp.h"
#include "utils/relcache.h"

#include "encoder.h"

/*
 * Open a relation that a sync could stream, as role: it must exist, be a
 * table, partitioned table, view, materialized view or foreign table, and
 * role must be allowed to SELECT all its columns.  Errors otherwise, with a
 * hint.  The relation is returned with AccessShareLock held.
 */
extern Relation cp_stream_open(Oid relid, Oid role);

/* Milliseconds since the Unix epoch of t: the protocol's emitted_at. */
extern int64 cp_unix_ms(TimestampTz t);

/* "SELECT * FROM <rel>" as a sync reads it (see stream.c for ONLY). */
extern char *cp_stream_select_query(Relation rel);

/* The primary key column names, else the replica identity's, else NIL. */
extern List *cp_stream_primary_key(Relation rel);
/* The index those come from (primary key, else replica identity), or InvalidOid. */
extern Oid	cp_stream_key_index(Relation rel);

/*
 * Append the "stream" object: namespace, name, json_schema, primary_key,
 * then extra_members (JSON members, e.g. the sync modes) when not NULL.
 * enc must have been built from the relation's tuple descriptor.
 */
extern void cp_stream_append_object(StringInfo buf, Relation rel,
									const CpRowEncoder *enc,
									const char *extra_members);

#endif							/* CALABI_PUSH_STREAM_H */
