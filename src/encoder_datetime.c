/*-------------------------------------------------------------------------
 *
 * encoder_datetime.c
 *	  The JSON schema of the date/time kinds.
 *
 * The values themselves are rendered by the static inline functions of
 * encoder_datetime.h (once per value, so kept inlinable into encoder.c).
 * The schema lives beside them because the "format" it promises (date,
 * date-time, time) is the text they write: a change to one is a change to
 * the other, and type-mapping.md pairs them row by row.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "encoder_datetime.h"

void
cp_encode_datetime_schema(CpValueKind kind, StringInfo buf)
{
	switch (kind)
	{
		case CP_KIND_DATE:
			appendStringInfoString(buf, "{\"type\":\"string\",\"format\":\"date\"}");
			break;
		case CP_KIND_TIMESTAMP:
			appendStringInfoString(buf, "{\"type\":\"string\",\"format\":\"date-time\","
								   "\"airbyte_type\":\"timestamp_without_timezone\"}");
			break;
		case CP_KIND_TIMESTAMPTZ:
			appendStringInfoString(buf, "{\"type\":\"string\",\"format\":\"date-time\","
								   "\"airbyte_type\":\"timestamp_with_timezone\"}");
			break;
		case CP_KIND_TIME:
			appendStringInfoString(buf, "{\"type\":\"string\",\"format\":\"time\","
								   "\"airbyte_type\":\"time_without_timezone\"}");
			break;
		case CP_KIND_TIMETZ:
			appendStringInfoString(buf, "{\"type\":\"string\",\"format\":\"time\","
								   "\"airbyte_type\":\"time_with_timezone\"}");
			break;
		case CP_KIND_INTERVAL:
			/* postgres-style text ("1 day 02:00:00"): no JSON-schema format */
			appendStringInfoString(buf, "{\"type\":\"string\"}");
			break;
		default:
			elog(ERROR, "value kind %d is not a date/time kind", (int) kind);
	}
}
