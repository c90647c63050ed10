/*
 * libFuzzer target: the OAuth2 token response (cp_http_token_parse in
 * src/http_parse.c, cJSON underneath).  An accepted token must be one
 * that can go into an Authorization header as it is.
 */
#include "postgres.h"

#include "http_parse.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	CpTokenResponse tr;
	const char *problem;
	/* oauth.c hands over a NUL-terminated body, and its length */
	char	   *body = malloc(size + 1);

	memcpy(body, data, size);
	body[size] = '\0';
	problem = cp_http_token_parse(body, size, &tr);
	if (problem == NULL)
	{
		const unsigned char *p = (const unsigned char *) tr.access_token;

		if (p == NULL || *p == '\0')
			abort();
		for (; *p; p++)
			if (*p <= 0x20 || *p >= 0x7f)
				abort();
		if (!(tr.lifetime >= 0 && tr.lifetime <= 10.0 * 365 * 86400))
			abort();
	}
	else if (problem[0] == '\0')
		abort();
	cp_http_token_release(&tr);
	if (tr.root != NULL || tr.access_token != NULL)
		abort();
	free(body);
	return 0;
}
