/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every PG_VERSION_NUM difference calabi_push cares about, in one place.
 *
 * calabi_push is tested on PostgreSQL 15, 17 and 18 (test/run, and
 * test/run --pg 17|18); 14 and 16 are still mapped but neither compiled
 * nor tested.  The rest of the code calls the newest API and this header maps
 * it onto older servers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_COMPAT_H
#define CALABI_PUSH_COMPAT_H

#include "postgres.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

#if PG_VERSION_NUM < 140000
#error "calabi_push requires PostgreSQL 14 or later"
#endif

/*
 * A function that never returns: PG18's pg_noreturn, written before the
 * declaration (PG18 removed pg_attribute_noreturn(), written after it).
 */
#ifndef pg_noreturn
#define pg_noreturn _Noreturn
#endif

/*
 * Signatures PG18 changed (the callers include the headers):
 * - ReplicationSlotAcquire gained error_if_invalid; false keeps the older
 *   behaviour, where an invalidated slot is acquired and decoding from it
 *   fails with the reason (src/cdc_slot.c reports it);
 * - RelationGetPrimaryKeyIndex gained deferrable_ok; false keeps the older
 *   answer (a deferrable primary key does not identify rows);
 * - pg_b64_encode takes its input as uint8.
 */
#if PG_VERSION_NUM >= 180000
#define cp_replication_slot_acquire(name, nowait) ReplicationSlotAcquire(name, nowait, false)
#define cp_relation_primary_key_index(rel) RelationGetPrimaryKeyIndex(rel, false)
#define cp_b64_encode(src, len, dst, dstlen) pg_b64_encode((const uint8 *) (src), len, dst, dstlen)
#else
#define cp_replication_slot_acquire(name, nowait) ReplicationSlotAcquire(name, nowait)
#define cp_relation_primary_key_index(rel) RelationGetPrimaryKeyIndex(rel)
#define cp_b64_encode(src, len, dst, dstlen) pg_b64_encode(src, len, dst, dstlen)
#endif

/*
 * A uniform random number in [0, 1), for retry jitter: PG15's pg_prng, or
 * the random() that PG14 seeds in every backend.
 */
#if PG_VERSION_NUM >= 150000
#include "common/pg_prng.h"
#define cp_random_fraction() pg_prng_double(&pg_global_prng_state)
#else
#define cp_random_fraction() ((double) random() / ((double) MAX_RANDOM_VALUE + 1))
#endif

/*
 * Materialized set-returning functions of a scalar type (the result row
 * shape is the executor's expectedDesc): PG15 introduced SetSingleFuncCall,
 * renamed InitMaterializedSRF in PG16 (and kept under both names in later
 * 15.x).  PG14 has neither, so set the tuplestore up by hand.
 */
#if PG_VERSION_NUM >= 160000 || defined(MAT_SRF_USE_EXPECTED_DESC)
#define cp_init_materialized_srf(fcinfo) \
	InitMaterializedSRF((fcinfo), MAT_SRF_USE_EXPECTED_DESC)
#elif PG_VERSION_NUM >= 150000
#define cp_init_materialized_srf(fcinfo) \
	SetSingleFuncCall((fcinfo), SRF_SINGLE_USE_EXPECTED)
#else
#include "miscadmin.h"
#include "utils/tuplestore.h"
static inline void
cp_init_materialized_srf(FunctionCallInfo fcinfo)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext oldcontext;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize) ||
		rsinfo->expectedDesc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	oldcontext = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->setDesc = CreateTupleDescCopy(rsinfo->expectedDesc);
	MemoryContextSwitchTo(oldcontext);
}
#endif

/*
 * Reserving the GUC prefix: PG15 renamed EmitWarningsOnPlaceholders to
 * MarkGUCPrefixReserved and made it also reject unknown names.
 */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/*
 * Interval text in the postgres IntervalStyle.  PG15 switched EncodeInterval
 * to struct pg_itm; PG17 added infinite intervals, which the caller checks
 * with cp_interval_is_finite before asking for text.
 */
static inline void
cp_encode_interval_postgres(Interval *span, char *buf)
{
#if PG_VERSION_NUM >= 150000
	struct pg_itm itm;

	interval2itm(*span, &itm);
	EncodeInterval(&itm, INTSTYLE_POSTGRES, buf);
#else
	struct pg_tm tm;
	fsec_t		fsec;

	interval2tm(*span, &tm, &fsec);
	EncodeInterval(&tm, fsec, INTSTYLE_POSTGRES, buf);
#endif
}

#if PG_VERSION_NUM >= 170000
#define cp_interval_is_finite(span) (!INTERVAL_NOT_FINITE(span))
#else
#define cp_interval_is_finite(span) true
#endif

/*
 * PG17 made WaitEventSets resource-owner tracked; with no owner the caller
 * frees it, which is what the HTTP client does.
 */
#if PG_VERSION_NUM >= 170000
#define cp_create_wait_event_set(cxt, nevents) \
	CreateWaitEventSet(NULL, (nevents))
#else
#define cp_create_wait_event_set(cxt, nevents) \
	CreateWaitEventSet((cxt), (nevents))
#endif

/*
 * A GUC check hook's "extra": PG16 made guc.c free it with guc_free(), a
 * pfree in the GUC memory context, where older servers call free().
 * Returns NULL on failure, having logged it (as guc_malloc does).
 */
#if PG_VERSION_NUM >= 160000
#define cp_guc_extra_alloc(size) guc_malloc(LOG, (size))
#else
#define cp_guc_extra_alloc(size) malloc(size)
#endif

/*
 * Logical decoding.  PG15 put a decoded transaction's commit time in a union
 * with the prepare time (txn->xact_time); PG14 has txn->commit_time.  PG17
 * removed ReorderBufferTupleBuf: a change's tuples are plain HeapTuples.
 * Include replication/reorderbuffer.h before using these.  PG16 moved the
 * varlena macros (VARATT_IS_EXTERNAL_ONDISK, ...) out of postgres.h.
 */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif
#if PG_VERSION_NUM >= 150000
#define cp_txn_commit_time(txn) ((txn)->xact_time.commit_time)
#else
#define cp_txn_commit_time(txn) ((txn)->commit_time)
#endif

#if PG_VERSION_NUM >= 170000
#define cp_change_new_tuple(change) ((change)->data.tp.newtuple)
#define cp_change_old_tuple(change) ((change)->data.tp.oldtuple)
#else
#define cp_change_new_tuple(change) \
	((change)->data.tp.newtuple != NULL ? &(change)->data.tp.newtuple->tuple : NULL)
#define cp_change_old_tuple(change) \
	((change)->data.tp.oldtuple != NULL ? &(change)->data.tp.oldtuple->tuple : NULL)
#endif


/*
 * Replication slots and WAL for in-process decoding (cdc_slot.c,
 * cdc_decoder.c, cdc_backfill.c).
 */
#if PG_VERSION_NUM >= 170000
#define cp_slot_create(name, failover) \
	ReplicationSlotCreate((name), true, RS_EPHEMERAL, false, (failover), false)
#else
/* create_sync refuses "failover" before 17: there is nothing to ask for */
#define cp_slot_create(name, failover) \
	ReplicationSlotCreate((name), true, RS_EPHEMERAL, false)
#endif

/*
 * Failover slots (PG17): a slot's failover flag asks standbys with
 * sync_replication_slots to copy it (the copy is marked synced, still true
 * on a promoted standby).  cp_set_slot_failover changes the flag of the
 * slot this process has acquired as ReplicationSlotAlter does (which would
 * acquire it itself, waiting if it is in use, and whose signature PG18
 * changed).  cp_standby_slots_confirmed says whether every standby slot of
 * synchronized_standby_slots has flushed lsn (true when the setting is
 * empty, or on a standby), quietly: a caller that waits says so itself.
 * Before 17 (no CP_HAVE_FAILOVER_SLOTS) no slot fails over, and there is
 * no standby to wait for.  Expanded where replication/slot.h is included.
 */
#if PG_VERSION_NUM >= 170000
#define CP_HAVE_FAILOVER_SLOTS 1
#define cp_slot_failover(slot) ((slot)->data.failover)
#define cp_standby_slots_confirmed(lsn) StandbySlotsHaveCaughtup((lsn), DEBUG2)
#define cp_set_slot_failover(failover) \
	do { \
		SpinLockAcquire(&MyReplicationSlot->mutex); \
		MyReplicationSlot->data.failover = (failover); \
		SpinLockRelease(&MyReplicationSlot->mutex); \
		ReplicationSlotMarkDirty(); \
		ReplicationSlotSave(); \
	} while (0)
#else
#define cp_standby_slots_confirmed(lsn) true
#endif

#if PG_VERSION_NUM >= 160000
#define cp_slot_invalidated(slot) ((slot)->data.invalidated != RS_INVAL_NONE)
#else
#define cp_slot_invalidated(slot) \
	(!XLogRecPtrIsInvalid((slot)->data.invalidated_at) && \
	 XLogRecPtrIsInvalid((slot)->data.restart_lsn))
#endif

/*
 * Why a slot was invalidated: 15 knows one cause (the WAL it needed was
 * removed); 16 added the standby's causes (rows the slot still needed were
 * removed on the primary; wal_level lowered there), 18 the idle timeout.
 * Expanded where replication/slot.h is included.
 */
typedef enum CpSlotInvalidation
{
	CP_SLOT_VALID,
	CP_SLOT_WAL_REMOVED,
	CP_SLOT_ROWS_REMOVED,
	CP_SLOT_WAL_LEVEL,
	CP_SLOT_IDLE_TIMEOUT
} CpSlotInvalidation;

#if PG_VERSION_NUM >= 180000
#define cp_slot_invalidation(slot) \
	((slot)->data.invalidated == RS_INVAL_NONE ? CP_SLOT_VALID : \
	 (slot)->data.invalidated == RS_INVAL_HORIZON ? CP_SLOT_ROWS_REMOVED : \
	 (slot)->data.invalidated == RS_INVAL_WAL_LEVEL ? CP_SLOT_WAL_LEVEL : \
	 (slot)->data.invalidated == RS_INVAL_IDLE_TIMEOUT ? CP_SLOT_IDLE_TIMEOUT : \
	 CP_SLOT_WAL_REMOVED)
#elif PG_VERSION_NUM >= 160000
#define cp_slot_invalidation(slot) \
	((slot)->data.invalidated == RS_INVAL_NONE ? CP_SLOT_VALID : \
	 (slot)->data.invalidated == RS_INVAL_HORIZON ? CP_SLOT_ROWS_REMOVED : \
	 (slot)->data.invalidated == RS_INVAL_WAL_LEVEL ? CP_SLOT_WAL_LEVEL : \
	 CP_SLOT_WAL_REMOVED)
#else
#define cp_slot_invalidation(slot) \
	(cp_slot_invalidated(slot) ? CP_SLOT_WAL_REMOVED : CP_SLOT_VALID)
#endif

#if PG_VERSION_NUM >= 150000
#define cp_flush_rec_ptr() GetFlushRecPtr(NULL)
#else
#define cp_flush_rec_ptr() GetFlushRecPtr()
#endif

/*
 * Logical decoding on a hot standby (PG16): a slot can be created and read
 * there, on WAL as far as it is replayed; before 16 core refuses it
 * ("logical decoding cannot be used while in recovery"), and so do we,
 * earlier and with a hint (cp_cdc_check_server).  PG15 moved the replay
 * positions to xlogrecovery.h: GetXLogReplayRecPtr (the end of the last
 * record replayed) and GetCurrentReplayRecPtr (the same, or the end of the
 * record being replayed: set before its redo runs).  Expanded where
 * access/xlog.h is included.
 */
#if PG_VERSION_NUM >= 160000
#define CP_HAVE_STANDBY_DECODING 1
#define cp_primary_wal_level() GetActiveWalLevelOnStandby()
#endif
#if PG_VERSION_NUM >= 150000
#include "access/xlogrecovery.h"
#endif
#define cp_replay_rec_ptr() GetXLogReplayRecPtr(NULL)
#define cp_current_replay_rec_ptr() GetCurrentReplayRecPtr(NULL)

/*
 * This process's number in the PGPROC array (GetPGProcByNumber's): PG17
 * replaced PGPROC.pgprocno by MyProcNumber.  Expanded where
 * storage/proc.h is included.
 */
#if PG_VERSION_NUM >= 170000
#define cp_my_proc_number() MyProcNumber
#else
#define cp_my_proc_number() (MyProc->pgprocno)
#endif

#if PG_VERSION_NUM >= 170000
#define cp_log_logical_message(prefix, msg, len) \
	LogLogicalMessage((prefix), (msg), (len), false, true)
#else
#define cp_log_logical_message(prefix, msg, len) \
	LogLogicalMessage((prefix), (msg), (len), false)
#endif


/*
 * Ownership and privilege checks on databases and tablespaces: PG16 replaced
 * pg_<object>_ownercheck / pg_<object>_aclcheck with object_ownercheck /
 * object_aclcheck taking the catalog's oid.
 */
#include "utils/acl.h"
#if PG_VERSION_NUM >= 160000
#include "catalog/pg_database.h"
#include "catalog/pg_tablespace.h"
#define cp_database_ownercheck(dboid, roleid) \
	object_ownercheck(DatabaseRelationId, (dboid), (roleid))
#define cp_tablespace_aclcheck(spcoid, roleid, mode) \
	object_aclcheck(TableSpaceRelationId, (spcoid), (roleid), (mode))
#else
#define cp_database_ownercheck(dboid, roleid) \
	pg_database_ownercheck((dboid), (roleid))
#define cp_tablespace_aclcheck(spcoid, roleid, mode) \
	pg_tablespace_aclcheck((spcoid), (roleid), (mode))
#endif

/*
 * The timeline WAL is written on now (a server not in recovery): PG15 added
 * GetWALInsertionTimeLine(); PG14 keeps it in ThisTimeLineID, which
 * RecoveryInProgress() sets in a backend once recovery is over.
 */
#include "access/xlog.h"
#if PG_VERSION_NUM >= 150000
#define cp_insertion_timeline() GetWALInsertionTimeLine()
#else
static inline TimeLineID
cp_insertion_timeline(void)
{
	(void) RecoveryInProgress();
	return ThisTimeLineID;
}
#endif

/*
 * A physical replication connection through libpqwalreceiver: PG16 added
 * must_use_password, PG17 the replication flag.
 */
#if PG_VERSION_NUM >= 170000
#define cp_walrcv_connect_physical(conninfo, appname, err) \
	walrcv_connect((conninfo), true, false, false, (appname), (err))
#elif PG_VERSION_NUM >= 160000
#define cp_walrcv_connect_physical(conninfo, appname, err) \
	walrcv_connect((conninfo), false, false, (appname), (err))
#else
#define cp_walrcv_connect_physical(conninfo, appname, err) \
	walrcv_connect((conninfo), false, (appname), (err))
#endif

/*
 * A relation's physical file, as WAL block references name it: PG16
 * renamed RelFileNode (rel->rd_node; xl_smgr_create.rnode) to
 * RelFileLocator (rel->rd_locator; xl_smgr_create.rlocator), which
 * XLogRecGetBlockTagExtended fills.  Both are three Oids.  Include
 * utils/rel.h or catalog/storage_xlog.h before expanding the macros.
 */
#if PG_VERSION_NUM >= 160000
#include "storage/relfilelocator.h"
typedef RelFileLocator CpRelFile;
#define cp_rel_file(rel) ((rel)->rd_locator)
#define cp_smgr_create_file(xlrec) ((xlrec)->rlocator)
#else
#include "storage/relfilenode.h"
typedef RelFileNode CpRelFile;
#define cp_rel_file(rel) ((rel)->rd_node)
#define cp_smgr_create_file(xlrec) ((xlrec)->rnode)
#endif

/*
 * Reading the server's own WAL in a backend without waiting for WAL not yet
 * flushed: PG15 added read_local_xlog_page_no_wait, which tells the end of
 * the flushed WAL (ReadLocalXLogPageNoWaitPrivate.end_of_wal) from a read
 * failure, and XLogRecGetBlockTagExtended; before it only the waiting
 * read_local_xlog_page exists, so on PG14 the WAL is not read
 * (changed_wal.c falls back to page LSNs).
 */
#if PG_VERSION_NUM >= 150000
#define CP_HAVE_WAL_NO_WAIT 1
#endif

#endif							/* CALABI_PUSH_COMPAT_H */
