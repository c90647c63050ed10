/*
 * libFuzzer target: a URL's host as an address literal
 * (cp_egress_literal in src/egress_policy.c), as create_destination and
 * alter_destination pass it from a user's URL, and its judgement.  An
 * address read must print and read back as itself.
 */
#include "postgres.h"

#include <arpa/inet.h>

#include "egress.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *host = malloc(size + 1);
	struct sockaddr_storage ss,
				again;
	static const CpEgressPolicy empty = {0};

	memcpy(host, data, size);
	host[size] = '\0';
	if (cp_egress_literal(host, &ss))
	{
		char		text[INET6_ADDRSTRLEN];
		char		bracketed[INET6_ADDRSTRLEN + 2];
		CpEgressVerdict v;

		if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
			abort();
		cp_egress_format((struct sockaddr *) &ss, text, sizeof(text));
		if (ss.ss_family == AF_INET6)
			snprintf(bracketed, sizeof(bracketed), "[%s]", text);
		else
			snprintf(bracketed, sizeof(bracketed), "%s", text);
		if (!cp_egress_literal(bracketed, &again) ||
			memcmp(&ss, &again, sizeof(ss)) != 0)
			abort();
		v = cp_egress_judge(&empty, host, (struct sockaddr *) &ss);
		if (v == CP_EGRESS_LISTED || cp_egress_verdict_text(v) == NULL)
			abort();
	}
	free(host);
	return 0;
}
