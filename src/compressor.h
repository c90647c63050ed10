/*-------------------------------------------------------------------------
 *
 * compressor.h
 *	  gzip on the second core: compress a batch's lines in a helper thread
 *	  while the worker reads the next batch.
 *
 * The thread runs the compressor (gzip.c: ISA-L or zlib) and nothing else: no palloc, no elog, no other
 * PostgreSQL call, all signals blocked.  The main thread hands it a buffer
 * that it leaves untouched until cp_compressor_finish, which compresses the
 * pieces the thread has not begun, appends the tail (the STATE line, known
 * only at send time) and returns one gzip member.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_COMPRESSOR_H
#define CALABI_PUSH_COMPRESSOR_H

#include "postgres.h"

#include "lib/stringinfo.h"

typedef struct CpCompressor CpCompressor;

extern void cp_compressor_define_setting(void);
/* "isa-l 2.30": the library calabi_push.gzip_library names */
extern const char *cp_compressor_name(void);
/* the level to use for a destination's compression_level (0: not set) */
extern int	cp_compressor_level(const char *sync_name, int requested);

/* NULL when no thread could be started: then compress in the caller. */
extern CpCompressor *cp_compressor_create(int level);
extern void cp_compressor_begin(CpCompressor *c, const char *data, size_t len);
extern void cp_compressor_finish(CpCompressor *c, const char *tail, size_t tail_len,
								 StringInfo out);

/* gzip data then tail into out, in this thread (the fallback, and 413 splits). */
extern void cp_gzip(int level, const char *data, size_t len, const char *tail, size_t tail_len,
					StringInfo out);

#endif							/* CALABI_PUSH_COMPRESSOR_H */
