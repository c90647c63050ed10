/*-------------------------------------------------------------------------
 *
 * http_egress.h
 *	  Where a destination's client may connect: calabi_push.allowed_hosts
 *	  (egress.c) applied to every connection curl makes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_HTTP_EGRESS_H
#define CALABI_PUSH_HTTP_EGRESS_H

#include "postgres.h"

#include <curl/curl.h>

#include "http.h"

/*
 * What an easy handle connects to, for the open-socket callback: the proxy
 * when there is one, else the URL's host.
 */
typedef struct CpConnectTarget
{
	struct CpHttpClient *client;
	const char *host;			/* name or address, without brackets */
	bool		proxy;
} CpConnectTarget;

/* CURLOPT_OPENSOCKETFUNCTION; its data is the handle's CpConnectTarget. */
extern curl_socket_t cp_http_opensocket_cb(void *clientp, curlsocktype purpose,
										   struct curl_sockaddr *address);

/*
 * Take this process's calabi_push.allowed_hosts into the client when it
 * changed since the client last did.  Only while none of its transfers is
 * in flight.
 */
extern void cp_http_refresh_egress(CpHttpClient *client);

#endif							/* CALABI_PUSH_HTTP_EGRESS_H */
