/*-------------------------------------------------------------------------
 *
 * compressor.c
 *	  gzip in a helper thread (see compressor.h).
 *
 * Why a thread in a backend: compression is half of a full refresh's CPU
 * (zlib level 1, its fastest), and batches must go out strictly one after
 * the other, so without a second core the worker reads, then compresses,
 * then waits.  The thread is kept to what is safe beside PostgreSQL's
 * single-threaded code: zlib and malloc on buffers the main thread does not
 * touch meanwhile, every signal blocked so they all reach the main thread,
 * and a mutex and condition variable as the only shared state.  It is never
 * joined: it sleeps on its condition variable until the process exits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <pthread.h>
#include <signal.h>
#include <zlib.h>

#include "compressor.h"

struct CpCompressor
{
	pthread_mutex_t mutex;
	pthread_cond_t cond;
	pthread_t	thread;
	z_stream	zs;
	/* the job; protected by mutex */
	const char *data;
	size_t		len;
	bool		pending;		/* a job was handed over */
	bool		done;			/* the thread finished it */
	int			zerror;			/* zlib's error, Z_OK when none */
	/* output, malloc'd, grown by the thread (or the main thread at finish) */
	unsigned char *out;
	size_t		outsize;
};

#define GZIP_WINDOW_BITS (15 + 16)

/* Run deflate on the input until consumed, growing out with malloc. */
static int
deflate_all(z_stream *zs, unsigned char **out, size_t *outsize, int flush)
{
	for (;;)
	{
		int			rc;

		if (zs->avail_out == 0)
		{
			size_t		used = *outsize;
			size_t		grown = Max(used * 2, 64 * 1024);
			unsigned char *bigger = realloc(*out, grown);

			if (bigger == NULL)
				return Z_MEM_ERROR;
			*out = bigger;
			*outsize = grown;
			zs->next_out = bigger + used;
			zs->avail_out = grown - used;
		}
		rc = deflate(zs, flush);
		if (rc == Z_STREAM_END)
			return Z_OK;
		if (rc != Z_OK && rc != Z_BUF_ERROR)
			return rc;
		if (zs->avail_in == 0 && zs->avail_out > 0 && flush == Z_NO_FLUSH)
			return Z_OK;
	}
}

static void *
compressor_main(void *arg)
{
	CpCompressor *c = arg;

	pthread_mutex_lock(&c->mutex);
	for (;;)
	{
		int			rc;

		while (!c->pending)
			pthread_cond_wait(&c->cond, &c->mutex);
		c->pending = false;
		pthread_mutex_unlock(&c->mutex);

		c->zs.next_in = (Bytef *) c->data;
		c->zs.avail_in = c->len;
		rc = deflate_all(&c->zs, &c->out, &c->outsize, Z_NO_FLUSH);

		pthread_mutex_lock(&c->mutex);
		c->zerror = rc;
		c->done = true;
		pthread_cond_broadcast(&c->cond);
	}
	return NULL;
}

/* Level 1: zlib's fastest, a sixth of the JSON's size. */
static bool
start_member(z_stream *zs, unsigned char *out, size_t outsize)
{
	if (deflateInit2(zs, Z_BEST_SPEED, Z_DEFLATED, GZIP_WINDOW_BITS, 8,
					 Z_DEFAULT_STRATEGY) != Z_OK)
		return false;
	zs->next_out = out;
	zs->avail_out = outsize;
	return true;
}

CpCompressor *
cp_compressor_create(void)
{
	CpCompressor *c = calloc(1, sizeof(CpCompressor));
	sigset_t	all,
				old;
	int			rc;

	if (c == NULL)
		return NULL;
	pthread_mutex_init(&c->mutex, NULL);
	pthread_cond_init(&c->cond, NULL);

	/* the thread inherits this mask: every signal stays with the backend */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&c->thread, NULL, compressor_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
	{
		ereport(LOG,
				(errmsg("calabi_push could not start its compression thread (%s); compressing in the worker",
						strerror(rc))));
		free(c);
		return NULL;
	}
	return c;
}

void
cp_compressor_begin(CpCompressor *c, const char *data, size_t len)
{
	size_t		want = compressBound(len) + 1024;

	/* fresh member; the output buffer is reused from batch to batch */
	if (c->outsize < want)
	{
		unsigned char *bigger = realloc(c->out, want);

		if (bigger == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory for a batch of %zu bytes", len)));
		c->out = bigger;
		c->outsize = want;
	}
	if (!start_member(&c->zs, c->out, c->outsize))
		elog(ERROR, "could not start gzip compression");

	pthread_mutex_lock(&c->mutex);
	c->data = data;
	c->len = len;
	c->done = false;
	c->pending = true;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->mutex);
}

void
cp_compressor_finish(CpCompressor *c, const char *tail, size_t tail_len,
					 StringInfo out)
{
	int			rc;

	pthread_mutex_lock(&c->mutex);
	while (!c->done)
		pthread_cond_wait(&c->cond, &c->mutex);
	rc = c->zerror;
	pthread_mutex_unlock(&c->mutex);

	if (rc == Z_OK)
	{
		c->zs.next_in = (Bytef *) tail;
		c->zs.avail_in = tail_len;
		rc = deflate_all(&c->zs, &c->out, &c->outsize, Z_FINISH);
	}
	if (rc != Z_OK)
	{
		deflateEnd(&c->zs);
		ereport(ERROR,
				(errcode(rc == Z_MEM_ERROR ? ERRCODE_OUT_OF_MEMORY : ERRCODE_INTERNAL_ERROR),
				 errmsg("gzip compression of a batch failed (zlib error %d)", rc)));
	}
	resetStringInfo(out);
	appendBinaryStringInfo(out, (const char *) c->out, c->zs.total_out);
	deflateEnd(&c->zs);
}

void
cp_gzip(const char *data, size_t len, const char *tail, size_t tail_len,
		StringInfo out)
{
	z_stream	zs;
	unsigned char *buf = NULL;
	size_t		bufsize = 0;
	int			rc;

	memset(&zs, 0, sizeof(zs));
	if (!start_member(&zs, NULL, 0))
		elog(ERROR, "could not start gzip compression");
	zs.next_in = (Bytef *) data;
	zs.avail_in = len;
	rc = deflate_all(&zs, &buf, &bufsize, Z_NO_FLUSH);
	if (rc == Z_OK)
	{
		zs.next_in = (Bytef *) tail;
		zs.avail_in = tail_len;
		rc = deflate_all(&zs, &buf, &bufsize, Z_FINISH);
	}
	if (rc == Z_OK)
	{
		resetStringInfo(out);
		appendBinaryStringInfo(out, (const char *) buf, zs.total_out);
	}
	deflateEnd(&zs);
	free(buf);
	if (rc != Z_OK)
		ereport(ERROR,
				(errcode(rc == Z_MEM_ERROR ? ERRCODE_OUT_OF_MEMORY : ERRCODE_INTERNAL_ERROR),
				 errmsg("gzip compression of a batch failed (zlib error %d)", rc)));
}
