/*-------------------------------------------------------------------------
 *
 * utility_hook.h
 *	  The ProcessUtility hook: database commands that need the database's
 *	  sync workers gone; DROP ROLE of a role that syncs read as.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_UTILITY_HOOK_H
#define CALABI_PUSH_UTILITY_HOOK_H

/* From _PG_init, in every backend. */
extern void cp_utility_hook_init(void);

#endif							/* CALABI_PUSH_UTILITY_HOOK_H */
