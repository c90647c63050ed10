/*-------------------------------------------------------------------------
 *
 * schedule.c
 *	  The runs of a method that reads its streams anew each run (see
 *	  method.h): once, or every schedule from the start of the previous run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "method.h"
#include "reader.h"

CpExitKind
cp_schedule_runs(CpRun *run, CpReadStream read_stream)
{
	TimestampTz started;		/* the current or last run's start */
	bool		completed;
	bool		skip_run;		/* that run is complete: wait for the next */
	bool		all_done = true;

	/*
	 * A completed run-once sync restarted by a server restart has nothing
	 * to do until start_sync or resync.  A scheduled one restarted after a
	 * complete run (server start, worker restart) has nothing to read until
	 * its next run is due: it neither marks nor logs a run it did not make.
	 * Runs are due every schedule from the start of the previous one, as
	 * the catalog records it (run_started_at), not from this process's
	 * start: a restart does not shift the schedule, and a run overdue
	 * (the server was down) starts at once.  A run cut short resumes now.
	 */
	for (int i = 0; i < run->nstreams; i++)
		if (strcmp(run->streams[i].def->phase, "done") != 0)
			all_done = false;
	if (all_done && run->sync->schedule_ms <= 0)
		return CP_EXIT_DONE;
	started = cp_catalog_last_run(run->sync, &completed);
	if (started == 0)
		started = GetCurrentTimestamp();
	skip_run = all_done && completed;
	cp_worker_set_state(run, skip_run ? CP_RUN_IDLE : CP_RUN_RUNNING, 0);

	for (;;)
	{
		if (!skip_run)
		{
			for (int i = 0; i < run->nstreams; i++)
			{
				if (strcmp(run->streams[i].def->phase, "done") == 0)
					continue;
				read_stream(run, i);
			}
			cp_delivery_flush(run, true);
			cp_catalog_run_completed(run->sync);
			ereport(LOG, (errmsg("the sync completed a run")));

			if (run->sync->schedule_ms <= 0)
				return CP_EXIT_DONE;
		}
		skip_run = false;

		/* wait for the next run */
		cp_worker_set_state(run, CP_RUN_IDLE, 0);
		cp_worker_wait_until(TimestampTzPlusMilliseconds(started, run->sync->schedule_ms));
		cp_catalog_run_begins(run->sync);
		started = GetCurrentTimestamp();
		for (int i = 0; i < run->nstreams; i++)
			run->streams[i].def->phase = "pending";
		cp_worker_set_state(run, CP_RUN_RUNNING, 0);
	}
}
