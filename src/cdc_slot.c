/*-------------------------------------------------------------------------
 *
 * cdc_slot.c
 *	  The replication slot a CDC sync owns (see cdc_slot.h).
 *
 * The slot is the durable queue of changes not yet acknowledged, but not
 * the truth about what was acknowledged: the sync's catalog row is
 * (sync.cdc_lsn, committed before the slot is ever confirmed past it).  So
 * a slot whose confirmed position is beyond that row lost changes, and one
 * that is gone or invalidated cannot continue: each is a loud error whose
 * way out is resync(), never a silent gap.
 *
 * The slot is created by the sync's worker at its first start: a slot
 * cannot be created in a transaction that has written, which create_sync's
 * has.  It is dropped by a database probe after drop_sync commits (or at
 * the next server start after DROP EXTENSION): the probe drops every slot
 * named like ours in its database whose sync no longer exists.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "access/transam.h"
#include "access/xlog.h"
#include "access/xlogutils.h"
#include "miscadmin.h"
#include "replication/logical.h"
#include "replication/slot.h"
#include "replication/walreceiver.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/varlena.h"

#include "catalog.h"
#include "cdc_decoder.h"
#include "cdc_slot.h"
#include "compat.h"
#include "worker.h"

#define PLUGIN_NAME "calabi_push"
/* how long a probe waits for a stopping worker to release a slot */
#define RELEASE_WAIT_MS 30000

void
cp_cdc_slot_name(const pg_uuid_t *sync_id, char *name)
{
	static const char hex[] = "0123456789abcdef";
	int			n = strlen(CP_SLOT_PREFIX);

	memcpy(name, CP_SLOT_PREFIX, n);
	for (int i = 0; i < UUID_LEN; i++)
	{
		name[n++] = hex[sync_id->data[i] >> 4];
		name[n++] = hex[sync_id->data[i] & 0x0F];
	}
	name[n] = '\0';
}

/* Whether the allow-list (when this server has one) lists our plugin. */
static bool
plugin_allowed(const char **setting)
{
	const char *value = GetConfigOption("output_plugin_libraries", true, false);
	char	   *copy;
	List	   *names;
	ListCell   *lc;
	bool		allowed = false;

	*setting = value;
	if (value == NULL)
		return true;			/* a server older than the allow-list */
	copy = pstrdup(value);
	if (!SplitIdentifierString(copy, ',', &names))
		return false;
	foreach(lc, names)
		if (strcmp(lfirst(lc), PLUGIN_NAME) == 0 || strcmp(lfirst(lc), "*") == 0)
			allowed = true;
	list_free(names);
	pfree(copy);
	return allowed;
}

void
cp_cdc_check_server(void)
{
	const char *setting;

	if (wal_level < WAL_LEVEL_LOGICAL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("change data capture needs wal_level = logical"),
				 errdetail("wal_level is \"%s\".", GetConfigOption("wal_level", false, false)),
				 errhint("Run ALTER SYSTEM SET wal_level = logical; and restart the server.")));
#ifdef CP_HAVE_STANDBY_DECODING
	/*
	 * On a hot standby the WAL is the primary's: decoding needs its level
	 * (core checks it too, when the slot is made or read, without a hint).
	 */
	if (RecoveryInProgress() && cp_primary_wal_level() < WAL_LEVEL_LOGICAL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("change data capture on a standby needs wal_level = logical on the primary"),
				 errdetail("This server is a hot standby; the WAL it replays is written at a lower level."),
				 errhint("Run ALTER SYSTEM SET wal_level = logical; on the primary and restart it.")));
#else

	/*
	 * A sync made to run here (run_on) on a server that cannot decode in
	 * recovery: say so before core's bare "logical decoding cannot be used
	 * while in recovery".
	 */
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("change data capture cannot decode on a standby of PostgreSQL %s",
						PG_MAJORVERSION),
				 errdetail("Logical decoding on a hot standby exists from PostgreSQL 16 on."),
				 errhint("Run the sync on the primary: create it again without \"run_on\".")));
#endif
	if (max_replication_slots <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("change data capture needs a replication slot, but max_replication_slots is 0"),
				 errhint("Run ALTER SYSTEM SET max_replication_slots = 10; and restart the server.")));
	if (!plugin_allowed(&setting))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("output plugin \"%s\" is not allowed by output_plugin_libraries", PLUGIN_NAME),
				 errdetail("output_plugin_libraries is \"%s\"; a CDC sync decodes through the calabi_push library's own output plugin.",
						   setting),
				 errhint("Add it to the list: ALTER SYSTEM SET output_plugin_libraries = %s%scalabi_push; then SELECT pg_reload_conf();",
						 setting, setting[0] ? ", " : "")));
}

void
cp_cdc_check_standby(const char *sync_name)
{
#ifdef CP_HAVE_STANDBY_DECODING
	bool		no_slot = PrimarySlotName == NULL || PrimarySlotName[0] == '\0';

	/*
	 * A slot on a standby needs the catalog rows of the transactions it
	 * has still to decode, which the primary's vacuum removes unless the
	 * standby tells it its horizon (hot_standby_feedback), also while the
	 * two are disconnected (a physical slot on the primary keeps it then).
	 * Without that, replay invalidates the slot when such rows go, and the
	 * sync needs resync: say so at every start, when it can still be
	 * avoided.
	 */
	if (RecoveryInProgress() && (!hot_standby_feedback || no_slot))
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("the replication slot of sync \"%s\" may be invalidated on this standby by the primary's vacuum",
						sync_name),
				 errdetail("%s", !hot_standby_feedback ?
						   "hot_standby_feedback is off: the primary removes catalog rows the slot still needs to decode." :
						   "primary_slot_name is empty: while the standby is disconnected, the primary may remove catalog rows the slot still needs to decode."),
				 errhint("On this standby set hot_standby_feedback = on and primary_slot_name to a physical slot made for it on the primary, then reload.")));
#endif
}

static bool find_slot(const char *name, ReplicationSlot *copy);

/*
 * A sync that has no slot yet needs a free one: a slot in use by anyone
 * (any database, physical or logical) counts against max_replication_slots.
 * Checked by create_sync and start_sync, so that the DBA hears it then, and
 * not only from the worker's retries (whose slot creation fails with core's
 * "all replication slots are in use" until one is free).  Two syncs created
 * at once may both see the same free slot: the second one's worker says so.
 */
static void
check_free_slot(const char *sync_name)
{
	int			used = 0;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (int i = 0; i < max_replication_slots; i++)
		if (ReplicationSlotCtl->replication_slots[i].in_use)
			used++;
	LWLockRelease(ReplicationSlotControlLock);

	if (used >= max_replication_slots)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("sync \"%s\" needs a replication slot of its own, but all %d allowed by max_replication_slots are in use",
						sync_name, max_replication_slots),
				 errdetail("Each CDC sync owns one replication slot, on top of the slots the server already uses (pg_replication_slots lists them)."),
				 errhint("Drop a slot that is no longer needed with pg_drop_replication_slot(), or raise the limit: ALTER SYSTEM SET max_replication_slots = %d; and restart the server.",
						 max_replication_slots + 1)));
}

PG_FUNCTION_INFO_V1(calabi_push_check_cdc_server);

/*
 * calabi_push._check_cdc_server(sync_name, slot_name), for create_sync and
 * start_sync: the server settings, and a free slot unless the sync's slot
 * (slot_name; NULL: a new sync) already exists.
 */
Datum
calabi_push_check_cdc_server(PG_FUNCTION_ARGS)
{
	cp_cdc_check_server();
	if (!PG_ARGISNULL(0))
	{
		char	   *sync_name = text_to_cstring(PG_GETARG_TEXT_PP(0));
		ReplicationSlot existing;

		if (PG_ARGISNULL(1) ||
			!find_slot(text_to_cstring(PG_GETARG_TEXT_PP(1)), &existing))
			check_free_slot(sync_name);
	}
	PG_RETURN_VOID();
}

/* A slot of that name, as the caller sees it now; false when none. */
static bool
find_slot(const char *name, ReplicationSlot *copy)
{
	ReplicationSlot *slot;
	bool		found = false;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(name, false);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		memcpy(copy, slot, sizeof(ReplicationSlot));
		SpinLockRelease(&slot->mutex);
		found = true;
	}
	LWLockRelease(ReplicationSlotControlLock);
	return found;
}

XLogRecPtr
cp_cdc_slot_create(const char *name, const char *sync_name, bool failover)
{
	ReplicationSlot existing;
	LogicalDecodingContext *ctx;
	XLogRecPtr	start;
	TransactionId oldest;
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "calabi_push slot creation",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

	cp_cdc_check_server();
	CheckLogicalDecodingRequirements();

	/*
	 * A slot of this name in this database, decoding with our plugin, is
	 * this sync's own, left from an earlier, abandoned start (or from before
	 * a resync): the name holds the sync's id, unique in the database.  One
	 * in another database (or with another plugin) is not ours: most likely
	 * the slot of the sync this one was copied from (a restored dump in the
	 * same cluster).  Never drop or take it over.
	 */
	if (find_slot(name, &existing))
	{
		if (existing.data.database != MyDatabaseId ||
			strcmp(NameStr(existing.data.plugin), PLUGIN_NAME) != 0)
		{
			/* retrying would meet it again: stop the sync */
			cp_worker_stop_on_error();
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("replication slot \"%s\" belongs to another database or plugin, not to sync \"%s\"",
							name, sync_name),
					 errdetail("It decodes with plugin \"%s\" in database %u; this sync is probably a copy of the sync that owns it.",
							   NameStr(existing.data.plugin), existing.data.database),
					 errhint("Do not drop that slot. Give this sync an identity and a slot of its own with SELECT calabi_push.adopt_sync('%s');",
							 sync_name)));
		}
		ReplicationSlotDrop(name, true);
	}

	/*
	 * A new logical slot becomes consistent only once every transaction
	 * running when it is created has ended, however long that takes: say
	 * so when there are some (sync_status names them while it waits).  On
	 * a standby they are the primary's, and what ends the wait is a record
	 * of the transactions running there that the primary writes (its
	 * bgwriter every 15 s, only while the server writes): no lock here
	 * names them, so the log says what to do instead.
	 */
	if (RecoveryInProgress())
		ereport(LOG,
				(errmsg("creating replication slot \"%s\" on a standby waits for the primary to record its running transactions, and for those to end",
						name),
				 errhint("The primary records them every 15 s while it writes; SELECT pg_log_standby_snapshot(); on the primary records them at once. stop_sync cancels.")));
	else
	{
		oldest = GetOldestActiveTransactionId();
		if (TransactionIdPrecedes(oldest, ReadNextTransactionId()))
		{
			int			pid = BackendXidGetPid(oldest);

			ereport(LOG,
					(errmsg("creating replication slot \"%s\" waits for the transactions running now to end, the oldest of which is %u (%s)",
							name, oldest,
							pid != 0 ? psprintf("process %d", pid) : "a prepared transaction"),
					 errhint("sync_status shows the sync as \"waiting_for_transactions\" and names them in state_detail; end them, or stop_sync to cancel.")));
		}
	}

	/*
	 * As pg_create_logical_replication_slot: ephemeral until the start
	 * point is found, so that an error or a crash leaves nothing behind
	 * (an ephemeral slot may be a failover slot: only temporary ones may
	 * not, which standbys never copy).  A standby's slot cannot fail over
	 * (core refuses it: standbys do not copy slots onward); cdc_decoder.c
	 * leaves the flag alone there.  The WAL that makes the slot consistent
	 * may be long to come on a standby (see above): the decoder's page
	 * reader serves a stop, a reload and the postmaster's death while it
	 * waits, where core's would not.
	 */
	cp_slot_create(name, failover && !RecoveryInProgress());
	ctx = CreateInitDecodingContext(PLUGIN_NAME, NIL, false, InvalidXLogRecPtr,
									XL_ROUTINE(.page_read = cp_decoder_read_page,
											   .segment_open = wal_segment_open,
											   .segment_close = wal_segment_close),
									NULL, NULL, NULL);
	DecodingContextFindStartpoint(ctx);
	start = MyReplicationSlot->data.confirmed_flush;
	FreeDecodingContext(ctx);
	ReplicationSlotPersist();
	ReplicationSlotRelease();

	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
	return start;
}

void
cp_cdc_slot_validate(const char *name, const char *sync_name, XLogRecPtr checkpoint)
{
	ReplicationSlot slot;

	if (!find_slot(name, &slot))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the replication slot \"%s\" of sync \"%s\" no longer exists", name, sync_name),
				 errdetail("Changes made since %X/%X may be lost with it.", LSN_FORMAT_ARGS(checkpoint)),
				 errhint("Run SELECT calabi_push.resync('%s'); to read every table again through a new slot.",
						 sync_name)));
	if (slot.data.database != MyDatabaseId)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the replication slot \"%s\" of sync \"%s\" belongs to another database (OID %u)",
						name, sync_name, slot.data.database),
				 errdetail("This sync is probably a copy of a sync of that database (a restored dump), which owns the slot."),
				 errhint("Do not drop that slot. Give this sync an identity and a slot of its own with SELECT calabi_push.adopt_sync('%s');",
						 sync_name)));
	if (cp_slot_invalidation(&slot) != CP_SLOT_VALID)
	{
		/* the cause, and the setting that would have kept the slot */
		const char *cause;
		const char *advice;

		switch (cp_slot_invalidation(&slot))
		{
			case CP_SLOT_IDLE_TIMEOUT:
				cause = "The slot was unused (the sync stopped) for longer than idle_replication_slot_timeout";
				advice = "raise idle_replication_slot_timeout or set it to 0, or drop the sync rather than leaving it stopped";
				break;
			case CP_SLOT_ROWS_REMOVED:
				cause = "The primary removed rows the slot still needed to decode (the slot was made or synchronized on a standby)";
				advice = "set hot_standby_feedback = on and use a physical slot between the servers (primary_slot_name)";
				break;
			case CP_SLOT_WAL_LEVEL:
				cause = "The primary's wal_level was lowered below logical (the slot was made or synchronized on a standby)";
				advice = "keep wal_level = logical on the primary";
				break;
			default:
				cause = "The server removed WAL the slot still needed (max_slot_wal_keep_size)";
				advice = "consider raising max_slot_wal_keep_size";
				break;
		}
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the replication slot \"%s\" of sync \"%s\" was invalidated", name, sync_name),
				 errdetail("%s; changes made since %X/%X are lost to it.",
						   cause, LSN_FORMAT_ARGS(checkpoint)),
				 errhint("Run SELECT calabi_push.resync('%s'); to read every table again through a new slot, and %s.",
						 sync_name, advice)));
	}
	if (strcmp(NameStr(slot.data.plugin), PLUGIN_NAME) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the replication slot \"%s\" does not belong to sync \"%s\"", name, sync_name),
				 errdetail("It decodes with plugin \"%s\" in this database.",
						   NameStr(slot.data.plugin)),
				 errhint("Drop that slot with pg_drop_replication_slot('%s'), then run SELECT calabi_push.resync('%s');.",
						 name, sync_name)));
	if (slot.data.confirmed_flush > checkpoint)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the replication slot \"%s\" of sync \"%s\" is ahead of the sync's checkpoint", name, sync_name),
				 errdetail("The slot confirms %X/%X but the endpoint acknowledged changes only up to %X/%X: the changes in between were consumed by something else and never sent.",
						   LSN_FORMAT_ARGS(slot.data.confirmed_flush), LSN_FORMAT_ARGS(checkpoint)),
				 errhint("Run SELECT calabi_push.resync('%s'); to read every table again, and do not consume the slot of a sync elsewhere.",
						 sync_name)));
	if (slot.active_pid != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("the replication slot \"%s\" of sync \"%s\" is in use by process %d",
						name, sync_name, slot.active_pid),
				 errhint("Stop whatever reads the slot; the sync retries on its own.")));
}

/* Whether name is one of ours, for a sync not in ids. */
static bool
is_orphan(const char *name, List *ids)
{
	char		expected[NAMEDATALEN];
	ListCell   *lc;

	if (strncmp(name, CP_SLOT_PREFIX, strlen(CP_SLOT_PREFIX)) != 0)
		return false;
	foreach(lc, ids)
	{
		cp_cdc_slot_name(lfirst(lc), expected);
		if (strcmp(expected, name) == 0)
			return false;
	}
	return true;
}

void
cp_cdc_drop_orphan_slots(void)
{
	List	   *ids;
	List	   *orphans = NIL;
	ListCell   *lc;

	if (max_replication_slots <= 0)
		return;
	ids = cp_catalog_cdc_syncs();

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (int i = 0; i < max_replication_slots; i++)
	{
		ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];

		if (s->in_use && s->data.database == MyDatabaseId &&
			SlotIsLogical(s) &&
			strcmp(NameStr(s->data.plugin), PLUGIN_NAME) == 0 &&
			is_orphan(NameStr(s->data.name), ids))
			orphans = lappend(orphans, pstrdup(NameStr(s->data.name)));
	}
	LWLockRelease(ReplicationSlotControlLock);

	foreach(lc, orphans)
	{
		const char *name = lfirst(lc);
		ReplicationSlot slot;
		int			waited = 0;

		/* the dropped sync's worker is stopping: give it time to let go */
		while (find_slot(name, &slot) && slot.active_pid != 0 &&
			   waited < RELEASE_WAIT_MS)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 100, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			waited += 100;
		}
		if (!find_slot(name, &slot))
			continue;
		if (slot.active_pid != 0)
		{
			ereport(WARNING,
					(errmsg("calabi_push cannot drop replication slot \"%s\" of a dropped sync: process %d uses it",
							name, slot.active_pid),
					 errhint("Stop that process and drop the slot with pg_drop_replication_slot('%s').", name)));
			continue;
		}
		ReplicationSlotDrop(name, true);
		ereport(LOG,
				(errmsg("calabi_push dropped replication slot \"%s\": its sync no longer exists", name)));
	}
}
