/*
 * libFuzzer target: the list of calabi_push.allowed_hosts
 * (cp_egress_parse_list in src/egress_policy.c), as a superuser writes it,
 * and the judgement of addresses against it.  Every entry accepted must
 * allow what it names (unless the address is one never allowed).
 */
#include "postgres.h"

#include <arpa/inet.h>

#include "egress.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *list = malloc(size + 1);
	char		err[512];
	CpEgressPolicy *policy;

	memcpy(list, data, size);
	list[size] = '\0';
	policy = cp_egress_parse_list(list, err, sizeof(err));
	if (policy == NULL)
	{
		if (err[0] == '\0' || strnlen(err, sizeof(err)) >= sizeof(err))
			abort();
		free(list);
		return 0;
	}
	for (int i = 0; i < policy->nentries; i++)
	{
		const CpEgressEntry *e = &policy->entries[i];
		struct sockaddr_in6 in6;
		CpEgressVerdict v;

		memset(&in6, 0, sizeof(in6));
		in6.sin6_family = AF_INET6;
		if (e->is_name)
		{
			size_t		n = strnlen(e->name, sizeof(e->name));

			if (n == 0 || n >= sizeof(e->name) || e->name[n - 1] == '.')
				abort();
			for (size_t k = 0; k < n; k++)
				if (e->name[k] >= 'A' && e->name[k] <= 'Z')
					abort();
			/* 10.0.0.1 reached through a listed name: allowed */
			in6.sin6_addr.s6_addr[10] = in6.sin6_addr.s6_addr[11] = 0xff;
			in6.sin6_addr.s6_addr[12] = 10;
			in6.sin6_addr.s6_addr[15] = 1;
			v = cp_egress_judge(policy, e->name, (struct sockaddr *) &in6);
			if (v != CP_EGRESS_LISTED)
				abort();
			continue;
		}
		if (e->bits < 0 || e->bits > 128)
			abort();
		/* the range's own first address, as written */
		memcpy(in6.sin6_addr.s6_addr, e->addr, 16);
		v = cp_egress_judge(policy, NULL, (struct sockaddr *) &in6);
		if (!cp_egress_allowed(v) && !cp_egress_always_refused(v))
			abort();
	}
	free(policy);
	free(list);
	return 0;
}
