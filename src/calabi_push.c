/*-------------------------------------------------------------------------
 *
 * calabi_push.c
 *	  Library entry point: module magic, settings, and what must be set up
 *	  at server start (shared memory, the launcher) or in every backend
 *	  (the commit-time notifications of the management functions, and the
 *	  wake-up of CDC workers).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "compat.h"
#include "changed_wal.h"
#include "compressor.h"
#include "egress.h"
#include "launcher.h"
#include "method.h"
#include "shmem.h"
#include "test_point.h"
#include "utility_hook.h"
#include "wakeup.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	/*
	 * A server-start setting can only be defined while the postmaster loads
	 * us; a backend loading the library later (preview() without
	 * shared_preload_libraries) must not try.
	 */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("calabi_push.max_syncs",
								"Maximum number of syncs that can run at once in the cluster.",
								"Each running sync uses a background worker (see max_worker_processes).",
								&cp_max_syncs,
								64, 1, 10000,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);

	/*
	 * Where syncs may connect: reloadable, so defined in every process that
	 * loads us (the management functions check destinations against it).
	 */
	cp_egress_define_setting();
	/* which library gzips batches: reloadable, read when a run starts */
	cp_compressor_define_setting();
	/* how often a caught-up CDC sync may send: reloadable */
	cp_cdc_define_settings();
	/* how much WAL an incremental run may read for its pages: reloadable */
	cp_changed_wal_define_setting();

	/* for the TAP tests only: a crash at a named point (test_point.c) */
	cp_test_point_define_setting();
	cp_wakeup_define_settings();

	/*
	 * Every setting of ours is named calabi_push.*; reserving the prefix
	 * turns a mistyped one in postgresql.conf into an error instead of a
	 * silently ignored placeholder.
	 */
	MarkGUCPrefixReserved("calabi_push");

	/*
	 * preview() works in any backend that loads the library; syncs need
	 * shared memory and the launcher, which only shared_preload_libraries
	 * can give (the management functions say so when it is missing).
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		cp_shmem_init();
		cp_register_launcher();
		/* commits wake the CDC workers of their database (wakeup.c) */
		cp_wakeup_init_backend();
	}
	cp_launcher_init_backend_hooks();
	cp_utility_hook_init();
}

/*
 * calabi_push.version(): the library's version and the compressor it uses,
 * "calabi_push 0.1.0, gzip by isa-l 2.30": what a DBA (or a bug report)
 * needs to know of the build that runs.
 */
PG_FUNCTION_INFO_V1(calabi_push_version);
Datum
calabi_push_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("calabi_push %s, gzip by %s",
											  CALABI_PUSH_VERSION,
											  cp_compressor_name())));
}
