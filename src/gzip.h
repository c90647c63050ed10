/*-------------------------------------------------------------------------
 *
 * gzip.h
 *	  One raw deflate piece at a time, with ISA-L's igzip (when the build
 *	  found it: CP_HAVE_ISAL) or zlib, chosen when the compressor is made.
 *	  Thread-safe: malloc only, no PostgreSQL call, so the compression
 *	  thread may use it.
 *
 * A piece is an independent raw deflate stream (no reference to earlier
 * pieces) ending on a byte boundary, without BFINAL unless it is the last;
 * pieces laid end to end between one gzip header and a trailer holding
 * their combined CRC and the total length are one gzip member.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_GZIP_H
#define CALABI_PUSH_GZIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* the values of the setting calabi_push.gzip_library */
typedef enum CpGzipLibrary
{
	CP_GZIP_ZLIB,
	CP_GZIP_ISAL				/* only when built with CP_HAVE_ISAL */
} CpGzipLibrary;

#ifdef CP_HAVE_ISAL
#define CP_GZIP_DEFAULT_LIBRARY CP_GZIP_ISAL
#else
#define CP_GZIP_DEFAULT_LIBRARY CP_GZIP_ZLIB
#endif

typedef struct CpDeflate CpDeflate;

#define CP_GZIP_OK 0
#define CP_GZIP_NOMEM 1
#define CP_GZIP_FAILED 2

/* level: 1 (the fastest) to cp_gzip_max_level(lib); NULL when out of memory */
extern CpDeflate *cp_deflate_new(CpGzipLibrary lib, int level);
extern void cp_deflate_free(CpDeflate *d);
/* compress len bytes at data into *out (grown with realloc), *outlen set */
extern int	cp_deflate_piece(CpDeflate *d, const char *data, size_t len, bool last,
							 unsigned char **out, size_t *outsize, size_t *outlen);
extern uint32_t cp_gzip_crc(const char *data, size_t len);
extern uint32_t cp_gzip_crc_combine(uint32_t crc1, uint32_t crc2, size_t len2);
/* 9 for zlib, 3 for ISA-L */
extern int	cp_gzip_max_level(CpGzipLibrary lib);
/* "isa-l 2.30" or "zlib 1.2.13" */
extern const char *cp_gzip_library_name(CpGzipLibrary lib);

#endif							/* CALABI_PUSH_GZIP_H */
