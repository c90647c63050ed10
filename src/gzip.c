/*-------------------------------------------------------------------------
 *
 * gzip.c
 *	  Raw deflate pieces with ISA-L's igzip or zlib (see gzip.h).
 *
 * Level 1 by default either way: the fastest, and with igzip about seven
 * times zlib's speed at a slightly better ratio (issue 13).  Both libraries
 * are built in when ISA-L is found, so that the setting
 * calabi_push.gzip_library can fall back on zlib without a rebuild, and so
 * that tests and benchmarks compare the two in one build.  The CRC comes
 * from ISA-L when present (faster; the same polynomial), its combination
 * from zlib in both builds (crc32_combine has no ISA-L counterpart).
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#ifdef CP_HAVE_ISAL
#include <isa-l.h>
#endif

#include "gzip.h"

struct CpDeflate
{
	CpGzipLibrary lib;
	int			level;
	z_stream	zs;				/* zlib's */
#ifdef CP_HAVE_ISAL
	struct isal_zstream izs;
	uint8_t    *level_buf;
	uint32_t	level_buf_size;
#endif
};

static int
grow(unsigned char **out, size_t *outsize)
{
	size_t		grown = *outsize * 2 > 64 * 1024 ? *outsize * 2 : 64 * 1024;
	unsigned char *bigger = realloc(*out, grown);

	if (bigger == NULL)
		return CP_GZIP_NOMEM;
	*out = bigger;
	*outsize = grown;
	return CP_GZIP_OK;
}

#ifdef CP_HAVE_ISAL

/* the buffer each level needs; ISA-L's "large" sizes, its defaults */
static uint32_t
isal_level_buf_size(int level)
{
	switch (level)
	{
		case 1:
			return ISAL_DEF_LVL1_DEFAULT;
		case 2:
			return ISAL_DEF_LVL2_DEFAULT;
		default:
			return ISAL_DEF_LVL3_DEFAULT;
	}
}

static int
isal_piece(CpDeflate *d, const char *data, size_t len, bool last,
		   unsigned char **out, size_t *outsize, size_t *outlen)
{
	struct isal_zstream *zs = &d->izs;
	size_t		used = 0;

	isal_deflate_init(zs);
	zs->level = (uint32_t) d->level;
	zs->level_buf = d->level_buf;
	zs->level_buf_size = d->level_buf_size;
	zs->gzip_flag = IGZIP_DEFLATE;
	/* a sync flush ends on a byte boundary without BFINAL */
	zs->flush = last ? NO_FLUSH : SYNC_FLUSH;
	zs->end_of_stream = last ? 1 : 0;
	zs->next_in = (uint8_t *) data;
	zs->avail_in = (uint32_t) len;	/* pieces are far below 4 GB */
	for (;;)
	{
		uint32_t	before;
		int			rc;

		if (*outsize - used == 0)
		{
			rc = grow(out, outsize);
			if (rc != CP_GZIP_OK)
				return rc;
		}
		zs->next_out = *out + used;
		zs->avail_out = (uint32_t) (*outsize - used > UINT32_MAX ? UINT32_MAX : *outsize - used);
		before = zs->avail_out;
		rc = isal_deflate(zs);
		used += before - zs->avail_out;
		if (rc != COMP_OK)
			return rc == ISAL_INVALID_LEVEL_BUF ? CP_GZIP_NOMEM : CP_GZIP_FAILED;
		/* finished: the stream's end, or all input flushed to a byte boundary */
		if (last ? zs->internal_state.state == ZSTATE_END :
			(zs->avail_in == 0 && zs->internal_state.state == ZSTATE_NEW_HDR))
			break;
		if (zs->avail_out == before)
		{
			/* no progress with room left: give it more room */
			rc = grow(out, outsize);
			if (rc != CP_GZIP_OK)
				return rc;
		}
	}
	*outlen = used;
	return CP_GZIP_OK;
}

#endif							/* CP_HAVE_ISAL */

static int
zlib_piece(CpDeflate *d, const char *data, size_t len, bool last,
		   unsigned char **out, size_t *outsize, size_t *outlen)
{
	z_stream   *zs = &d->zs;
	int			flush = last ? Z_FINISH : Z_SYNC_FLUSH;
	int			rc = deflateReset(zs);

	if (rc != Z_OK)
		return CP_GZIP_FAILED;
	zs->next_in = (Bytef *) data;
	zs->avail_in = len;
	zs->next_out = *out;
	zs->avail_out = *outsize;
	for (;;)
	{
		if (zs->avail_out == 0)
		{
			size_t		used = *outsize;

			rc = grow(out, outsize);
			if (rc != CP_GZIP_OK)
				return rc;
			zs->next_out = *out + used;
			zs->avail_out = *outsize - used;
		}
		rc = deflate(zs, flush);
		if (rc == Z_STREAM_END)
			break;
		if (rc != Z_OK && rc != Z_BUF_ERROR)
			return rc == Z_MEM_ERROR ? CP_GZIP_NOMEM : CP_GZIP_FAILED;
		if (zs->avail_in == 0 && zs->avail_out > 0 && flush != Z_FINISH)
			break;
	}
	*outlen = zs->total_out;
	return CP_GZIP_OK;
}

CpDeflate *
cp_deflate_new(CpGzipLibrary lib, int level)
{
	CpDeflate  *d = calloc(1, sizeof(CpDeflate));

	if (d == NULL)
		return NULL;
	if (level < 1)
		level = 1;
	if (level > cp_gzip_max_level(lib))
		level = cp_gzip_max_level(lib);
	d->level = level;
#ifdef CP_HAVE_ISAL
	if (lib == CP_GZIP_ISAL)
	{
		d->lib = CP_GZIP_ISAL;
		d->level_buf_size = isal_level_buf_size(level);
		d->level_buf = malloc(d->level_buf_size);
		if (d->level_buf == NULL)
		{
			free(d);
			return NULL;
		}
		return d;
	}
#endif
	d->lib = CP_GZIP_ZLIB;
	if (deflateInit2(&d->zs, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
	{
		free(d);
		return NULL;
	}
	return d;
}

void
cp_deflate_free(CpDeflate *d)
{
	if (d == NULL)
		return;
#ifdef CP_HAVE_ISAL
	free(d->level_buf);
#endif
	if (d->lib == CP_GZIP_ZLIB)
		deflateEnd(&d->zs);
	free(d);
}

int
cp_deflate_piece(CpDeflate *d, const char *data, size_t len, bool last,
				 unsigned char **out, size_t *outsize, size_t *outlen)
{
#ifdef CP_HAVE_ISAL
	if (d->lib == CP_GZIP_ISAL)
		return isal_piece(d, data, len, last, out, outsize, outlen);
#endif
	return zlib_piece(d, data, len, last, out, outsize, outlen);
}

uint32_t
cp_gzip_crc(const char *data, size_t len)
{
#ifdef CP_HAVE_ISAL
	return crc32_gzip_refl(0, (const unsigned char *) data, len);
#else
	return (uint32_t) crc32(0L, (const Bytef *) data, len);
#endif
}

uint32_t
cp_gzip_crc_combine(uint32_t crc1, uint32_t crc2, size_t len2)
{
	return (uint32_t) crc32_combine(crc1, crc2, (z_off_t) len2);
}

int
cp_gzip_max_level(CpGzipLibrary lib)
{
#ifdef CP_HAVE_ISAL
	if (lib == CP_GZIP_ISAL)
		return ISAL_DEF_MAX_LEVEL;
#endif
	return Z_BEST_COMPRESSION;
}

const char *
cp_gzip_library_name(CpGzipLibrary lib)
{
	static char zlib_name[32];
#ifdef CP_HAVE_ISAL
	static char isal_name[32];

	if (lib == CP_GZIP_ISAL)
	{
		if (isal_name[0] == '\0')
			snprintf(isal_name, sizeof(isal_name), "isa-l %d.%d",
					 ISAL_MAJOR_VERSION, ISAL_MINOR_VERSION);
		return isal_name;
	}
#endif
	if (zlib_name[0] == '\0')
		snprintf(zlib_name, sizeof(zlib_name), "zlib %s", zlibVersion());
	return zlib_name;
}
