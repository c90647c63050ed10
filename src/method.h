/*-------------------------------------------------------------------------
 *
 * method.h
 *	  The sync methods: what a sync worker dispatches to (worker.c).
 *
 * A method is one file with one entry point, called once the worker has
 * set up its session, the error boundary, the HTTP client and the
 * compressor.  It reads through reader.c (or decodes), writes its lines
 * through protocol.c and hands batches to delivery.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_METHOD_H
#define CALABI_PUSH_METHOD_H

#include "postgres.h"

#include "worker.h"

/*
 * A method's run.  Returns how the worker ends when the sync has nothing
 * more to do in this process: CP_EXIT_DONE (a run-once sync completed; the
 * launcher waits for start_sync or resync) or CP_EXIT_GONE (the sync was
 * dropped or disabled).  Errors leave by ereport, to the worker's boundary.
 */
typedef CpExitKind (*CpMethodRun) (CpRun *run);

struct CpCursorColumn;

/*
 * method.c: prepare stream idx for a run of method (in a transaction of
 * its own): describe it (reader.h) and, for a cursor sync, its cursor
 * column (its description in the stream's memory, its largest value in
 * the run's), and write its STREAM message, with the cursor_field of a
 * cursor sync, into the batch.  Whatever described it before is gone: the
 * batches that point at it are delivered first.
 */
extern void cp_method_prepare_stream(CpRun *run, int idx, const char *method,
									 struct CpCursorColumn *cursor);

/*
 * method.c: a row a chunk encoded into the batch from start, up to its
 * data object (reader.h): closed as a RECORD of stream idx, counted.
 */
extern void cp_method_record_done(CpRun *run, int idx, int start);

/* method.c: the state text state of stream idx, reached once delivered. */
extern void cp_method_add_state(CpRun *run, int idx, StringInfo state);

/* full_refresh.c: every stream read whole, under a new generation */
extern CpExitKind cp_full_refresh_run(CpRun *run);

/* xmin.c: a full read first, then the rows changed since the last run */
extern CpExitKind cp_xmin_run(CpRun *run);

/*
 * xmin.c: read stream idx for a run of method as the xmin method does
 * (the cursor method's read of relations stored by heap), noting in
 * cursor, if not NULL, the largest value of its column sent.
 */
extern void cp_xmin_read_stream(CpRun *run, int idx, const char *method,
								struct CpCursorColumn *cursor);

/* cursor.c: a full read first, then the rows changed or past the cursor */
extern CpExitKind cp_cursor_run(CpRun *run);

/* cdc_sync.c: decoding the WAL; returns only by error or a stop */
extern CpExitKind cp_cdc_run(CpRun *run);
/* its setting (calabi_push.cdc_send_interval), from _PG_init */
extern void cp_cdc_define_settings(void);

/*
 * schedule.c: the runs of a method that reads its streams anew each run
 * (full refresh, xmin, cursor): read_stream reads one stream to its
 * end, flushing as batches fill.  Without a schedule one run is made; with
 * one, a run is due every schedule_ms from the start of the previous one.
 */
typedef void (*CpReadStream) (CpRun *run, int stream);
extern CpExitKind cp_schedule_runs(CpRun *run, CpReadStream read_stream);

#endif							/* CALABI_PUSH_METHOD_H */
