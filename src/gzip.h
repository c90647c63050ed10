/*-------------------------------------------------------------------------
 *
 * gzip.h
 *	  One raw deflate piece at a time, with ISA-L's igzip when the build
 *	  found it (CP_HAVE_ISAL), else zlib.  Thread-safe: malloc only, no
 *	  PostgreSQL call, so the compression thread may use it.
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

typedef struct CpDeflate CpDeflate;

#define CP_GZIP_OK 0
#define CP_GZIP_NOMEM 1
#define CP_GZIP_FAILED 2

extern CpDeflate *cp_deflate_new(void);
extern void cp_deflate_free(CpDeflate *d);
/* compress len bytes at data into *out (grown with realloc), *outlen set */
extern int	cp_deflate_piece(CpDeflate *d, const char *data, size_t len, bool last,
							 unsigned char **out, size_t *outsize, size_t *outlen);
extern uint32_t cp_gzip_crc(const char *data, size_t len);
extern uint32_t cp_gzip_crc_combine(uint32_t crc1, uint32_t crc2, size_t len2);
/* "isa-l 2.30" or "zlib 1.2.13" */
extern const char *cp_gzip_compressor(void);

#endif							/* CALABI_PUSH_GZIP_H */
