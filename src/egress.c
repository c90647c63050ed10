/*-------------------------------------------------------------------------
 *
 * egress.c
 *	  Where a sync may send: the setting calabi_push.allowed_hosts and the
 *	  SQL-callable check (see egress.h for the policy; its parsing and the
 *	  judgement of an address are in egress_policy.c).  Two users:
 *	  http_egress.c judges every address libcurl is about to connect to
 *	  (destination, token endpoint, proxy), after name resolution;
 *	  calabi_push._check_egress() lets create_destination and
 *	  alter_destination refuse a literal address (or "localhost") at once.
 *
 * Where a sync may send is the superuser's decision, not the destination
 * creator's: the setting is PGC_SIGHUP (postgresql.conf or ALTER SYSTEM)
 * and hidden from other roles (GUC_SUPERUSER_ONLY).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "compat.h"
#include "egress.h"

PG_FUNCTION_INFO_V1(calabi_push_check_egress);

static char *cp_allowed_hosts = NULL;

/* the parsed setting: GUC "extra" memory, owned and freed by guc.c */
static const CpEgressPolicy *current_policy = NULL;
static uint64 current_generation = 0;
static const CpEgressPolicy empty_policy = {0};


/* ---------------------------------------------------------------------
 * The setting
 * ---------------------------------------------------------------------
 */

static bool
check_allowed_hosts(char **newval, void **extra, GucSource source)
{
	char		err[512];
	CpEgressPolicy *policy = cp_egress_parse_list(*newval ? *newval : "",
												   err, sizeof(err));

	if (policy == NULL)
	{
		if (err[0] == '\0')
		{
			GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
			GUC_check_errmsg("out of memory");
			return false;
		}
		GUC_check_errdetail("%s.", err);
		GUC_check_errhint("Give a comma-separated list of host names, addresses and CIDR ranges, e.g. '127.0.0.1/32, ::1/128, ingest.internal'.");
		return false;
	}

	/*
	 * cp_egress_parse_list() mallocs (it is server-free, for the fuzzer);
	 * the extra must be memory guc.c can free on this server version.
	 */
	{
		size_t		size = offsetof(CpEgressPolicy, entries) +
			sizeof(CpEgressEntry) * policy->nentries;
		void	   *copy = cp_guc_extra_alloc(size);

		if (copy != NULL)
			memcpy(copy, policy, size);
		free(policy);
		if (copy == NULL)
		{
			GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
			GUC_check_errmsg("out of memory");
			return false;
		}
		*extra = copy;
	}
	return true;
}

static void
assign_allowed_hosts(const char *newval, void *extra)
{
	current_policy = (const CpEgressPolicy *) extra;
	current_generation++;
}

void
cp_egress_define_setting(void)
{
	DefineCustomStringVariable("calabi_push.allowed_hosts",
							   "Loopback, private and reserved addresses and host names syncs may connect to.",
							   "A comma-separated list of host names, addresses and CIDR ranges. "
							   "Public addresses are always allowed; link-local and cloud metadata addresses never.",
							   &cp_allowed_hosts,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_LIST_INPUT,
							   check_allowed_hosts, assign_allowed_hosts, NULL);
}

const CpEgressPolicy *
cp_egress_current(uint64 *generation)
{
	if (generation)
		*generation = current_generation;
	return current_policy ? current_policy : &empty_policy;
}

CpEgressPolicy *
cp_egress_copy(const CpEgressPolicy *policy, MemoryContext cxt)
{
	Size		size = offsetof(CpEgressPolicy, entries) +
		sizeof(CpEgressEntry) * policy->nentries;
	CpEgressPolicy *copy = MemoryContextAlloc(cxt, size);

	memcpy(copy, policy, size);
	return copy;
}


/* ---------------------------------------------------------------------
 * calabi_push._check_egress(what text, host text): refuse, at once, a
 * destination whose URL, token_url or proxy names a literal address (or
 * "localhost") that no connection could be allowed to.  Host names are
 * judged at every connection instead: what they resolve to may change.
 * ---------------------------------------------------------------------
 */
Datum
calabi_push_check_egress(PG_FUNCTION_ARGS)
{
	char	   *what;
	char	   *host;
	struct sockaddr_storage ss[2];
	int			naddrs = 0;
	CpEgressVerdict verdict = CP_EGRESS_PUBLIC;
	const CpEgressPolicy *policy = cp_egress_current(NULL);
	const char *suggest;
	char		addrtext[INET6_ADDRSTRLEN];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_VOID();
	what = text_to_cstring(PG_GETARG_TEXT_PP(0));
	host = text_to_cstring(PG_GETARG_TEXT_PP(1));

	if (pg_strcasecmp(host, "localhost") == 0 ||
		pg_strcasecmp(host, "localhost.") == 0)
	{
		/* what libcurl resolves it to, without asking any resolver */
		struct sockaddr_in *in = (struct sockaddr_in *) &ss[0];
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &ss[1];

		memset(ss, 0, sizeof(ss));
		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_loopback;
		naddrs = 2;
		suggest = "localhost";
	}
	else if (cp_egress_literal(host, &ss[0]))
	{
		naddrs = 1;
		cp_egress_format((struct sockaddr *) &ss[0], addrtext, sizeof(addrtext));
		suggest = addrtext;
	}
	else
		PG_RETURN_VOID();		/* a name: judged when connecting */

	/* allowed when any of its addresses is (a connection would use that) */
	for (int i = 0; i < naddrs; i++)
	{
		CpEgressVerdict v = cp_egress_judge(policy, host,
											(struct sockaddr *) &ss[i]);

		if (cp_egress_allowed(v))
			PG_RETURN_VOID();
		if (i == 0 || cp_egress_always_refused(verdict))
			verdict = v;
	}

	if (cp_egress_always_refused(verdict))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("%s host %s is not allowed: it is %s",
						what, host, cp_egress_verdict_text(verdict)),
				 errdetail("calabi_push never connects to link-local or cloud metadata addresses, whatever calabi_push.allowed_hosts says."),
				 errhint("Give a public address or a host name instead.")));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s host %s is not allowed by calabi_push.allowed_hosts",
					what, host),
			 errdetail("It is %s; loopback, private and reserved addresses are reached only when the server's setting calabi_push.allowed_hosts lists them.",
					   cp_egress_verdict_text(verdict)),
			 errhint("Where syncs may send is a superuser's decision: a superuser can add \"%s\" to the list with ALTER SYSTEM SET calabi_push.allowed_hosts = '..., %s'; SELECT pg_reload_conf();",
					 suggest, suggest)));
	PG_RETURN_VOID();
}
