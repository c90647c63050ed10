/*-------------------------------------------------------------------------
 *
 * compressor.c
 *	  gzip in a helper thread (see compressor.h).
 *
 * Why a thread in a backend: compression is half of a sync's CPU (zlib
 * level 1, its fastest), and batches must go out strictly one after the
 * other, so without a second core the worker reads, then compresses, then
 * waits.  The thread is kept to what is safe beside PostgreSQL's
 * single-threaded code: zlib and malloc on buffers the main thread does not
 * touch meanwhile, every signal blocked so they all reach the main thread,
 * and a mutex and condition variable as the only shared state.  It is never
 * joined: it sleeps on its condition variable until the process exits.
 *
 * A batch is compressed in pieces, as pigz does: each piece is a raw
 * deflate stream of its own ending on a byte boundary (a sync flush), so
 * that the pieces laid end to end, between one gzip header and one trailer
 * (their CRCs combined), are a single ordinary gzip member.  The thread
 * takes pieces from the front while the worker reads the next batch; when
 * the worker needs the body and pieces are left, it takes some too rather
 * than wait.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <pthread.h>
#include <zlib.h>

#include "compressor.h"
#include "thread.h"

/* small enough to share the work at the end, large enough to lose no ratio */
#define PIECE_BYTES (256 * 1024)
#define GZIP_WINDOW_BITS (15 + 16)
#define RAW_WINDOW_BITS (-15)

typedef struct Piece
{
	unsigned char *out;			/* malloc'd, kept from batch to batch */
	size_t		outsize;
	size_t		outlen;
	uLong		crc;
	int			zerror;
} Piece;

struct CpCompressor
{
	pthread_mutex_t mutex;
	pthread_cond_t cond;
	pthread_t	thread;
	z_stream	thread_zs;		/* the thread's */
	z_stream	main_zs;		/* the worker's, for the pieces it takes */
	/* the job; protected by mutex */
	const char *data;
	size_t		len;
	int			npieces;
	int			next;			/* next piece to take */
	int			done;			/* pieces finished */
	bool		pending;		/* pieces are left for the thread */
	Piece	   *pieces;
	int			maxpieces;
};

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
		if (zs->avail_in == 0 && zs->avail_out > 0 && flush != Z_FINISH)
			return Z_OK;
	}
}

/*
 * Compress len bytes at data as a raw deflate piece into p, ending with a
 * sync flush (more follows) or finishing the stream (last).  Thread-safe:
 * zlib and malloc only.
 */
static void
compress_piece(z_stream *zs, Piece *p, const char *data, size_t len, bool last)
{
	int			rc = deflateReset(zs);

	p->crc = crc32(0L, (const Bytef *) data, len);
	p->outlen = 0;
	if (rc == Z_OK)
	{
		zs->next_in = (Bytef *) data;
		zs->avail_in = len;
		zs->next_out = p->out;
		zs->avail_out = p->outsize;
		rc = deflate_all(zs, &p->out, &p->outsize, last ? Z_FINISH : Z_SYNC_FLUSH);
		p->outlen = zs->total_out;
	}
	p->zerror = rc;
}

/* Take the next piece of the job, if any (mutex held by the caller). */
static int
take_piece(CpCompressor *c)
{
	return c->next < c->npieces ? c->next++ : -1;
}

static void
compress_taken(CpCompressor *c, z_stream *zs, int i)
{
	size_t		off = (size_t) i * PIECE_BYTES;

	compress_piece(zs, &c->pieces[i], c->data + off, Min(PIECE_BYTES, c->len - off),
				   false);
}

static void *
compressor_main(void *arg)
{
	CpCompressor *c = arg;

	pthread_mutex_lock(&c->mutex);
	for (;;)
	{
		int			i;

		while (!c->pending)
			pthread_cond_wait(&c->cond, &c->mutex);
		while ((i = take_piece(c)) >= 0)
		{
			pthread_mutex_unlock(&c->mutex);
			compress_taken(c, &c->thread_zs, i);
			pthread_mutex_lock(&c->mutex);
			c->done++;
			pthread_cond_broadcast(&c->cond);
		}
		c->pending = false;
	}
	return NULL;
}

/* Level 1: zlib's fastest, a sixth of the JSON's size or better. */
static bool
init_stream(z_stream *zs, int window_bits)
{
	memset(zs, 0, sizeof(*zs));
	return deflateInit2(zs, Z_BEST_SPEED, Z_DEFLATED, window_bits, 8,
						Z_DEFAULT_STRATEGY) == Z_OK;
}

CpCompressor *
cp_compressor_create(void)
{
	CpCompressor *c = calloc(1, sizeof(CpCompressor));
	int			rc;

	if (c == NULL)
		return NULL;
	if (!init_stream(&c->thread_zs, RAW_WINDOW_BITS) ||
		!init_stream(&c->main_zs, RAW_WINDOW_BITS))
	{
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->mutex, NULL);
	pthread_cond_init(&c->cond, NULL);

	rc = cp_thread_start(&c->thread, compressor_main, c);
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
	int			npieces = (int) ((len + PIECE_BYTES - 1) / PIECE_BYTES);

	/* one more slot: the tail, compressed at finish */
	if (npieces + 1 > c->maxpieces)
	{
		int			grown = Max(npieces + 1, 2 * c->maxpieces);
		Piece	   *bigger = realloc(c->pieces, sizeof(Piece) * grown);

		if (bigger == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory for a batch of %zu bytes", len)));
		memset(bigger + c->maxpieces, 0, sizeof(Piece) * (grown - c->maxpieces));
		c->pieces = bigger;
		c->maxpieces = grown;
	}

	pthread_mutex_lock(&c->mutex);
	c->data = data;
	c->len = len;
	c->npieces = npieces;
	c->next = 0;
	c->done = 0;
	c->pending = true;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->mutex);
}

static void
append_le32(StringInfo out, uint32 v)
{
	unsigned char b[4] = {v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF, (v >> 24) & 0xFF};

	appendBinaryStringInfo(out, (const char *) b, 4);
}

void
cp_compressor_finish(CpCompressor *c, const char *tail, size_t tail_len,
					 StringInfo out)
{
	/* gzip header: deflate, no name, no time, unix */
	static const unsigned char header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
	Piece	   *last = &c->pieces[c->npieces];
	uLong		crc;
	int			i;

	/* rather than wait, take what the thread has not begun */
	pthread_mutex_lock(&c->mutex);
	while ((i = take_piece(c)) >= 0)
	{
		pthread_mutex_unlock(&c->mutex);
		compress_taken(c, &c->main_zs, i);
		pthread_mutex_lock(&c->mutex);
		c->done++;
	}
	while (c->done < c->npieces)
		pthread_cond_wait(&c->cond, &c->mutex);
	pthread_mutex_unlock(&c->mutex);

	compress_piece(&c->main_zs, last, tail, tail_len, true);

	resetStringInfo(out);
	appendBinaryStringInfo(out, (const char *) header, sizeof(header));
	crc = crc32(0L, Z_NULL, 0);
	for (i = 0; i <= c->npieces; i++)
	{
		Piece	   *p = &c->pieces[i];
		size_t		len = i < c->npieces ?
			Min(PIECE_BYTES, c->len - (size_t) i * PIECE_BYTES) : tail_len;

		if (p->zerror != Z_OK)
			ereport(ERROR,
					(errcode(p->zerror == Z_MEM_ERROR ? ERRCODE_OUT_OF_MEMORY : ERRCODE_INTERNAL_ERROR),
					 errmsg("gzip compression of a batch failed (zlib error %d)", p->zerror)));
		appendBinaryStringInfo(out, (const char *) p->out, p->outlen);
		crc = crc32_combine(crc, p->crc, (z_off_t) len);
	}
	append_le32(out, (uint32) crc);
	append_le32(out, (uint32) (c->len + tail_len));
}

void
cp_gzip(const char *data, size_t len, const char *tail, size_t tail_len,
		StringInfo out)
{
	z_stream	zs;
	unsigned char *buf = NULL;
	size_t		bufsize = 0;
	int			rc;

	if (!init_stream(&zs, GZIP_WINDOW_BITS))
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
