/*-------------------------------------------------------------------------
 *
 * thread.c
 *	  Helper threads of a backend: started with every signal blocked (see
 *	  thread.h for why).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "thread.h"

void
cp_block_signals(sigset_t *old)
{
	sigset_t	all;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, old);
}

void
cp_restore_signals(const sigset_t *old)
{
	pthread_sigmask(SIG_SETMASK, old, NULL);
}

int
cp_thread_start(pthread_t *thread, void *(*start) (void *), void *arg)
{
	sigset_t	old;
	int			rc;

	/* the thread inherits this mask: every signal stays with the backend */
	cp_block_signals(&old);
	rc = pthread_create(thread, NULL, start, arg);
	cp_restore_signals(&old);
	return rc;
}
