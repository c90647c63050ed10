/*-------------------------------------------------------------------------
 *
 * encoder_datetime.h
 *	  date, timestamp, timestamptz, time, timetz and interval values as JSON,
 *	  per shared/type-mapping.md: the encoder's date/time rendering.
 *
 * The renderers are written from the binary value (PostgreSQL's own
 * calendar helpers, no output function), so DateStyle, IntervalStyle and
 * TimeZone never reach them.
 *
 * They are static inline here, not functions of encoder_datetime.c, because
 * cp_encode_value (encoder.c) calls them once per value: visible to it they
 * compile exactly as when they lived in encoder.c -- inlined into its switch,
 * cp_encode_timestamp at most a direct call -- instead of a call through the
 * shared library's PLT per value.  encoder_datetime.c holds what is needed
 * once per column: the JSON schema of each date/time kind.
 *
 * Only encoder.c renders with these: cp_encode_timestamp's day cache is a
 * static of each file that calls it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_ENCODER_DATETIME_H
#define CALABI_PUSH_ENCODER_DATETIME_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "encoder.h"

/*
 * Append the JSON schema of a date/time kind (CP_KIND_DATE to
 * CP_KIND_INTERVAL) for cp_encode_type_schema.
 */
extern void cp_encode_datetime_schema(CpValueKind kind, StringInfo buf);

/* Write v with at least width digits (zero-padded); return the new end. */
static inline char *
cp_put_uint_padded(char *p, uint32 v, int width)
{
	char		tmp[10];
	int			n = 0;

	do
	{
		tmp[n++] = '0' + v % 10;
		v /= 10;
	} while (v != 0);
	while (n < width)
		tmp[n++] = '0';
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}

static inline void
cp_encode_date(StringInfo buf, DateADT date)
{
	struct pg_tm tm;
	char		text[MAXDATELEN + 1];

	if (DATE_NOT_FINITE(date))
	{
		appendBinaryStringInfo(buf, "null", 4);
		return;
	}
	j2date(date + POSTGRES_EPOCH_JDATE, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
	/* ISO style is the type-mapping form, " BC" suffix included */
	EncodeDateOnly(&tm, USE_ISO_DATES, text);
	cp_append_json_string(buf, text, strlen(text));
}

/*
 * timestamp and timestamptz: ISO 8601 with a 'T', always six fraction
 * digits, 'Z' for timestamptz (converted to UTC), " BC" after everything.
 */
static inline void
cp_encode_timestamp(StringInfo buf, Timestamp ts, bool with_zone)
{
	/*
	 * The date part of the day last encoded ("YYYY-MM-DD"): the rows of a
	 * load or a transaction mostly share their days, and the calendar
	 * arithmetic is half of the cost.  The time of day is plain division,
	 * as timestamp2tm does it.
	 */
	static int64 cached_day = PG_INT64_MIN;
	static char cached_date[16];
	static int	cached_date_len;
	static bool cached_bc;
	int64		day;
	int64		tod;
	char	   *p;

	if (TIMESTAMP_NOT_FINITE(ts))
	{
		appendBinaryStringInfo(buf, "null", 4);
		return;
	}
	day = ts / USECS_PER_DAY;
	tod = ts % USECS_PER_DAY;
	if (tod < 0)
	{
		tod += USECS_PER_DAY;
		day--;
	}
	if (day != cached_day)
	{
		struct pg_tm tm;
		fsec_t		fsec;

		/* no zone argument: the broken-down time is UTC */
		if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("timestamp out of range")));
		cached_bc = tm.tm_year <= 0;
		p = cp_put_uint_padded(cached_date, cached_bc ? -(tm.tm_year - 1) : tm.tm_year, 4);
		*p++ = '-';
		p = cp_put_uint_padded(p, tm.tm_mon, 2);
		*p++ = '-';
		p = cp_put_uint_padded(p, tm.tm_mday, 2);
		cached_date_len = p - cached_date;
		cached_day = day;
	}

	enlargeStringInfo(buf, 48);
	p = buf->data + buf->len;
	*p++ = '"';
	memcpy(p, cached_date, cached_date_len);
	p += cached_date_len;
	*p++ = 'T';
	p = cp_put_uint_padded(p, (int) (tod / USECS_PER_HOUR), 2);
	tod %= USECS_PER_HOUR;
	*p++ = ':';
	p = cp_put_uint_padded(p, (int) (tod / USECS_PER_MINUTE), 2);
	tod %= USECS_PER_MINUTE;
	*p++ = ':';
	p = cp_put_uint_padded(p, (int) (tod / USECS_PER_SEC), 2);
	*p++ = '.';
	p = cp_put_uint_padded(p, (int) (tod % USECS_PER_SEC), 6);
	if (with_zone)
		*p++ = 'Z';
	if (cached_bc)
	{
		memcpy(p, " BC", 3);
		p += 3;
	}
	*p++ = '"';
	*p = '\0';
	buf->len = p - buf->data;
}

/* time as PostgreSQL prints it: the fraction only when it is not zero */
static inline int
cp_time_text(struct pg_tm *tm, fsec_t fsec, char *text)
{
	EncodeTimeOnly(tm, fsec, false, 0, USE_ISO_DATES, text);
	return strlen(text);
}

static inline void
cp_encode_time(StringInfo buf, TimeADT time)
{
	struct pg_tm tm;
	fsec_t		fsec;
	char		text[MAXDATELEN + 1];

	time2tm(time, &tm, &fsec);
	cp_append_json_string(buf, text, cp_time_text(&tm, fsec, text));
}

/* timetz: the time, then its stored offset as Z or +HH:MM[:SS] */
static inline void
cp_encode_timetz(StringInfo buf, TimeTzADT *timetz)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			zone;
	int			east;
	char		text[MAXDATELEN + 16];
	char	   *p;

	timetz2tm(timetz, &tm, &fsec, &zone);
	p = text + cp_time_text(&tm, fsec, text);

	/* PostgreSQL stores the zone in seconds west of Greenwich */
	east = -zone;
	if (east == 0)
		*p++ = 'Z';
	else
	{
		int			abs_east = east < 0 ? -east : east;

		*p++ = east < 0 ? '-' : '+';
		p = cp_put_uint_padded(p, abs_east / SECS_PER_HOUR, 2);
		*p++ = ':';
		p = cp_put_uint_padded(p, (abs_east / SECS_PER_MINUTE) % MINS_PER_HOUR, 2);
		if (abs_east % SECS_PER_MINUTE != 0)
		{
			*p++ = ':';
			p = cp_put_uint_padded(p, abs_east % SECS_PER_MINUTE, 2);
		}
	}
	cp_append_json_string(buf, text, p - text);
}

static inline void
cp_encode_interval(StringInfo buf, Interval *span)
{
	char		text[MAXDATELEN + 1];

	/* infinite intervals (PG17) are written like infinite dates: null */
	if (!cp_interval_is_finite(span))
	{
		appendBinaryStringInfo(buf, "null", 4);
		return;
	}
	cp_encode_interval_postgres(span, text);
	cp_append_json_string(buf, text, strlen(text));
}

#endif							/* CALABI_PUSH_ENCODER_DATETIME_H */
