/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The cluster-wide launcher of sync workers, and the commit-time
 *	  notifications the management functions send it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_LAUNCHER_H
#define CALABI_PUSH_LAUNCHER_H

extern void cp_register_launcher(void);
extern void cp_launcher_init_backend_hooks(void);

#endif							/* CALABI_PUSH_LAUNCHER_H */
