/*-------------------------------------------------------------------------
 *
 * changed_wal.h
 *	  The blocks of some relations that the WAL references from a position
 *	  on: which pages an incremental read looks into (changed.h).
 *
 * The server's own WAL is read in the worker, from a run's floor up to the
 * WAL insert position taken after the chunk's snapshot (flushed first, so
 * that a transaction committed asynchronously is read too): every change
 * to a page that a transaction visible to the chunk made is then read.
 * Each record's block references to a relation's main fork go into its
 * set; a later chunk reads on from where the previous read stopped.
 *
 * The WAL cannot tell, and the caller falls back to page LSNs, when: the
 * WAL from the position has been removed (or is removed, or found
 * unreadable, while it is read: any error of the read, but a cancel, is
 * caught in a subtransaction and taken for that); there is more of it to
 * read than calabi_push.xmin_wal_ratio times the relations' size (reading
 * their page headers is cheaper then; 0 never reads the WAL); a record
 * creates the storage of one of the files (a file created after the floor
 * may have pages written without WAL); or the server is in recovery.
 * XLOG_SMGR_TRUNCATE needs nothing: blocks cut off are not read, and a
 * block written again after it is referenced by the record that writes it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_CHANGED_WAL_H
#define CALABI_PUSH_CHANGED_WAL_H

#include "postgres.h"

#include "access/xlogdefs.h"

#include "changed.h"
#include "compat.h"

/* A relation's file, and the set its main fork's referenced blocks go to. */
typedef struct CpWalRelation
{
	CpRelFile	file;
	CpChangedBlocks *blocks;
} CpWalRelation;

/* calabi_push.xmin_wal_ratio (_PG_init) */
extern void cp_changed_wal_define_setting(void);

/*
 * In a transaction, under the snapshot whose visible changes must be
 * found: add to each relation's set the blocks the WAL references from
 * *from on; move *from to where the next read begins, and add the bytes
 * read to *bytes (of the run: what the bound applies to; relation_bytes,
 * the relations' size).  false, with *why (palloc'd): the WAL cannot tell
 * (see above), nothing is to be trusted of this read; the sets are
 * unchanged or partly filled.
 */
extern bool cp_changed_wal_read(CpWalRelation *rels, int nrels, XLogRecPtr *from,
								uint64 *bytes, uint64 relation_bytes, char **why);

#endif							/* CALABI_PUSH_CHANGED_WAL_H */
