/*-------------------------------------------------------------------------
 *
 * destination.c
 *	  A destination's configuration.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "destination.h"

const char *
cp_destination_name(const CpDestinationConfig *cfg)
{
	return cfg->name ? cfg->name : "(unnamed)";
}
