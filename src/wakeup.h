/*-------------------------------------------------------------------------
 *
 * wakeup.h
 *	  Waking a CDC sync's worker when a commit in its database wrote WAL,
 *	  instead of polling the WAL (see wakeup.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_WAKEUP_H
#define CALABI_PUSH_WAKEUP_H

#include "postgres.h"

#include "access/xlogdefs.h"

/* shared memory: sized and set up with the rest (shmem.c) */
extern Size cp_wakeup_shmem_size(void);
extern void cp_wakeup_shmem_startup(void);

/* _PG_init: the test-only settings; in every backend, the commit callback */
extern void cp_wakeup_define_settings(void);
extern void cp_wakeup_init_backend(void);

/* A CDC worker: be woken by commits in this database, until exit. */
extern void cp_wakeup_subscribe(void);

/* The end of the latest commit announced to this worker; 0: none yet. */
extern XLogRecPtr cp_wakeup_announced(void);

/* How long a worker with nothing to do sleeps when no commit wakes it. */
extern int	cp_wakeup_fallback_ms(void);

#endif							/* CALABI_PUSH_WAKEUP_H */
