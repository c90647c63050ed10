/*-------------------------------------------------------------------------
 *
 * http_parse.c
 *	  What the endpoint's answers say (see http_parse.h): plain C, no call
 *	  into the backend, so that libcurl's header callback and the fuzz
 *	  targets in test/fuzz/ can run it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "mb/pg_wchar.h"

#include "http_parse.h"

void
cp_http_headers_reset(CpResponseHeaders *h)
{
	h->have_retry_after = false;
	h->retry_after[0] = '\0';
}

/* ASCII case-insensitive prefix match, locale-free (runs inside libcurl) */
static bool
ascii_prefix(const char *s, size_t len, const char *lower_prefix)
{
	size_t		i;

	for (i = 0; lower_prefix[i] != '\0'; i++)
	{
		char		c;

		if (i >= len)
			return false;
		c = s[i];
		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (c != lower_prefix[i])
			return false;
	}
	return true;
}

void
cp_http_header_line(CpResponseHeaders *h, const char *line, size_t len)
{
	static const char name[] = "retry-after:";
	const size_t namelen = sizeof(name) - 1;

	if (len >= 5 && memcmp(line, "HTTP/", 5) == 0)
		cp_http_headers_reset(h);
	else if (len > namelen && ascii_prefix(line, len, name))
	{
		const char *v = line + namelen;
		const char *end = line + len;
		size_t		n;

		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		while (end > v && (end[-1] == '\r' || end[-1] == '\n' ||
						   end[-1] == ' ' || end[-1] == '\t'))
			end--;
		n = Min((size_t) (end - v), sizeof(h->retry_after) - 1);
		memcpy(h->retry_after, v, n);
		h->retry_after[n] = '\0';
		h->have_retry_after = true;
	}
}

int
cp_http_retry_after_ms(const CpResponseHeaders *h, time_t now)
{
	const char *v = h->retry_after;
	const char *p;

	if (!h->have_retry_after || *v == '\0')
		return -1;

	for (p = v; *p >= '0' && *p <= '9'; p++)
		;
	if (*p == '\0')
	{
		int64		secs = 0;

		for (p = v; *p; p++)
		{
			secs = secs * 10 + (*p - '0');
			if (secs >= INT_MAX / 1000)
				return INT_MAX;
		}
		return (int) secs * 1000;
	}
	else
	{
		/*
		 * A value that is neither digits nor a date curl can read (a header
		 * cut at 63 bytes, an embedded NUL) is unparsable: -1.
		 */
		time_t		when = curl_getdate(v, NULL);
		int64		delta;

		if (when == (time_t) -1)
			return -1;
		delta = (int64) when - (int64) now;
		if (delta <= 0)
			return 0;
		if (delta >= INT_MAX / 1000)
			return INT_MAX;
		return (int) delta * 1000;
	}
}

void
cp_http_excerpt(char out[CP_HTTP_EXCERPT_SIZE], const char *data, size_t len,
				bool more, bool utf8)
{
	size_t		i = 0;
	int			n = 0;			/* bytes written to out */
	bool		pending_space = false;

	while (i < len && n < CP_HTTP_EXCERPT_MAX)
	{
		const unsigned char *p = (const unsigned char *) data + i;

		if (*p <= 0x20 || *p == 0x7f)
		{
			pending_space = (n > 0);
			i++;
			continue;
		}
		if (pending_space)
		{
			out[n++] = ' ';
			pending_space = false;
		}
		if (*p < 0x80)
		{
			out[n++] = (char) *p;
			i++;
			continue;
		}
		if (utf8)
		{
			int			l = pg_utf_mblen(p);

			if (i + l <= len && n + l <= CP_HTTP_EXCERPT_MAX &&
				pg_utf8_islegal(p, l))
			{
				memcpy(out + n, p, l);
				i += l;
				n += l;
				continue;
			}
		}
		out[n++] = '?';
		i++;
	}
	if (i < len || more)
	{
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
}

const char *
cp_http_token_parse(const char *body, size_t len, CpTokenResponse *tr)
{
	cJSON	   *root;
	cJSON	   *item;
	cJSON	   *expires;
	double		lifetime = 0;

	memset(tr, 0, sizeof(*tr));
	root = cJSON_ParseWithLength(body, len);
	tr->root = root;
	if (root == NULL || !cJSON_IsObject(root))
		return "response is not a JSON object";

	item = cJSON_GetObjectItemCaseSensitive(root, "token_type");
	if (item != NULL &&
		(!cJSON_IsString(item) ||
		 pg_strcasecmp(item->valuestring, "bearer") != 0))
		return "token_type is not \"Bearer\"";

	item = cJSON_GetObjectItemCaseSensitive(root, "access_token");
	if (!cJSON_IsString(item) || item->valuestring[0] == '\0')
		return "response has no access_token";
	/* it goes into a header: visible ASCII only (RFC 6750 b64token) */
	for (const unsigned char *p = (unsigned char *) item->valuestring; *p; p++)
		if (*p <= 0x20 || *p >= 0x7f)
			return "access_token contains characters not allowed in an HTTP header";

	/* RFC 6749 says a number; some servers send a string */
	expires = cJSON_GetObjectItemCaseSensitive(root, "expires_in");
	if (cJSON_IsNumber(expires))
		lifetime = expires->valuedouble;
	else if (cJSON_IsString(expires))
		lifetime = strtod(expires->valuestring, NULL);
	/* NaN fails the test too */
	tr->lifetime = (lifetime > 0) ? Min(lifetime, 10.0 * 365 * 86400) : 0;
	tr->access_token = item->valuestring;
	return NULL;
}

void
cp_http_token_release(CpTokenResponse *tr)
{
	cJSON	   *root = (cJSON *) tr->root;

	if (root != NULL)
	{
		cJSON	   *item = cJSON_GetObjectItemCaseSensitive(root,
															"access_token");

		/* the tree's copy of the token is not left in freed memory */
		if (cJSON_IsString(item) && item->valuestring != NULL)
			explicit_bzero(item->valuestring, strlen(item->valuestring));
		cJSON_Delete(root);
	}
	memset(tr, 0, sizeof(*tr));
}
