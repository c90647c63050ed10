/*-------------------------------------------------------------------------
 *
 * home.h
 *	  Where a sync belongs: copies of it (a restored dump, a promoted clone)
 *	  do not run under its identity (see home.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_HOME_H
#define CALABI_PUSH_HOME_H

/*
 * Probe, before any sync of the database starts: settle a promotion (a
 * failover binds the syncs to the new timeline; a clone beside a live
 * primary marks them copies), then stop the enabled syncs that are copies.
 * No transaction open.
 */
extern void cp_home_check_syncs(void);

#endif							/* CALABI_PUSH_HOME_H */
