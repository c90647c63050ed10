/*-------------------------------------------------------------------------
 *
 * http_egress.c
 *	  Where a destination's client may connect.
 *
 * Where a sync may connect is calabi_push.allowed_hosts' decision (egress.c):
 * curl's open-socket callback judges every address it is about to connect
 * to, after name resolution, for the destination, the token endpoint and
 * the proxy alike, and refuses with CURL_SOCKET_BAD.  The callback may run
 * on the sending thread, so it reads no setting: each client judges by its
 * own copy of the parsed list, taken at the start of every call (http.c;
 * no transfer of the client is in flight then, so nothing reads the copy
 * while it is replaced).  The worker reloads the setting on SIGHUP between
 * batches; when the list changed, the client also drops its open
 * connections, which were judged by the old list.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include "egress.h"
#include "http_egress.h"
#include "http_sender.h"
#include "http_transport.h"

/*
 * Every connection curl makes, after name resolution: judged by the
 * client's copy of calabi_push.allowed_hosts.  Plain C only (it may run on
 * the sending thread); a refusal is noted for
 * cp_http_describe_transfer_error.
 */
curl_socket_t
cp_http_opensocket_cb(void *clientp, curlsocktype purpose,
					  struct curl_sockaddr *address)
{
	CpConnectTarget *target = (CpConnectTarget *) clientp;
	CpHttpClient *client = target->client;
	CpEgressVerdict verdict;
	char		addr[INET6_ADDRSTRLEN];

	/*
	 * The suggestion in a refusal is the host as configured: a name entry
	 * allows every address of the name, one address entry might not.
	 */
	verdict = cp_egress_judge(client->egress, target->host, &address->addr);
	if (cp_egress_allowed(verdict))
		return socket(address->family, address->socktype, address->protocol);

	cp_egress_format(&address->addr, addr, sizeof(addr));
	if (cp_egress_always_refused(verdict))
		snprintf(client->egress_refusal, sizeof(client->egress_refusal),
				 "connection to %s\"%s\" (host \"%s\") refused: %s is never allowed",
				 target->proxy ? "proxy " : "", addr, target->host,
				 cp_egress_verdict_text(verdict));
	else
		snprintf(client->egress_refusal, sizeof(client->egress_refusal),
				 "connection to %s\"%s\" (host \"%s\") refused by calabi_push.allowed_hosts: "
				 "%s; a superuser may allow it: ALTER SYSTEM SET calabi_push.allowed_hosts = '..., %s'; SELECT pg_reload_conf()",
				 target->proxy ? "proxy " : "", addr, target->host,
				 cp_egress_verdict_text(verdict), target->host);
	return CURL_SOCKET_BAD;
}

/*
 * With a proxy, curl connects to the proxy only, and the proxy reaches the
 * target: a target given as a literal address is judged here, before any
 * transfer (a target name is resolved by the proxy, out of our sight).
 */
static void
judge_proxied_target(CpHttpClient *client, const char *what, const char *host)
{
	struct sockaddr_storage ss;
	CpEgressVerdict verdict;
	char		addr[INET6_ADDRSTRLEN];
	char		bracketed[INET6_ADDRSTRLEN + 2];

	if (client->target_refusal[0] != '\0' || host == NULL)
		return;
	/* cp_egress_literal takes IPv6 in brackets, as in a URL */
	snprintf(bracketed, sizeof(bracketed), strchr(host, ':') ? "[%s]" : "%s", host);
	if (!cp_egress_literal(bracketed, &ss))
		return;
	verdict = cp_egress_judge(client->egress, NULL, (struct sockaddr *) &ss);
	if (cp_egress_allowed(verdict))
		return;
	cp_egress_format((struct sockaddr *) &ss, addr, sizeof(addr));
	snprintf(client->target_refusal, sizeof(client->target_refusal),
			 "%s \"%s\" (through the proxy) refused%s: %s%s%s%s",
			 what, addr,
			 cp_egress_always_refused(verdict) ? "" : " by calabi_push.allowed_hosts",
			 cp_egress_verdict_text(verdict),
			 cp_egress_always_refused(verdict) ? " is never allowed" :
			 "; a superuser may allow it: ALTER SYSTEM SET calabi_push.allowed_hosts = '..., ",
			 cp_egress_always_refused(verdict) ? "" : addr,
			 cp_egress_always_refused(verdict) ? "" : "'; SELECT pg_reload_conf()");
}

/*
 * Take this process's calabi_push.allowed_hosts, when it changed since the
 * client last did.  Only while no transfer of the client is in flight (the
 * open-socket callback reads client->egress).  Connections opened under
 * the old list are closed with the multi handle that caches them, so that
 * none is reused without being judged by the new one.
 */
void
cp_http_refresh_egress(CpHttpClient *client)
{
	uint64		generation;
	const CpEgressPolicy *current = cp_egress_current(&generation);
	CpEgressPolicy *old = client->egress;

	CpEgressPolicy *copy;

	Assert(client->attached == NULL && !cp_http_sender_has(client));
	if (old != NULL && generation == client->egress_generation)
		return;
	copy = cp_egress_copy(current, client->cxt);
	/* first the new multi handle: if that fails, the next call tries again */
	if (old != NULL)
		cp_http_make_multi(client);
	client->egress = copy;
	client->egress_generation = generation;
	if (old != NULL)
		pfree(old);
	client->target_refusal[0] = '\0';
	if (client->cfg.proxy != NULL && client->cfg.proxy[0] != '\0')
	{
		judge_proxied_target(client, "destination URL host", client->url_host);
		judge_proxied_target(client, "token_url host", client->token_url_host);
	}
}
