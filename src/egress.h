/*-------------------------------------------------------------------------
 *
 * egress.h
 *	  Where a sync may send: the server-level allow-list
 *	  calabi_push.allowed_hosts and the judgement of an address against it.
 *
 * The policy (docs/destinations.md, "Where a sync may send"):
 *   - link-local addresses (169.254.0.0/16, fe80::/10) and known cloud
 *     metadata addresses are refused always, even when listed;
 *   - loopback, private (RFC 1918, CGNAT, unique local), unspecified and
 *     reserved addresses are refused unless the list allows them;
 *   - every other (public) address is allowed;
 *   - a list entry is an address, a CIDR range, or a host name; a host name
 *     allows whatever that name resolves to, when connecting to that name.
 * IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible and NAT64 (64:ff9b::/96)
 * IPv6 addresses are judged as the IPv4 address they carry.
 *
 * cp_egress_judge, cp_egress_literal, cp_egress_parse_list and the other
 * functions of egress_policy.c are plain C without any call into the
 * PostgreSQL backend (no palloc, no elog, no GUC read): libcurl's open-socket
 * callback runs them, possibly on the sending thread (http_sender.c).  They
 * read only the policy they are given, which their caller must keep
 * unchanged meanwhile (http_egress.c keeps a copy per client, replaced
 * between transfers).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_EGRESS_H
#define CALABI_PUSH_EGRESS_H

#include "postgres.h"

#include <netinet/in.h>
#include <sys/socket.h>

#define CP_EGRESS_NAME_MAX	254

typedef struct CpEgressEntry
{
	bool		is_name;
	/* address entries: the range, IPv4 as ::ffff:a.b.c.d (bits + 96) */
	uint8		addr[16];
	int			bits;
	/* name entries: lower case, without a trailing dot */
	char		name[CP_EGRESS_NAME_MAX];
} CpEgressEntry;

typedef struct CpEgressPolicy
{
	int			nentries;
	CpEgressEntry entries[FLEXIBLE_ARRAY_MEMBER];
} CpEgressPolicy;

typedef enum CpEgressVerdict
{
	CP_EGRESS_PUBLIC,			/* allowed: a public address */
	CP_EGRESS_LISTED,			/* allowed: the list names it */
	/* refused always */
	CP_EGRESS_LINK_LOCAL,
	CP_EGRESS_METADATA,
	/* refused unless listed */
	CP_EGRESS_LOOPBACK,
	CP_EGRESS_PRIVATE,
	CP_EGRESS_UNSPECIFIED,
	CP_EGRESS_RESERVED
} CpEgressVerdict;

#define cp_egress_allowed(v)	((v) == CP_EGRESS_PUBLIC || (v) == CP_EGRESS_LISTED)
#define cp_egress_always_refused(v) \
	((v) == CP_EGRESS_LINK_LOCAL || (v) == CP_EGRESS_METADATA)

/* the setting calabi_push.allowed_hosts, defined by _PG_init */
extern void cp_egress_define_setting(void);

/*
 * The policy in force in this process (the setting, parsed), and a number
 * that changes whenever it does.  Never NULL.  Valid until the next
 * configuration reload: copy it to keep it.
 */
extern const CpEgressPolicy *cp_egress_current(uint64 *generation);
extern CpEgressPolicy *cp_egress_copy(const CpEgressPolicy *policy,
									  MemoryContext cxt);

/*
 * Judge address sa (AF_INET or AF_INET6), reached by connecting to host
 * (a name or NULL).  Plain C: see the top.
 */
extern CpEgressVerdict cp_egress_judge(const CpEgressPolicy *policy,
									   const char *host,
									   const struct sockaddr *sa);
/* what kind of address a refusal was about: "a link-local address" */
extern const char *cp_egress_verdict_text(CpEgressVerdict v);
/* the address as text, into buf (INET6_ADDRSTRLEN bytes at least) */
extern void cp_egress_format(const struct sockaddr *sa, char *buf, size_t len);

/*
 * Parse host as the host of a URL (a name, an IPv4 address, or an IPv6
 * address in brackets) into *sa when it is an address literal; false for a
 * host name.  Numeric forms that resolvers take as IPv4 ("127.1",
 * "0x7f.0.0.1") count as addresses.
 */
extern bool cp_egress_literal(const char *host, struct sockaddr_storage *sa);

/*
 * The list (the setting's text) into a malloc'd policy (GUC extra memory
 * must be malloc'd); NULL with a message in err when an entry is invalid,
 * or out of memory (err empty).  Plain C.
 */
extern CpEgressPolicy *cp_egress_parse_list(const char *list, char *err,
											size_t errlen);

#endif							/* CALABI_PUSH_EGRESS_H */
