/*-------------------------------------------------------------------------
 *
 * status.h
 *	  What sync_status is made of, and who may read it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_STATUS_H
#define CALABI_PUSH_STATUS_H

#include "postgres.h"

#include "fmgr.h"

/* error unless the caller may read the view sync_status */
extern void cp_require_status_reader(FunctionCallInfo fcinfo);

#endif							/* CALABI_PUSH_STATUS_H */
