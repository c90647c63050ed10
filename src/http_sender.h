/*-------------------------------------------------------------------------
 *
 * http_sender.h
 *	  The sending thread: drives a started POST (cp_http_post_start) to its
 *	  end while the worker reads on.  One per process, started on first use.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_HTTP_SENDER_H
#define CALABI_PUSH_HTTP_SENDER_H

#include "postgres.h"

#include <curl/curl.h>

#include "http.h"

/*
 * Hand the attached transfer of client's ingest handle to the thread.
 * False when there is no thread, or it has another client's transfer: then
 * the worker drives it.
 */
extern bool cp_http_sender_hand_over(CpHttpClient *client);

/* Does the thread have client's transfer (finished or not)? */
extern bool cp_http_sender_has(CpHttpClient *client);

/*
 * Wait, responsive to interrupts, until the thread is done with client's
 * transfer.  True when it is over (*rc its result); false when it was taken
 * back unfinished, for the worker to drive on.
 */
extern bool cp_http_sender_await(CpHttpClient *client, CURLcode *rc);

/*
 * Take the transfer back from the thread, pausing it if need be.  True when
 * it is over, *rc its result.  Safe anywhere: pthread calls only.
 */
extern bool cp_http_sender_take_back(CURLcode *rc);

#endif							/* CALABI_PUSH_HTTP_SENDER_H */
