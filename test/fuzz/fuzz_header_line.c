/*
 * libFuzzer target: the response-header callback's parsing
 * (cp_http_header_line in src/http_parse.c).  The input is split at LF
 * into header lines, each handed over with its LF the way libcurl does;
 * the value kept must be a trimmed, NUL-terminated prefix of the last
 * Retry-After of the last response.
 */
#include "postgres.h"

#include "http_parse.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	CpResponseHeaders h;
	const char *p = (const char *) data;
	const char *end = p + size;

	memset(&h, 0x7f, sizeof(h));	/* reset must clear it all */
	cp_http_headers_reset(&h);
	while (p < end)
	{
		const char *nl = memchr(p, '\n', end - p);
		size_t		len = nl ? (size_t) (nl - p) + 1 : (size_t) (end - p);
		char	   *line = malloc(len ? len : 1);	/* ASan sees overreads */

		memcpy(line, p, len);
		cp_http_header_line(&h, line, len);
		free(line);
		p += len;

		if (h.have_retry_after)
		{
			size_t		vlen = strnlen(h.retry_after, sizeof(h.retry_after));

			if (vlen >= sizeof(h.retry_after))
				abort();		/* not terminated */
			if (vlen > 0 &&
				(h.retry_after[0] == ' ' || h.retry_after[0] == '\t'))
				abort();		/* not trimmed */
		}
		else if (h.retry_after[0] != '\0')
			abort();
		(void) cp_http_retry_after_ms(&h, (time_t) 1700000000);
	}
	return 0;
}
