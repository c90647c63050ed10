/*-------------------------------------------------------------------------
 *
 * compressor.c
 *	  gzip in a helper thread (see compressor.h).
 *
 * Why a thread in a backend: compression is half of a sync's CPU with zlib
 * (level 1, its fastest; ISA-L's igzip, used when built with it, is several
 * times faster: gzip.c), and batches must go out strictly one after the
 * other, so without a second core the worker reads, then compresses, then
 * waits.  The thread is kept to what is safe beside PostgreSQL's
 * single-threaded code: the compressor and malloc on buffers the main thread does not
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

#include "fmgr.h"
#include "utils/guc.h"

#include "compressor.h"
#include "gzip.h"
#include "thread.h"

/* calabi_push.gzip_library: which library compresses, read when a run starts */
static int	gzip_library = CP_GZIP_DEFAULT_LIBRARY;

static const struct config_enum_entry gzip_library_options[] = {
#ifdef CP_HAVE_ISAL
	{"isa-l", CP_GZIP_ISAL, false},
#endif
	{"zlib", CP_GZIP_ZLIB, false},
	{NULL, 0, false}
};

/* small enough to share the work at the end, large enough to lose no ratio */
#define PIECE_BYTES (256 * 1024)

typedef struct Piece
{
	unsigned char *out;			/* malloc'd, kept from batch to batch */
	size_t		outsize;
	size_t		outlen;
	uint32		crc;
	int			zerror;			/* CP_GZIP_* */
} Piece;

struct CpCompressor
{
	pthread_mutex_t mutex;
	pthread_cond_t cond;
	pthread_t	thread;
	CpDeflate  *thread_zs;		/* the thread's */
	CpDeflate  *main_zs;		/* the worker's, for the pieces it takes */
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

/*
 * Compress len bytes at data as a raw deflate piece into p, ending with a
 * sync flush (more follows) or finishing the stream (last).  Thread-safe:
 * the compressor (gzip.c) and malloc only.
 */
static void
compress_piece(CpDeflate *zs, Piece *p, const char *data, size_t len, bool last)
{
	p->crc = cp_gzip_crc(data, len);
	p->outlen = 0;
	p->zerror = cp_deflate_piece(zs, data, len, last, &p->out, &p->outsize,
								 &p->outlen);
}

/* Take the next piece of the job, if any (mutex held by the caller). */
static int
take_piece(CpCompressor *c)
{
	return c->next < c->npieces ? c->next++ : -1;
}

static void
compress_taken(CpCompressor *c, CpDeflate *zs, int i)
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
			compress_taken(c, c->thread_zs, i);
			pthread_mutex_lock(&c->mutex);
			c->done++;
			pthread_cond_broadcast(&c->cond);
		}
		c->pending = false;
	}
	return NULL;
}

void
cp_compressor_define_setting(void)
{
	DefineCustomEnumVariable("calabi_push.gzip_library",
							 "The library that compresses gzip batches.",
							 "isa-l (when the build has it) is several times faster than zlib; "
							 "a sync uses the value read when its run starts.",
							 &gzip_library,
							 CP_GZIP_DEFAULT_LIBRARY,
							 gzip_library_options,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
}

const char *
cp_compressor_name(void)
{
	return cp_gzip_library_name(gzip_library);
}

int
cp_compressor_level(const char *sync_name, int requested)
{
	int			max = cp_gzip_max_level(gzip_library);

	if (requested <= 0)
		return 1;
	if (requested > max)
	{
		/* set under the other library (calabi_push.gzip_library changed) */
		ereport(LOG,
				(errmsg("sync \"%s\" asks for compression_level %d; %s compresses at level %d at most, which is used",
						sync_name, requested, cp_compressor_name(), max)));
		return max;
	}
	return requested;
}

CpCompressor *
cp_compressor_create(int level)
{
	CpCompressor *c = calloc(1, sizeof(CpCompressor));
	int			rc;

	if (c == NULL)
		return NULL;
	c->thread_zs = cp_deflate_new(gzip_library, level);
	c->main_zs = cp_deflate_new(gzip_library, level);
	if (c->thread_zs == NULL || c->main_zs == NULL)
	{
		cp_deflate_free(c->thread_zs);
		cp_deflate_free(c->main_zs);
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
		cp_deflate_free(c->thread_zs);
		cp_deflate_free(c->main_zs);
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

/* gzip header: deflate, no name, no time, unix */
static void
append_header(StringInfo out)
{
	static const unsigned char header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};

	appendBinaryStringInfo(out, (const char *) header, sizeof(header));
}

static void
check_piece(Piece *p)
{
	if (p->zerror != CP_GZIP_OK)
		ereport(ERROR,
				(errcode(p->zerror == CP_GZIP_NOMEM ? ERRCODE_OUT_OF_MEMORY : ERRCODE_INTERNAL_ERROR),
				 errmsg("gzip compression of a batch failed (%s)", cp_compressor_name())));
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
	Piece	   *last = &c->pieces[c->npieces];
	uint32		crc;
	int			i;

	/* rather than wait, take what the thread has not begun */
	pthread_mutex_lock(&c->mutex);
	while ((i = take_piece(c)) >= 0)
	{
		pthread_mutex_unlock(&c->mutex);
		compress_taken(c, c->main_zs, i);
		pthread_mutex_lock(&c->mutex);
		c->done++;
	}
	while (c->done < c->npieces)
		pthread_cond_wait(&c->cond, &c->mutex);
	pthread_mutex_unlock(&c->mutex);

	compress_piece(c->main_zs, last, tail, tail_len, true);

	resetStringInfo(out);
	append_header(out);
	crc = 0;
	for (i = 0; i <= c->npieces; i++)
	{
		Piece	   *p = &c->pieces[i];
		size_t		len = i < c->npieces ?
			Min(PIECE_BYTES, c->len - (size_t) i * PIECE_BYTES) : tail_len;

		check_piece(p);
		appendBinaryStringInfo(out, (const char *) p->out, p->outlen);
		crc = cp_gzip_crc_combine(crc, p->crc, len);
	}
	append_le32(out, (uint32) crc);
	append_le32(out, (uint32) (c->len + tail_len));
}

void
cp_gzip(int level, const char *data, size_t len, const char *tail, size_t tail_len,
		StringInfo out)
{
	CpDeflate  *zs = cp_deflate_new(gzip_library, level);
	Piece		body = {0};
	Piece		end = {0};
	uint32		crc;

	if (zs == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not start gzip compression")));
	compress_piece(zs, &body, data, len, false);
	if (body.zerror == CP_GZIP_OK)
		compress_piece(zs, &end, tail, tail_len, true);
	cp_deflate_free(zs);
	if (body.zerror == CP_GZIP_OK && end.zerror == CP_GZIP_OK)
	{
		resetStringInfo(out);
		append_header(out);
		appendBinaryStringInfo(out, (const char *) body.out, body.outlen);
		appendBinaryStringInfo(out, (const char *) end.out, end.outlen);
		crc = cp_gzip_crc_combine(body.crc, end.crc, tail_len);
		append_le32(out, crc);
		append_le32(out, (uint32) (len + tail_len));
	}
	free(body.out);
	free(end.out);
	check_piece(&body);
	check_piece(&end);
}

/*
 * calabi_push._gzip_max_level(): the highest compression_level the library
 * in use takes, for the destination option's check.
 */
PG_FUNCTION_INFO_V1(calabi_push_gzip_max_level);
Datum
calabi_push_gzip_max_level(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(cp_gzip_max_level(gzip_library));
}
