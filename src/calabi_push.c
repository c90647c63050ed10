/*-------------------------------------------------------------------------
 *
 * calabi_push.c
 *	  Library entry point: module magic and _PG_init.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "compat.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	/*
	 * Every setting of ours is named calabi_push.*; reserving the prefix
	 * turns a mistyped one in postgresql.conf into an error instead of a
	 * silently ignored placeholder.
	 */
	MarkGUCPrefixReserved("calabi_push");
}
