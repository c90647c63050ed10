/*-------------------------------------------------------------------------
 *
 * gzip.c
 *	  Raw deflate pieces with ISA-L's igzip or zlib (see gzip.h).
 *
 * Level 1 either way: the fastest, and with igzip about seven times
 * zlib's speed at a slightly better ratio (issue 13).  The CRC and its
 * combination come from zlib in both builds (crc32_combine has no ISA-L
 * counterpart); ISA-L computes the CRC of each piece when present.
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

static int
grow(unsigned char **out, size_t *outsize, size_t used)
{
	size_t		grown = *outsize * 2 > 64 * 1024 ? *outsize * 2 : 64 * 1024;
	unsigned char *bigger = realloc(*out, grown);

	(void) used;
	if (bigger == NULL)
		return CP_GZIP_NOMEM;
	*out = bigger;
	*outsize = grown;
	return CP_GZIP_OK;
}

#ifdef CP_HAVE_ISAL

#define CP_ISAL_LEVEL 1
#define CP_ISAL_LEVEL_BUF ISAL_DEF_LVL1_DEFAULT

struct CpDeflate
{
	struct isal_zstream zs;
	uint8_t    *level_buf;
};

CpDeflate *
cp_deflate_new(void)
{
	CpDeflate  *d = calloc(1, sizeof(CpDeflate));

	if (d == NULL)
		return NULL;
	d->level_buf = malloc(CP_ISAL_LEVEL_BUF);
	if (d->level_buf == NULL)
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
	free(d->level_buf);
	free(d);
}

int
cp_deflate_piece(CpDeflate *d, const char *data, size_t len, bool last,
				 unsigned char **out, size_t *outsize, size_t *outlen)
{
	struct isal_zstream *zs = &d->zs;
	size_t		used = 0;

	isal_deflate_init(zs);
	zs->level = CP_ISAL_LEVEL;
	zs->level_buf = d->level_buf;
	zs->level_buf_size = CP_ISAL_LEVEL_BUF;
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
			rc = grow(out, outsize, used);
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
			rc = grow(out, outsize, used);
			if (rc != CP_GZIP_OK)
				return rc;
		}
	}
	*outlen = used;
	return CP_GZIP_OK;
}

uint32_t
cp_gzip_crc(const char *data, size_t len)
{
	return crc32_gzip_refl(0, (const unsigned char *) data, len);
}

const char *
cp_gzip_compressor(void)
{
	static char name[32];

	if (name[0] == '\0')
		snprintf(name, sizeof(name), "isa-l %d.%d", ISAL_MAJOR_VERSION, ISAL_MINOR_VERSION);
	return name;
}

#else							/* zlib */

struct CpDeflate
{
	z_stream	zs;
};

CpDeflate *
cp_deflate_new(void)
{
	CpDeflate  *d = calloc(1, sizeof(CpDeflate));

	if (d == NULL)
		return NULL;
	/* level 1: zlib's fastest, a sixth of the JSON's size or better */
	if (deflateInit2(&d->zs, Z_BEST_SPEED, Z_DEFLATED, -15, 8,
					 Z_DEFAULT_STRATEGY) != Z_OK)
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
	deflateEnd(&d->zs);
	free(d);
}

int
cp_deflate_piece(CpDeflate *d, const char *data, size_t len, bool last,
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

			rc = grow(out, outsize, used);
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

uint32_t
cp_gzip_crc(const char *data, size_t len)
{
	return (uint32_t) crc32(0L, (const Bytef *) data, len);
}

const char *
cp_gzip_compressor(void)
{
	static char name[32];

	if (name[0] == '\0')
		snprintf(name, sizeof(name), "zlib %s", zlibVersion());
	return name;
}

#endif

uint32_t
cp_gzip_crc_combine(uint32_t crc1, uint32_t crc2, size_t len2)
{
	return (uint32_t) crc32_combine(crc1, crc2, (z_off_t) len2);
}
