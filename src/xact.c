/*-------------------------------------------------------------------------
 *
 * xact.c
 *	  A transaction of a background worker's own (see xact.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"

#include "xact.h"

MemoryContext
cp_xact_start(void)
{
	MemoryContext caller = CurrentMemoryContext;

	StartTransactionCommand();
	return caller;
}

/*
 * The commit is flushed before this returns, whatever synchronous_commit
 * says (off for the server, the database or the role of the worker): what
 * a worker commits, it acts on at once, and a crash must not take the
 * commit back while the action stays.  A sync's checkpoint is followed by
 * the slot's confirmation, which saves the slot to disk: with the commit
 * lost the slot came back ahead of the checkpoint, and the sync stopped
 * for good (issue 14, test/t/097_cdc_kill9_workload.pl).  Batch numbers
 * are reserved before they are sent: with the reservation lost they would
 * be sent again, for other rows, and refused by the endpoint.  A commit
 * that wrote nothing leaves XactLastCommitEnd at an earlier commit, already
 * flushed: nothing to do then.
 */
void
cp_xact_commit(MemoryContext caller)
{
	CommitTransactionCommand();
	if (!RecoveryInProgress() && XactLastCommitEnd != InvalidXLogRecPtr)
		XLogFlush(XactLastCommitEnd);
	MemoryContextSwitchTo(caller);
}
