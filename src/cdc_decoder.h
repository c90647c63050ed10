/*-------------------------------------------------------------------------
 *
 * cdc_decoder.h
 *	  Logical decoding inside a sync worker: one decoding context on the
 *	  sync's slot for the worker's whole life, fed from the local WAL.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_CDC_DECODER_H
#define CALABI_PUSH_CDC_DECODER_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "access/xlogreader.h"
#include "nodes/pg_list.h"

typedef struct CpDecoder CpDecoder;

/*
 * The end of the WAL there is to decode: flushed, or on a hot standby
 * (PostgreSQL 16 and later) replayed.
 */
extern XLogRecPtr cp_decoder_wal_end(void);

/*
 * The decoder's page reader (an XLogReaderRoutine page_read): waits for
 * the WAL up to cp_decoder_wal_end, serving a stop, a reload and the
 * postmaster's death meanwhile (see the .c).  Also the reader of a slot's
 * creation (cdc_slot.c).
 */
extern int	cp_decoder_read_page(XLogReaderState *state,
								 XLogRecPtr targetPagePtr, int reqLen,
								 XLogRecPtr targetRecPtr, char *cur_page);

/*
 * Acquire the slot and start decoding after start_lsn (changes committed
 * before it are skipped: the sync's checkpoint holds them).  failover: the
 * sync's option, which the slot is made to follow, and which makes
 * decoding and confirmations wait for synchronized_standby_slots (PG17;
 * see the .c).  options are the output plugin's (DefElem list).  No
 * transaction open.
 */
extern CpDecoder *cp_decoder_open(const char *slot_name, XLogRecPtr start_lsn,
								  bool failover, List *options,
								  MemoryContext parent);

/*
 * Decode the WAL flushed so far, record by record, until its end or until
 * stop(arg) says so (checked after each record).  Returns the number of
 * records read; *at_end says whether it reached the end.  Call with no transaction open; after catalog access
 * through SPI, say so with cp_decoder_catalog_used first.
 */
extern int	cp_decoder_read(CpDecoder *decoder, bool (*stop) (void *arg), void *arg,
							bool *at_end);

/* Ordinary catalog access happened since the last read (see .c). */
extern void cp_decoder_catalog_used(CpDecoder *decoder);

/*
 * The last read decoded nothing because the standbys of
 * synchronized_standby_slots have not flushed the WAL it would read.
 */
extern bool cp_decoder_waits_for_standbys(const CpDecoder *decoder);

/* Where decoding stands: the end of the last record read. */
extern XLogRecPtr cp_decoder_position(const CpDecoder *decoder);

/*
 * How far the slot is confirmed: the checkpoint, or behind it while a
 * failover slot's confirmation waits for the standbys.
 */
extern XLogRecPtr cp_decoder_confirmed(const CpDecoder *decoder);

/*
 * Everything committed before lsn is acknowledged and checkpointed: let the
 * slot release it.  save: durably (at most once a second); else at the
 * next checkpoint, or when PostgreSQL saves the slot because its restart
 * position moved.
 */
extern void cp_decoder_confirm(CpDecoder *decoder, XLogRecPtr lsn, bool save);
/* Save the slot to disk now, its confirmed position with it (a clean stop). */
extern void cp_decoder_save(CpDecoder *decoder);

#endif							/* CALABI_PUSH_CDC_DECODER_H */
