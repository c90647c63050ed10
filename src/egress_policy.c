/*-------------------------------------------------------------------------
 *
 * egress_policy.c
 *	  The egress policy itself (see egress.h): parsing the list of
 *	  calabi_push.allowed_hosts and judging an address against it.
 *
 * Plain C without any call into the PostgreSQL backend: libcurl's
 * open-socket callback runs the judging, possibly on the sending thread
 * (http_sender.c), and the fuzz targets in test/fuzz/ run all of it without a
 * server.  The setting and the SQL-callable check are in egress.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "egress.h"

/* IPv4 a.b.c.d as ::ffff:a.b.c.d */
static const uint8 v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
/* NAT64 well-known prefix 64:ff9b::/96 (RFC 6052) */
static const uint8 nat64_prefix[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
static const uint8 zero12[12] = {0};


/* ---------------------------------------------------------------------
 * Judging an address.  Plain C only: libcurl's callbacks run this.
 * ---------------------------------------------------------------------
 */

/*
 * sa as 16 bytes, IPv4 (and IPv6 forms that carry an IPv4 address) as
 * ::ffff:a.b.c.d, so that one set of rules and one kind of entry serve both.
 */
static bool
normalize(const struct sockaddr *sa, uint8 out[16])
{
	if (sa->sa_family == AF_INET)
	{
		const struct sockaddr_in *in = (const struct sockaddr_in *) sa;

		memcpy(out, v4mapped_prefix, 12);
		memcpy(out + 12, &in->sin_addr.s_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6)
	{
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;

		memcpy(out, in6->sin6_addr.s6_addr, 16);
		/*
		 * NAT64 and (deprecated) IPv4-compatible addresses reach the IPv4
		 * address they carry; :: and ::1 are not IPv4-compatible.
		 */
		if (memcmp(out, nat64_prefix, 12) == 0 ||
			(memcmp(out, zero12, 12) == 0 &&
			 !(out[12] == 0 && out[13] == 0 && out[14] == 0 && out[15] <= 1)))
			memcpy(out, v4mapped_prefix, 12);
		/* 6to4 2002:a.b.c.d::/48 (RFC 3056) reaches a.b.c.d */
		else if (out[0] == 0x20 && out[1] == 0x02)
		{
			uint8		v4[4];

			memcpy(v4, out + 2, 4);
			memcpy(out, v4mapped_prefix, 12);
			memcpy(out + 12, v4, 4);
		}
		return true;
	}
	return false;
}

static bool
in_range(const uint8 *addr, const uint8 *net, int bits)
{
	int			whole = bits / 8;
	int			rest = bits % 8;

	if (memcmp(addr, net, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((addr[whole] ^ net[whole]) & (0xff << (8 - rest)) & 0xff) == 0;
}

/* What kind of address a is, before the list has its say. */
static CpEgressVerdict
classify(const uint8 *a)
{
	if (memcmp(a, v4mapped_prefix, 12) == 0)
	{
		uint8		b0 = a[12],
					b1 = a[13],
					b2 = a[14],
					b3 = a[15];

		/*
		 * Metadata services: AWS, GCP, Azure, OpenStack, Oracle
		 * (169.254.169.254), AWS ECS task metadata (169.254.170.2), Alibaba
		 * (100.100.100.200), Azure WireServer (168.63.129.16, a public
		 * address).
		 */
		if ((b0 == 169 && b1 == 254 && b2 == 169 && b3 == 254) ||
			(b0 == 169 && b1 == 254 && b2 == 170 && b3 == 2) ||
			(b0 == 100 && b1 == 100 && b2 == 100 && b3 == 200) ||
			(b0 == 168 && b1 == 63 && b2 == 129 && b3 == 16))
			return CP_EGRESS_METADATA;
		if (b0 == 169 && b1 == 254)
			return CP_EGRESS_LINK_LOCAL;
		if (b0 == 0)
			return CP_EGRESS_UNSPECIFIED;
		if (b0 == 127)
			return CP_EGRESS_LOOPBACK;
		if (b0 == 10 ||
			(b0 == 172 && (b1 & 0xf0) == 16) ||
			(b0 == 192 && b1 == 168) ||
			(b0 == 100 && (b1 & 0xc0) == 64))
			return CP_EGRESS_PRIVATE;
		if ((b0 == 192 && b1 == 0 && b2 == 0) ||	/* IETF protocol assignments */
			(b0 == 198 && (b1 & 0xfe) == 18) || /* benchmarking */
			b0 >= 224)			/* multicast, reserved, broadcast */
			return CP_EGRESS_RESERVED;
		return CP_EGRESS_PUBLIC;
	}
	else
	{
		static const uint8 aws_metadata[16] =
		{0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54};

		if (memcmp(a, aws_metadata, 16) == 0)
			return CP_EGRESS_METADATA;
		if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
			return CP_EGRESS_LINK_LOCAL;
		if (memcmp(a, zero12, 12) == 0 && a[12] == 0 && a[13] == 0 && a[14] == 0)
			return a[15] == 1 ? CP_EGRESS_LOOPBACK : CP_EGRESS_UNSPECIFIED;
		if ((a[0] & 0xfe) == 0xfc ||	/* unique local fc00::/7 */
			(a[0] == 0xfe && (a[1] & 0xc0) == 0xc0))	/* site-local fec0::/10 */
			return CP_EGRESS_PRIVATE;
		if (a[0] == 0xff)		/* multicast */
			return CP_EGRESS_RESERVED;
		/*
		 * Local-use NAT64 64:ff9b:1::/48 (RFC 8215) reaches IPv4 addresses
		 * of the site, embedded around the "u" octet: judged as reserved,
		 * so that only the list lets a sync through it.
		 */
		if (a[0] == 0 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b &&
			a[4] == 0 && a[5] == 1)
			return CP_EGRESS_RESERVED;
		return CP_EGRESS_PUBLIC;
	}
}

/* ASCII case-insensitive equality, locale-free (safe on any thread). */
static bool
name_equal(const char *a, const char *b)
{
	for (;; a++, b++)
	{
		char		ca = (*a >= 'A' && *a <= 'Z') ? *a + ('a' - 'A') : *a;
		char		cb = (*b >= 'A' && *b <= 'Z') ? *b + ('a' - 'A') : *b;

		/* a trailing dot (a fully qualified name) is the same name */
		if (ca == '.' && a[1] == '\0' && cb == '\0')
			return true;
		if (cb == '.' && b[1] == '\0' && ca == '\0')
			return true;
		if (ca != cb)
			return false;
		if (ca == '\0')
			return true;
	}
}

CpEgressVerdict
cp_egress_judge(const CpEgressPolicy *policy, const char *host,
				const struct sockaddr *sa)
{
	uint8		a[16];
	uint8		written[16];
	CpEgressVerdict kind;

	if (!normalize(sa, a))
		return CP_EGRESS_RESERVED;	/* not IP: nothing of ours */
	kind = classify(a);
	if (cp_egress_always_refused(kind))
		return kind;
	/*
	 * An entry matches the address as normalized (the IPv4 address a
	 * 6to4, NAT64 or IPv4-compatible address carries) and also as written:
	 * a superuser who lists 2002:a00:1::/48 allows exactly that range, which
	 * normalizing alone would make unreachable (found by fuzz_egress_list).
	 */
	memcpy(written, a, 16);
	if (sa->sa_family == AF_INET6)
		memcpy(written, ((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr, 16);
	for (int i = 0; i < policy->nentries; i++)
	{
		const CpEgressEntry *e = &policy->entries[i];

		if (e->is_name ? (host != NULL && name_equal(host, e->name))
			: (in_range(a, e->addr, e->bits) ||
			   in_range(written, e->addr, e->bits)))
			return CP_EGRESS_LISTED;
	}
	return kind;
}

const char *
cp_egress_verdict_text(CpEgressVerdict v)
{
	switch (v)
	{
		case CP_EGRESS_PUBLIC:
			return "a public address";
		case CP_EGRESS_LISTED:
			return "an address calabi_push.allowed_hosts allows";
		case CP_EGRESS_LINK_LOCAL:
			return "a link-local address";
		case CP_EGRESS_METADATA:
			return "a cloud metadata service address";
		case CP_EGRESS_LOOPBACK:
			return "a loopback address";
		case CP_EGRESS_PRIVATE:
			return "a private address";
		case CP_EGRESS_UNSPECIFIED:
			return "an unspecified address";
		case CP_EGRESS_RESERVED:
			return "a reserved or multicast address";
	}
	return "an address";
}

void
cp_egress_format(const struct sockaddr *sa, char *buf, size_t len)
{
	const void *src = NULL;

	if (sa->sa_family == AF_INET)
		src = &((const struct sockaddr_in *) sa)->sin_addr;
	else if (sa->sa_family == AF_INET6)
		src = &((const struct sockaddr_in6 *) sa)->sin6_addr;
	if (src == NULL || inet_ntop(sa->sa_family, src, buf, len) == NULL)
		strlcpy(buf, "?", len);
}

bool
cp_egress_literal(const char *host, struct sockaddr_storage *ss)
{
	char		buf[INET6_ADDRSTRLEN + 2];
	size_t		len = strlen(host);

	memset(ss, 0, sizeof(*ss));
	if (len >= 2 && host[0] == '[' && host[len - 1] == ']')
	{
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) ss;

		if (len - 2 >= sizeof(buf))
			return false;
		memcpy(buf, host + 1, len - 2);
		buf[len - 2] = '\0';
		if (inet_pton(AF_INET6, buf, &in6->sin6_addr) != 1)
			return false;
		in6->sin6_family = AF_INET6;
		return true;
	}
	else
	{
		struct sockaddr_in *in = (struct sockaddr_in *) ss;

		/* inet_aton: also the forms resolvers accept ("127.1", hex, octal) */
		if (inet_aton(host, &in->sin_addr) == 0)
			return false;
		in->sin_family = AF_INET;
		return true;
	}
}


/* ---------------------------------------------------------------------
 * Parsing the list.  Plain C too: the fuzz targets in test/fuzz/ run it.
 * ---------------------------------------------------------------------
 */

/*
 * One entry of the list (len bytes at item, trimmed) into *e; false with
 * a message in err when it is not valid.
 */
static bool
parse_entry(const char *item, size_t len, CpEgressEntry *e, char *err,
			size_t errlen)
{
	char		buf[CP_EGRESS_NAME_MAX + 8];
	char	   *slash;
	char	   *addr = buf;
	uint8		raw[16];
	int			maxbits;

	memset(e, 0, sizeof(*e));
	if (len >= CP_EGRESS_NAME_MAX)
	{
		snprintf(err, errlen, "entry \"%.40s...\" is too long", item);
		return false;
	}
	memcpy(buf, item, len);
	buf[len] = '\0';

	slash = strchr(buf, '/');
	if (slash != NULL)
		*slash = '\0';
	if (addr[0] == '[')
	{
		size_t		alen = strlen(addr);

		if (alen < 3 || addr[alen - 1] != ']')
		{
			snprintf(err, errlen, "entry \"%s\" is not a valid IPv6 address", buf);
			return false;
		}
		addr[alen - 1] = '\0';
		addr++;
	}

	if (inet_pton(AF_INET, addr, raw + 12) == 1)
	{
		memcpy(e->addr, v4mapped_prefix, 12);
		memcpy(e->addr + 12, raw + 12, 4);
		maxbits = 32;
	}
	else if (inet_pton(AF_INET6, addr, raw) == 1)
	{
		memcpy(e->addr, raw, 16);
		maxbits = 128;
	}
	else
	{
		struct in_addr dummy;
		int			label = 0;

		if (slash != NULL)
		{
			snprintf(err, errlen, "\"%s\" in entry \"%s/%s\" is not an IPv4 or IPv6 address",
					 addr, addr, slash + 1);
			return false;
		}
		/* a name: letters, digits, "_", "-", dots between labels */
		if (inet_aton(buf, &dummy) != 0 || strspn(buf, "0123456789.") == len)
		{
			snprintf(err, errlen, "entry \"%s\" is not a valid address: write an IPv4 address as four decimal numbers, e.g. 192.0.2.10",
					 buf);
			return false;
		}
		for (size_t i = 0; i < len; i++)
		{
			char		c = buf[i];

			if (c == '.')
			{
				/*
				 * One trailing dot ends a fully qualified name and comes
				 * after a label; an empty label anywhere ("a..b", and "a.."
				 * too, which the fuzz target fuzz_egress_list found
				 * accepted as the name "a.") is an error.
				 */
				if (label == 0)
				{
					snprintf(err, errlen, "entry \"%s\" is not a valid host name (empty label)", buf);
					return false;
				}
				label = 0;
				continue;
			}
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				  (c >= '0' && c <= '9') || c == '_' || c == '-') ||
				++label > 63)
			{
				snprintf(err, errlen,
						 "entry \"%s\" is not a host name, an address or a CIDR range (host names are matched exactly: no wildcards)",
						 buf);
				return false;
			}
			buf[i] = pg_ascii_tolower((unsigned char) c);
		}
		if (len > 0 && buf[len - 1] == '.')
			buf[len - 1] = '\0';
		e->is_name = true;
		strlcpy(e->name, buf, sizeof(e->name));
		return true;
	}

	/* an address, or a range */
	if (slash == NULL)
		e->bits = 128;
	else
	{
		const char *b = slash + 1;
		int			bits = 0;

		if (*b == '\0' || strspn(b, "0123456789") != strlen(b) || strlen(b) > 3 ||
			(bits = atoi(b)) > maxbits)
		{
			snprintf(err, errlen, "entry \"%s/%s\" has an invalid prefix length (0 to %d)",
					 addr, b, maxbits);
			return false;
		}
		e->bits = bits + (128 - maxbits);
		/* the bits after the prefix must be zero, as for the cidr type */
		for (int i = e->bits; i < 128; i++)
			if (e->addr[i / 8] & (0x80 >> (i % 8)))
			{
				snprintf(err, errlen, "entry \"%s/%s\" has bits set to the right of the prefix length",
						 addr, b);
				return false;
			}
	}
	return true;
}

CpEgressPolicy *
cp_egress_parse_list(const char *list, char *err, size_t errlen)
{
	int			n = 1;
	CpEgressPolicy *policy;
	const char *p;

	err[0] = '\0';
	for (p = list; *p; p++)
		if (*p == ',')
			n++;
	policy = malloc(offsetof(CpEgressPolicy, entries) + sizeof(CpEgressEntry) * n);
	if (policy == NULL)
		return NULL;
	policy->nentries = 0;

	p = list;
	for (;;)
	{
		const char *end = strchr(p, ',');
		const char *stop = end ? end : p + strlen(p);

		while (p < stop && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
			p++;
		while (stop > p && (stop[-1] == ' ' || stop[-1] == '\t' ||
							stop[-1] == '\n' || stop[-1] == '\r'))
			stop--;
		/* empty entries ("a,,b", a trailing comma) are skipped */
		if (stop > p)
		{
			if (!parse_entry(p, stop - p, &policy->entries[policy->nentries],
							 err, errlen))
			{
				free(policy);
				return NULL;
			}
			policy->nentries++;
		}
		if (end == NULL)
			break;
		p = end + 1;
	}
	return policy;
}
