/*-------------------------------------------------------------------------
 *
 * xact.h
 *	  A transaction of a background worker's own, outside any statement.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_XACT_H
#define CALABI_PUSH_XACT_H

#include "postgres.h"

#include "utils/palloc.h"

/*
 * Start a transaction; returns the caller's memory context, to be given to
 * cp_xact_commit.  Committing leaves CurrentMemoryContext at
 * TopMemoryContext: cp_xact_commit gives the caller its own back, else
 * whatever it allocates next lives as long as the process.  An error in
 * between needs nothing of ours: the worker's error boundary aborts.
 */
extern MemoryContext cp_xact_start(void);
extern void cp_xact_commit(MemoryContext caller);

#endif							/* CALABI_PUSH_XACT_H */
