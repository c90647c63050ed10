/*
 * libFuzzer target: the Retry-After value (src/http_parse.c), as the
 * endpoint sends it, delta-seconds or an HTTP-date.
 */
#include "postgres.h"

#include <limits.h>

#include "http_parse.h"

/* a fixed "now", so that a crash input replays the same way */
#define FUZZ_NOW	((time_t) 1700000000)

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	CpResponseHeaders h;
	size_t		n = Min(size, sizeof(h.retry_after) - 1);
	int			ms;
	bool		digits = n > 0;

	cp_http_headers_reset(&h);
	if (cp_http_retry_after_ms(&h, FUZZ_NOW) != -1)
		abort();				/* absent */

	memcpy(h.retry_after, data, n);
	h.retry_after[n] = '\0';
	h.have_retry_after = true;
	ms = cp_http_retry_after_ms(&h, FUZZ_NOW);
	if (ms < -1)
		abort();

	/* all digits: whole seconds, never unparsable, and exact when small */
	for (size_t i = 0; i < n; i++)
		if (h.retry_after[i] < '0' || h.retry_after[i] > '9')
			digits = false;
	if (digits)
	{
		long long	secs = 0;
		bool		big = false;

		for (size_t i = 0; i < n && !big; i++)
		{
			secs = secs * 10 + (h.retry_after[i] - '0');
			big = secs >= INT_MAX / 1000;
		}
		if (big ? ms != INT_MAX : ms != (int) secs * 1000)
			abort();
	}
	return 0;
}
