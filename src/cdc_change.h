/*-------------------------------------------------------------------------
 *
 * cdc_change.h
 *	  One decoded change -> the ingest protocol's lines.
 *
 * Appends NDJSON lines (each ending in '\n', none containing another) to a
 * StringInfo the caller owns: the output plugin writes them through the SQL
 * functions, the sync worker will put them in its batch.  How the lines are
 * shipped is none of this module's business.
 *
 * Lines for a change: the relation's STREAM line when it is owed (first
 * message of the relation in the session, or its columns changed), then
 * - insert: a RECORD with the new row;
 * - update: a RECORD with the new row (TOASTed values that did not change
 *   and are not in the WAL are left out of data and listed in "unchanged");
 *   when the stream's key changed, a delete RECORD for the old key first;
 * - delete: a RECORD with the old key (or the old row under REPLICA IDENTITY
 *   FULL), null for every other column, and _calabi_cdc_deleted_at set;
 * - truncate: a CONTROL truncate message.
 * Values go through the encoder (encoder.h), byte for byte as preview().
 *
 * Usage, inside a replayed transaction (the decoding callbacks):
 *   cp_cdc_txn_begin at begin, cp_cdc_append_change / cp_cdc_append_truncate
 *   per change, cp_cdc_txn_end at commit.  The relation cache
 *   (cdc_relcache.h) must be set up for the session.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_CDC_CHANGE_H
#define CALABI_PUSH_CDC_CHANGE_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "lib/stringinfo.h"
#include "replication/reorderbuffer.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

#include "encoder.h"

/* The transaction the changes belong to. */
typedef struct CpCdcTxn
{
	XLogRecPtr	end_lsn;		/* end of its commit record: _calabi_cdc_lsn */
	TimestampTz commit_time;	/* _calabi_cdc_updated_at (and deleted_at) */

	/*
	 * Built at the first record: "_calabi_cdc_lsn":N,"_calabi_cdc_updated_at":T,
	 * "_calabi_cdc_deleted_at": (the caller's value follows), and T alone.
	 */
	bool		members_ready;
	/* emitted_at (ms since the Unix epoch, read at the first record) and ,"data": */
	char		emitted[40];
	int			emitted_len;
	int			members_len;
	int			time_len;
	char		members[160];
	char		time[64];

	/*
	 * The encoder's settings (cp_encoder_pin_settings), pinned at the first
	 * row that needs them and unpinned by cp_cdc_txn_end; a caller that
	 * keeps them pinned for the whole session sets settings_pinned.
	 */
	bool		settings_pinned;
	int			pin_nestlevel;	/* > 0: pinned by us, at this level */

	/*
	 * A sync worker's backfill watches the keys that changes of one
	 * relation touch (cdc_sink.h): on_key gets each key as JSON array text,
	 * and whether the change left values out ("unchanged"); key NULL for a
	 * truncate.  Set by the sink after cp_cdc_txn_begin.
	 */
	Oid			watch_relid;
	void		(*on_key) (void *arg, const char *key, int len, bool partial);
	void	   *on_key_arg;

	/*
	 * A sync worker's answer to a change of a relation that violates a
	 * precondition (cdc_relcache.h) under the catalog of that change: it
	 * raises an error (the sync stops), or returns and the change is not
	 * sent.  NULL (the SQL functions): the relation's entry decides.  Set
	 * by the sink after cp_cdc_txn_begin.
	 */
	void		(*on_violation) (void *arg, Relation rel, int violation);
	void	   *on_violation_arg;

	/*
	 * The longest a record line may be, '\n' included: a sync worker's
	 * batch_bytes (0: what a buffer can hold).  A change whose record would
	 * be longer is encoded no further than that (cp_encode_row_bounded) and
	 * not sent, nor is anything after it in the transaction (too_large):
	 * on_too_large is told which change it is (its LSN, its key as
	 * "(a, b)=(1, x)", "" without one, and its values' size before
	 * encoding).  NULL: an error is raised at once.  Set by the sink after
	 * cp_cdc_txn_begin.
	 */
	int			max_record_bytes;
	void		(*on_too_large) (void *arg, Relation rel, XLogRecPtr lsn,
								 const char *key, int64 bytes);
	void	   *on_too_large_arg;
	bool		too_large;
} CpCdcTxn;

extern void cp_cdc_txn_begin(CpCdcTxn *txn, XLogRecPtr end_lsn,
							 TimestampTz commit_time);
extern void cp_cdc_txn_end(CpCdcTxn *txn);

/*
 * Append the lines of one insert, update or delete of rel (any other action,
 * or a relation the session does not emit, appends nothing).  Returns the
 * number of lines appended; *nrecords says how many of them, the last
 * ones, are RECORDs (a STREAM line may precede them).
 */
extern int	cp_cdc_append_change(StringInfo out, CpCdcTxn *txn, Relation rel,
								 ReorderBufferChange *change, int *nrecords);

/*
 * A timestamptz as the _calabi_cdc_* members carry it.  The first call
 * looks the type up: call it in a transaction.
 */
extern void cp_cdc_append_time(StringInfo out, TimestampTz t);

/*
 * A row's key as the watcher sees it: the JSON array of the encoded values
 * of columns key_columns (indexes into enc->columns) of values/isnull.
 */
extern void cp_cdc_key_text(StringInfo out, const CpRowEncoder *enc,
							const int *key_columns, int nkeys,
							const Datum *values, const bool *isnull);

/* The same for the truncation of rel: its STREAM line if owed, a CONTROL. */
extern int	cp_cdc_append_truncate(StringInfo out, CpCdcTxn *txn, Relation rel);

#endif							/* CALABI_PUSH_CDC_CHANGE_H */
