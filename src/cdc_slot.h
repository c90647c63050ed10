/*-------------------------------------------------------------------------
 *
 * cdc_slot.h
 *	  The logical replication slot a CDC sync owns: its name, its creation,
 *	  its validation at every start, and the removal of slots whose sync is
 *	  gone.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_CDC_SLOT_H
#define CALABI_PUSH_CDC_SLOT_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "utils/uuid.h"

/* "calabi_push_" and the sync's uuid in hex: whose it is, at a glance */
#define CP_SLOT_PREFIX "calabi_push_"
extern void cp_cdc_slot_name(const pg_uuid_t *sync_id, char *name);

/*
 * Refuse, with a hint, when this server cannot decode for a sync: wal_level,
 * and the output_plugin_libraries allow-list of the 2026 minor releases.
 */
extern void cp_cdc_check_server(void);

/*
 * On a hot standby, warn when the primary may remove catalog rows the
 * sync's slot still needs (hot_standby_feedback, primary_slot_name): the
 * slot would be invalidated.
 */
extern void cp_cdc_check_standby(const char *sync_name);

/*
 * Create the slot (dropping this sync's own leftover of the same name first,
 * never a slot of another database or plugin) and return the position from
 * which its changes are complete; failover: a failover slot (PG17, the
 * sync's option).  No transaction open.
 */
extern XLogRecPtr cp_cdc_slot_create(const char *name, const char *sync_name,
									 bool failover);

/*
 * Check that the slot can continue the sync from checkpoint (the position
 * the sync's catalog says was acknowledged): it exists, belongs to this
 * database and plugin, was not invalidated, and has not moved past
 * checkpoint.  Errors name the cause and the way out.
 */
extern void cp_cdc_slot_validate(const char *name, const char *sync_name,
								 XLogRecPtr checkpoint);

/* Probe: drop this database's calabi_push slots whose sync is gone. */
extern void cp_cdc_drop_orphan_slots(void);

#endif							/* CALABI_PUSH_CDC_SLOT_H */
