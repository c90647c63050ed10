/*-------------------------------------------------------------------------
 *
 * xact.c
 *	  A transaction of a background worker's own (see xact.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"

#include "xact.h"

MemoryContext
cp_xact_start(void)
{
	MemoryContext caller = CurrentMemoryContext;

	StartTransactionCommand();
	return caller;
}

void
cp_xact_commit(MemoryContext caller)
{
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
}
