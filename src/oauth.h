/*-------------------------------------------------------------------------
 *
 * oauth.h
 *	  OAuth2 client credentials (RFC 6749 4.4) for a destination's client:
 *	  the access token it sends as its bearer token.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_OAUTH_H
#define CALABI_PUSH_OAUTH_H

#include "postgres.h"

#include "http.h"

/* A token response must fit whole (JWT access tokens can be large). */
#define CP_HTTP_TOKEN_BODY_MAX	65536

/* Is there an access token that is not about to expire? */
extern bool cp_oauth_token_usable(CpHttpClient *client);

/* Forget the access token (wiped): the next call fetches a new one. */
extern void cp_oauth_drop_token(CpHttpClient *client);

/*
 * Fetch a new access token from the token endpoint.  On failure fills
 * result (outcome and message, status 0 since the ingest endpoint was not
 * reached) and returns false.
 */
extern bool cp_oauth_fetch_token(CpHttpClient *client, CpHttpResult *result);

#endif							/* CALABI_PUSH_OAUTH_H */
