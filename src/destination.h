/*-------------------------------------------------------------------------
 *
 * destination.h
 *	  A destination's configuration, as the worker reads it from the catalog
 *	  (catalog.c) and hands it to its HTTPS client (http.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_DESTINATION_H
#define CALABI_PUSH_DESTINATION_H

#include "postgres.h"

/* Everything needed to reach a destination; strings may be NULL. */
typedef struct CpDestinationConfig
{
	char	   *name;
	char	   *url;			/* full URL; nothing is appended */
	char	   *token;			/* static bearer token (secret) */
	char	   *ca_file;		/* CA bundle path ... */
	char	   *ca_pem;			/* ... or PEM text; neither: system CAs */
	char	   *client_cert;	/* PEM text, mutual TLS */
	char	   *client_key;		/* PEM text (secret) */
	char	   *proxy;			/* http://, https://, socks5://, socks5h:// URL */
	bool		allow_http;		/* plain http:// allowed (loopback tests) */
	int			connect_timeout_ms;
	int			request_timeout_ms;
	/* OAuth2 client credentials grant; token_url set means it is in use */
	char	   *token_url;
	char	   *client_id;
	char	   *client_secret;	/* secret */
	char	   *scope;
} CpDestinationConfig;

/* Its name for messages; "(unnamed)" when it has none. */
extern const char *cp_destination_name(const CpDestinationConfig *cfg);

#endif							/* CALABI_PUSH_DESTINATION_H */
