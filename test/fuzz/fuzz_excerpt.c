/*
 * libFuzzer target: the response-excerpt writer (cp_http_excerpt in
 * src/http_parse.c) on an arbitrary body, for a UTF-8 database and for
 * another encoding.  What it writes goes into a server log and an error
 * message: it must be short, free of control characters, and valid text.
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "http_parse.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(const char *out, bool utf8)
{
	size_t		len = strnlen(out, CP_HTTP_EXCERPT_SIZE);

	if (len >= CP_HTTP_EXCERPT_SIZE)
		abort();
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) out[i];

		if (c < 0x20 || c == 0x7f || (!utf8 && c >= 0x80))
			abort();
	}
	if (utf8)
	{
		for (size_t i = 0; i < len;)
		{
			const unsigned char *p = (const unsigned char *) out + i;
			int			l = pg_utf_mblen(p);

			if (i + l > len || !pg_utf8_islegal(p, l))
				abort();
			i += l;
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char		out[CP_HTTP_EXCERPT_SIZE];
	/* an exact-size copy, so that ASan sees any read past the body */
	char	   *body = malloc(size ? size : 1);

	memcpy(body, data, size);
	for (int flags = 0; flags < 4; flags++)
	{
		bool		utf8 = flags & 1;
		bool		more = flags & 2;

		memset(out, 'x', sizeof(out));
		cp_http_excerpt(out, body, size, more, utf8);
		check(out, utf8);
		if (more && strstr(out, "...") == NULL)
			abort();
	}
	free(body);
	return 0;
}
