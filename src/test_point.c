/*-------------------------------------------------------------------------
 *
 * test_point.c
 *	  calabi_push.test_stop_at: a test-only setting naming a point of a
 *	  sync worker's run at which the worker crashes, so that the TAP tests
 *	  can put a crash exactly between two steps of the delivery protocol
 *	  instead of hoping a kill -9 lands there.
 *
 * The points (each a one-line call where the step happens):
 *
 *	before_checkpoint	the endpoint answered 2xx, nothing is committed yet
 *	after_checkpoint	the acknowledged position is committed to the sync's
 *						row, the slot is not yet confirmed
 *	after_confirm		the slot is confirmed too
 *
 * How the worker stops: SIGKILL to itself.  That is what a real crash is
 * (the OOM killer, kill -9; a segfault differs only by the signal): no
 * transaction is aborted, no exit callback runs, the slot is not released
 * and nothing in shared memory is cleaned up.  The postmaster sees a child
 * that died by a signal and, as for any crashed backend, stops every
 * process; shared memory, and with it the slot's confirmed position not
 * yet saved to disk, is lost, and the server recovers from the WAL
 * (restart_after_crash) or stays down.  abort() would do the same but may
 * leave a core file; proc_exit() or _exit(1) would not be a crash at all
 * for a background worker (the slot would be released cleanly, its
 * position kept in shared memory).
 *
 * Superuser only, hidden from SHOW ALL and postgresql.conf.sample, and
 * checked against the list of points: a misspelt point is an error, not a
 * test that silently never crashes.  Never set it on a server that
 * matters: the worker crashes the whole cluster at the point, each time it
 * reaches it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <unistd.h>

#include "miscadmin.h"
#include "utils/guc.h"

#include "test_point.h"

static char *test_stop_at = NULL;

static const char *const points[] = {
	"before_checkpoint",
	"after_checkpoint",
	"after_confirm",
};

static bool
check_test_stop_at(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || **newval == '\0')
		return true;
	for (int i = 0; i < lengthof(points); i++)
		if (strcmp(*newval, points[i]) == 0)
			return true;
	GUC_check_errdetail("\"%s\" is not a test point of calabi_push.", *newval);
	GUC_check_errhint("Use one of before_checkpoint, after_checkpoint, after_confirm, or an empty string.");
	return false;
}

void
cp_test_point_define_setting(void)
{
	DefineCustomStringVariable("calabi_push.test_stop_at",
							   "For tests only: crash a sync worker at this point of its run.",
							   "Empty (the default) disables it. The worker kills itself with SIGKILL, which crashes and restarts the whole cluster.",
							   &test_stop_at,
							   "",
							   PGC_SUSET,
							   GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL | GUC_SUPERUSER_ONLY,
							   check_test_stop_at, NULL, NULL);
}

void
cp_test_point(const char *name)
{
	if (likely(test_stop_at == NULL || test_stop_at[0] == '\0') ||
		strcmp(test_stop_at, name) != 0)
		return;

	/* the log must say it was on purpose: flushed before we die */
	ereport(LOG,
			(errmsg("calabi_push test point \"%s\" reached: process %d crashes on purpose (calabi_push.test_stop_at)",
					name, MyProcPid)));
	(void) kill(MyProcPid, SIGKILL);
	/* SIGKILL cannot be caught; should it not be delivered at once */
	for (;;)
		pause();
}
