/*-------------------------------------------------------------------------
 *
 * destination.h
 *	  A destination's configuration, as the worker reads it from the catalog
 *	  (catalog.c) and hands it to its HTTPS client (http.c): its defaults
 *	  and its rules.
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

/*
 * The options a destination leaves out; calabi_push._destination_defaults()
 * gives them to the SQL functions, which store them.
 */
#define CP_DESTINATION_DEFAULT_ALLOW_HTTP			false
#define CP_DESTINATION_DEFAULT_COMPRESSION			"gzip"
#define CP_DESTINATION_DEFAULT_CONNECT_TIMEOUT_MS	10000
#define CP_DESTINATION_DEFAULT_REQUEST_TIMEOUT_MS	60000

/* Its name for messages; "(unnamed)" when it has none. */
extern const char *cp_destination_name(const CpDestinationConfig *cfg);

/*
 * ERROR unless cfg follows the rules on a whole configuration: the schemes
 * of the URL, token_url and proxy; the options that go together or
 * exclude each other; a token that can follow "Bearer ".  Rules about
 * values that are NULL hold.
 */
extern void cp_destination_check(const CpDestinationConfig *cfg);
/* One of those rules: the scheme of the URL, or of token_url. */
extern void cp_destination_check_endpoint(bool token_url, const char *url,
										  bool allow_http);

#endif							/* CALABI_PUSH_DESTINATION_H */
