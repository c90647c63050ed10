/*-------------------------------------------------------------------------
 *
 * thread.h
 *	  Helper threads of a backend: started with every signal blocked.
 *
 * PostgreSQL's signal handlers assume they run on the backend's own thread
 * (they set its latch, flags it checks, errno it saved).  A thread inherits
 * its creator's signal mask, so one started with every signal blocked
 * leaves them all to the backend.  The same holds for threads that libraries
 * start on our behalf (curl's threaded resolver): calls that may start one
 * run between cp_block_signals and cp_restore_signals.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_THREAD_H
#define CALABI_PUSH_THREAD_H

#include <pthread.h>
#include <signal.h>

/* Block every signal of this thread; the mask it had goes into *old. */
extern void cp_block_signals(sigset_t *old);
/* Put back the mask cp_block_signals saved. */
extern void cp_restore_signals(const sigset_t *old);

/*
 * pthread_create(thread, NULL, start, arg) with every signal blocked in the
 * new thread.  Returns pthread_create's result (0, or an errno value).
 */
extern int	cp_thread_start(pthread_t *thread, void *(*start) (void *),
							void *arg);

#endif							/* CALABI_PUSH_THREAD_H */
