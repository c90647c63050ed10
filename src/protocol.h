/*-------------------------------------------------------------------------
 *
 * protocol.h
 *	  The lines of the Calabi ingest protocol (docs/receiver.md): stream
 *	  names, STREAM, RECORD, CONTROL, STATE and each method's stream state.
 *
 * No other file writes protocol JSON: a change of the wire format is a
 * change of this file.  What goes inside a RECORD's data object is the
 * encoder's (encoder.h); the STREAM's stream object is stream.c's.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_PROTOCOL_H
#define CALABI_PUSH_PROTOCOL_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "utils/relcache.h"

#include "encoder.h"

struct CpStreamRun;

/*
 * A stream's names as members: STATE and STREAM call them "namespace" and
 * "name", RECORD and CONTROL "namespace" and "stream".  Palloc'd.
 */
extern char *cp_protocol_state_names(const char *nspname, const char *relname);
extern char *cp_protocol_message_names(const char *nspname, const char *relname);

/*
 * The STREAM message of rel (no '\n'): its columns as schema describes
 * them, read by method into destination_sync_mode; cursor_field names the
 * cursor column, or NULL when the method has none.
 */
extern void cp_protocol_append_stream(StringInfo buf, Relation rel,
									  const CpRowEncoder *schema,
									  const char *method,
									  const char *destination_sync_mode,
									  const char *cursor_field);

/*
 * What every RECORD of a stream starts with, up to its emitted_at
 * (palloc'd), from the stream's message names; a record's head up to its
 * data object: prefix, emitted_at, "data":; the same after the prefix.
 */
extern char *cp_protocol_record_prefix(const char *message_names);
extern void cp_protocol_record_head(StringInfo buf, const char *prefix,
									TimestampTz emitted_at);

/* The end of a RECORD whose data object was written after its head. */
extern void cp_protocol_record_end(StringInfo buf);
extern void cp_protocol_record_emitted(StringInfo buf, TimestampTz emitted_at);

/*
 * The members a CDC record's data object ends with: its position, its
 * commit (or read) time as encoded JSON, and "_calabi_cdc_deleted_at":
 * whose value, null or the time, the caller appends.
 */
extern void cp_protocol_cdc_members(StringInfo buf, XLogRecPtr lsn,
									const char *time, int time_len);

/*
 * A CONTROL message refresh_start or refresh_end (no '\n'); lsn, when
 * valid, is the refresh_start's.  A truncate's line is its prefix
 * (palloc'd), then the LSN, then its end (with '\n').
 */
extern void cp_protocol_append_control(StringInfo buf, const char *kind,
									   const char *message_names,
									   int64 generation, XLogRecPtr lsn);
extern char *cp_protocol_truncate_prefix(const char *message_names);
extern void cp_protocol_append_truncate_end(StringInfo buf, XLogRecPtr lsn);

/*
 * The STATE line (with '\n') of a batch: its number and, for each stream
 * whose state is not NULL, its state names and its state (JSON text).
 */
extern void cp_protocol_state_line(StringInfo line, int64 batch_seq, int nstreams,
								   const char *const *state_names,
								   const char *const *states,
								   const int *state_lens);

/* A stream's state under each method, in phase ("reading", "done", ...). */
extern void cp_protocol_full_refresh_state(StringInfo buf,
										   const struct CpStreamRun *s,
										   const char *phase);
extern void cp_protocol_cdc_state(StringInfo buf, const struct CpStreamRun *s,
								  const char *phase, XLogRecPtr lsn);

/* What an xmin stream's state holds besides the stream's (xmin.c). */
typedef struct CpXminState
{
	const char *method;			/* xmin, or cursor on a heap relation */
	const char *phase;			/* reading, done */
	bool		full;			/* a full read, or an incremental one */
	const char *since;			/* the snapshot compared with, or NULL */
	const char *snapshot;		/* reading: the run's own */
	XLogRecPtr	floor;			/* reading: pages at or below it skipped */
	const char *marks;
	const char *parts;			/* relations read and their relfilenodes */
	Oid			part;			/* reading: the one being read */
	int64		pages_examined;
	int64		pages_skipped;
	const char *pages_found_by; /* wal, page_lsn or every_page (xmin.c) */
	int64		wal_bytes_read;
	const char *full_reason;	/* why a full read was forced, or NULL */
	const char *cursor;			/* cursor: the largest value sent, or NULL */
} CpXminState;

extern void cp_protocol_xmin_state(StringInfo buf, const struct CpStreamRun *s,
								   const CpXminState *x);

/*
 * What the state of a cursor stream read by its cursor column (a view, a
 * foreign table: cursor.c) holds besides the stream's.  While it reads,
 * the stream's position (s->after) is the largest value sent, from which
 * a resumed read goes on (ties at it are sent again).
 */
typedef struct CpCursorState
{
	const char *phase;			/* reading, done */
	bool		full;			/* a full read, or an incremental one */
	const char *since;			/* the largest value of the previous run */
	const char *cursor;			/* the largest value sent, or NULL */
	const char *full_reason;	/* why a full read was forced, or NULL */
} CpCursorState;

extern void cp_protocol_cursor_state(StringInfo buf, const struct CpStreamRun *s,
									 const CpCursorState *c);

#endif							/* CALABI_PUSH_PROTOCOL_H */
