/*-------------------------------------------------------------------------
 *
 * http_sender.c
 *	  The sending thread.
 *
 * A started POST (cp_http_post_start) is driven to its end by a helper
 * thread while the worker reads on: encrypting and writing a batch of
 * several megabytes, and waiting for the endpoint to read it, would
 * otherwise take the worker's core for a fifth of a CDC sync's time.  As
 * with the compression thread, the thread runs libcurl (and the TLS
 * library under it) and nothing of PostgreSQL's: no palloc, no elog, every
 * signal blocked.  The transfer, its multi handle and everything curl reads
 * (the body, the header list, the response buffers) belong to the thread
 * from the hand-off until the worker takes the transfer back, finished or
 * paused; the worker touches none of it meanwhile.
 *
 * The worker takes it back before anything that could free what curl
 * reads: before an interrupt is serviced (which may longjmp), before a
 * transfer is detached (every new call, the client's destruction), and at
 * process exit (before exit() runs the TLS library's cleanup).  A paused
 * transfer is simply driven on by the worker itself.  One thread serves
 * the process, whichever client hands over; it is never joined.  When it
 * cannot be started, the worker drives everything as before.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "http_sender.h"
#include "http_transport.h"
#include "thread.h"

typedef enum CpSenderState
{
	SENDER_IDLE,				/* nothing handed over */
	SENDER_DRIVING,				/* the thread owns the transfer */
	SENDER_FINISHED,			/* over: rc is its result */
	SENDER_PAUSED				/* given back unfinished, on request */
} CpSenderState;

static struct
{
	bool		tried;			/* a thread was started, or could not be */
	bool		running;
	pthread_mutex_t mutex;
	pthread_cond_t cond;
	int			wake_pipe[2];	/* worker -> thread: see pause_requested */
	int			done_pipe[2];	/* thread -> worker: no longer DRIVING */
	/* protected by mutex */
	CpSenderState state;
	bool		pause_requested;
	CpHttpClient *client;		/* whose transfer, unless IDLE */
	CURLcode	rc;
} sender = {.wake_pipe = {-1, -1},.done_pipe = {-1, -1}};

static void
drain_pipe(int fd)
{
	char		buf[64];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

/* Wake whoever polls fd; a full pipe already holds a wake-up. */
static void
poke_pipe(int fd)
{
	if (write(fd, "x", 1) < 0)
		return;					/* EAGAIN: full, so a wake-up is pending */
}

static bool
sender_pause_requested(void)
{
	bool		requested;

	pthread_mutex_lock(&sender.mutex);
	requested = sender.pause_requested;
	pthread_mutex_unlock(&sender.mutex);
	return requested;
}

/*
 * The thread's cp_http_transfer_wait: poll() on curl's sockets and the wake
 * pipe.
 * Returns true when the transfer is over (*rc), false when asked to pause.
 */
static bool
sender_drive(CpHttpClient *client, CURLcode *rc)
{
	for (;;)
	{
		struct pollfd fds[CP_HTTP_MAX_SOCKETS + 1];
		CpReadySocket ready[CP_HTTP_MAX_SOCKETS];
		int			nfds = 0;
		int			nready = 0;
		int			n;

		if (sender_pause_requested())
			return false;

		fds[nfds].fd = sender.wake_pipe[0];
		fds[nfds++].events = POLLIN;
		for (int i = 0; i < client->nsockets; i++)
		{
			fds[nfds].fd = client->sockets[i].fd;
			fds[nfds].events =
				((client->sockets[i].events & WL_SOCKET_READABLE) ? POLLIN : 0) |
				((client->sockets[i].events & WL_SOCKET_WRITEABLE) ? POLLOUT : 0);
			nfds++;
		}
		n = poll(fds, nfds, (int) cp_http_wait_timeout_ms(client));
		if (n < 0)
			n = 0;				/* EINTR cannot happen: signals are blocked */
		if (fds[0].revents != 0)
		{
			drain_pipe(sender.wake_pipe[0]);
			n--;
		}
		for (int i = 1; i < nfds; i++)
		{
			/* an error or hangup: let curl try what it asked for, and fail */
			if (fds[i].revents & (POLLERR | POLLHUP | POLLNVAL))
				fds[i].revents |= fds[i].events;
			cp_http_note_ready(ready, &nready, fds[i].fd,
							   fds[i].revents & POLLIN,
							   fds[i].revents & POLLOUT);
		}
		if (cp_http_drive_round(client, client->easy, ready, nready,
								n <= 0 && nready == 0, rc, client->errbuf))
			return true;
	}
}

static void *
sender_main(void *arg)
{
#ifdef __linux__
	/*
	 * Yield to the worker (and to the server's backends) when cores are
	 * short: the worker is what the sync's pace depends on, and it waits
	 * for the thread only when a second batch must go.  Linux gives each
	 * thread its own nice value.
	 */
	(void) setpriority(PRIO_PROCESS, (id_t) syscall(SYS_gettid), 5);
#endif
	pthread_mutex_lock(&sender.mutex);
	for (;;)
	{
		CpHttpClient *client;
		CURLcode	rc = CURLE_OK;
		bool		finished;

		while (sender.state != SENDER_DRIVING)
			pthread_cond_wait(&sender.cond, &sender.mutex);
		client = sender.client;
		pthread_mutex_unlock(&sender.mutex);

		finished = sender_drive(client, &rc);

		pthread_mutex_lock(&sender.mutex);
		sender.rc = rc;
		sender.state = finished ? SENDER_FINISHED : SENDER_PAUSED;
		sender.pause_requested = false;
		pthread_cond_broadcast(&sender.cond);
		poke_pipe(sender.done_pipe[1]);
	}
	return NULL;
}

/*
 * Take the transfer back from the thread: at once if it is over, else
 * after asking it to pause (it does between two curl calls, which do not
 * block).  Returns true when the transfer is over, *rc its result.  Safe
 * anywhere, an exit callback included: pthread calls only.
 */
bool
cp_http_sender_take_back(CURLcode *rc)
{
	bool		finished;

	pthread_mutex_lock(&sender.mutex);
	if (sender.state == SENDER_DRIVING)
	{
		sender.pause_requested = true;
		poke_pipe(sender.wake_pipe[1]);
		while (sender.state == SENDER_DRIVING)
			pthread_cond_wait(&sender.cond, &sender.mutex);
	}
	finished = sender.state == SENDER_FINISHED;
	if (finished)
		*rc = sender.rc;
	sender.state = SENDER_IDLE;
	sender.client = NULL;
	pthread_mutex_unlock(&sender.mutex);
	if (sender.running)
		drain_pipe(sender.done_pipe[0]);
	return finished;
}

bool
cp_http_sender_has(CpHttpClient *client)
{
	return sender.running && sender.client == client;
}

static void
sender_at_exit(int code, Datum arg)
{
	CURLcode	rc;

	if (sender.client != NULL)
		(void) cp_http_sender_take_back(&rc);
}

static void
close_pipe(int fds[2])
{
	close(fds[0]);
	close(fds[1]);
	fds[0] = fds[1] = -1;
}

static bool
make_nonblocking_pipe(int fds[2])
{
	if (pipe(fds) != 0)
		return false;
	if (fcntl(fds[0], F_SETFL, O_NONBLOCK) != 0 ||
		fcntl(fds[1], F_SETFL, O_NONBLOCK) != 0)
	{
		int			save_errno = errno;

		close_pipe(fds);
		errno = save_errno;
		return false;
	}
	return true;
}

/* Start the thread once per process; false when there is none. */
static bool
sender_start(void)
{
	pthread_t	thread;
	int			rc;

	if (sender.tried)
		return sender.running;
	sender.tried = true;

	if (!make_nonblocking_pipe(sender.wake_pipe))
	{
		ereport(LOG,
				(errmsg("calabi_push could not make a pipe for its sending thread: %m; sending from the worker")));
		return false;
	}
	if (!make_nonblocking_pipe(sender.done_pipe))
	{
		ereport(LOG,
				(errmsg("calabi_push could not make a pipe for its sending thread: %m; sending from the worker")));
		close_pipe(sender.wake_pipe);
		return false;
	}
	pthread_mutex_init(&sender.mutex, NULL);
	pthread_cond_init(&sender.cond, NULL);

	rc = cp_thread_start(&thread, sender_main, NULL);
	if (rc != 0)
	{
		ereport(LOG,
				(errmsg("calabi_push could not start its sending thread (%s); sending from the worker",
						strerror(rc))));
		close_pipe(sender.wake_pipe);
		close_pipe(sender.done_pipe);
		return false;
	}
	/* early among the exit callbacks: before anything else is let go */
	before_shmem_exit(sender_at_exit, (Datum) 0);
	sender.running = true;
	return true;
}

/* Hand the attached transfer of the ingest handle to the thread. */
bool
cp_http_sender_hand_over(CpHttpClient *client)
{
	/* one transfer at a time: while another client's is there, send here */
	if (!sender_start() || sender.client != NULL)
		return false;
	pthread_mutex_lock(&sender.mutex);
	sender.client = client;
	sender.pause_requested = false;
	sender.state = SENDER_DRIVING;
	pthread_cond_broadcast(&sender.cond);
	pthread_mutex_unlock(&sender.mutex);
	return true;
}

/*
 * Wait, responsive to interrupts, until the thread is done with client's
 * transfer.  Returns true when it is over (*rc); false when it was taken
 * back unfinished (an interrupt that did not end the call), for the worker
 * to drive on.
 */
bool
cp_http_sender_await(CpHttpClient *client, CURLcode *rc)
{
	if (client->sender_wes == NULL || client->sender_wes_latch != MyLatch)
	{
		if (client->sender_wes != NULL)
			FreeWaitEventSet(client->sender_wes);
		client->sender_wes = cp_create_wait_event_set(client->cxt, 3);
		AddWaitEventToSet(client->sender_wes, WL_LATCH_SET, PGINVALID_SOCKET,
						  MyLatch, NULL);
		if (IsUnderPostmaster)
			AddWaitEventToSet(client->sender_wes, WL_EXIT_ON_PM_DEATH,
							  PGINVALID_SOCKET, NULL, NULL);
		AddWaitEventToSet(client->sender_wes, WL_SOCKET_READABLE,
						  sender.done_pipe[0], NULL, NULL);
		client->sender_wes_latch = MyLatch;
	}

	for (;;)
	{
		WaitEvent	events[3];
		int			nevents;
		bool		over;
		long		limit = cp_http_caller_wait_limit();

		pthread_mutex_lock(&sender.mutex);
		over = sender.state != SENDER_DRIVING;
		pthread_mutex_unlock(&sender.mutex);
		/* given up: the worker detaches it (cp_http_transfer_wait) */
		if (over || limit == 0)
			return cp_http_sender_take_back(rc);

		nevents = WaitEventSetWait(client->sender_wes,
								   limit > 0 ? Min(limit, CP_HTTP_MAX_WAIT_MS) :
								   CP_HTTP_MAX_WAIT_MS,
								   events, lengthof(events), PG_WAIT_EXTENSION);
		for (int i = 0; i < nevents; i++)
			if (events[i].events & WL_LATCH_SET)
				ResetLatch(MyLatch);
		if (InterruptPending)
		{
			/* it may longjmp: curl must be ours first */
			bool		finished = cp_http_sender_take_back(rc);

			CHECK_FOR_INTERRUPTS();
			return finished;
		}
	}
}
