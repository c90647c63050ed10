/*-------------------------------------------------------------------------
 *
 * encoder.c
 *	  PostgreSQL values to JSON, per shared/type-mapping.md.
 *
 * The common types are written straight from their binary form: that is both
 * what makes the output independent of the session's settings and what makes
 * the encoder faster than row_to_json (no output function call, no palloc per
 * value).  Everything else goes through the type's own output function while
 * the settings that function may read are pinned to fixed values.
 *
 * The date/time types are rendered by encoder_datetime.h, inline here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/shortest_dec.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/arrayaccess.h"
#include "utils/builtins.h"
#include "utils/cash.h"
#include "utils/date.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/pg_locale.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "encoder.h"
#include "encoder_datetime.h"

/*
 * Settings pinned while encoding.  The first five are what type-mapping.md
 * names for "the type's own output function's text"; search_path makes the
 * text of reg* types (regclass, regtype, ...) the same in every session:
 * schema-qualified unless the object lives in pg_catalog.
 */
static const struct
{
	const char *name;
	const char *value;
}			pinned_settings[] =
{
	{"DateStyle", "ISO, YMD"},
	{"IntervalStyle", "postgres"},
	{"TimeZone", "UTC"},
	{"extra_float_digits", "1"},
	{"bytea_output", "hex"},
	{"search_path", "pg_catalog, pg_temp"},
};

/*
 * money is written with the fraction digits of the server's configured
 * lc_monetary, not of whatever the session SET: go back to the value the
 * session started with (postgresql.conf, or ALTER DATABASE/ROLE ... SET).
 */
static void
pin_configured_lc_monetary(void)
{
	const char *monetary = GetConfigOptionResetString("lc_monetary");

	if (monetary != NULL)
		(void) set_config_option("lc_monetary", monetary,
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
}

int
cp_encoder_pin_settings(void)
{
	int			nestlevel = NewGUCNestLevel();

	for (int i = 0; i < (int) lengthof(pinned_settings); i++)
		(void) set_config_option(pinned_settings[i].name,
								 pinned_settings[i].value,
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	pin_configured_lc_monetary();
	return nestlevel;
}

void
cp_encoder_unpin_settings(int nestlevel)
{
	AtEOXact_GUC(true, nestlevel);
}

/*
 * The fraction digits cash_out uses under the configured lc_monetary,
 * whatever the caller has pinned or SET at this moment.
 */
static int
money_fraction_digits(void)
{
	int			nestlevel = NewGUCNestLevel();
	int			digits;

	pin_configured_lc_monetary();
	digits = PGLC_localeconv()->frac_digits;
	AtEOXact_GUC(true, nestlevel);

	/* cash_out's own fallback for locales that leave it unset */
	if (digits < 0 || digits > 10)
		digits = 2;
	return digits;
}

void
cp_type_encoder_init(CpTypeEncoder *enc, Oid typid, MemoryContext mcxt)
{
	int32		typmod = -1;
	Oid			basetypid = getBaseTypeAndTypmod(typid, &typmod);
	Oid			elemtypid;

	memset(enc, 0, sizeof(*enc));
	enc->typid = typid;
	enc->basetypid = basetypid;

	switch (basetypid)
	{
		case INT2OID:
			enc->kind = CP_KIND_INT2;
			return;
		case INT4OID:
			enc->kind = CP_KIND_INT4;
			return;
		case INT8OID:
			enc->kind = CP_KIND_INT8;
			return;
		case OIDOID:
			enc->kind = CP_KIND_OID;
			return;
		case FLOAT4OID:
			enc->kind = CP_KIND_FLOAT4;
			return;
		case FLOAT8OID:
			enc->kind = CP_KIND_FLOAT8;
			return;
		case NUMERICOID:
			enc->kind = CP_KIND_NUMERIC;
			return;
		case CASHOID:
			enc->kind = CP_KIND_MONEY;
			enc->money_digits = money_fraction_digits();
			return;
		case BOOLOID:
			enc->kind = CP_KIND_BOOL;
			return;
		case BYTEAOID:
			enc->kind = CP_KIND_BYTEA;
			return;
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
			enc->kind = CP_KIND_TEXT;
			return;
		case NAMEOID:
			enc->kind = CP_KIND_NAME;
			return;
		case DATEOID:
			enc->kind = CP_KIND_DATE;
			return;
		case TIMESTAMPOID:
			enc->kind = CP_KIND_TIMESTAMP;
			return;
		case TIMESTAMPTZOID:
			enc->kind = CP_KIND_TIMESTAMPTZ;
			return;
		case TIMEOID:
			enc->kind = CP_KIND_TIME;
			return;
		case TIMETZOID:
			enc->kind = CP_KIND_TIMETZ;
			return;
		case INTERVALOID:
			enc->kind = CP_KIND_INTERVAL;
			return;
		default:
			break;
	}

	/* true arrays, and the array-like int2vector and oidvector */
	elemtypid = get_element_type(basetypid);
	if (OidIsValid(elemtypid))
	{
		enc->kind = CP_KIND_ARRAY;
		enc->elem = MemoryContextAlloc(mcxt, sizeof(CpTypeEncoder));
		cp_type_encoder_init(enc->elem, elemtypid, mcxt);
		get_typlenbyvalalign(elemtypid, &enc->elmlen, &enc->elmbyval,
							 &enc->elmalign);
		return;
	}

	/* composite, enum, range, geometric, network, extension types, ... */
	{
		Oid			outfuncoid;
		bool		isvarlena;

		enc->kind = CP_KIND_OTHER;
		getTypeOutputInfo(basetypid, &outfuncoid, &isvarlena);
		fmgr_info_cxt(outfuncoid, &enc->outfunc, mcxt);
	}
}

/*
 * JSON string escaping.  Bytes that need no escape are copied in runs:
 * most text has none, and copying byte by byte is what makes escape_json
 * slow.  Multi-byte UTF-8 is valid in a JSON string as it is.
 */
static const char json_escape_table[256] = {
	/* control characters: 'u' for \u00XX, or the short escape letter */
	'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
	'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
	0, 0, '"', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '\\', 0, 0, 0,
	/* the rest (0x60-0xff) are zero */
};

static const char hex_digits[] = "0123456789abcdef";

/*
 * A bounded encoding (cp_encode_row_bounded) in progress: the greatest
 * buf->len it may reach (-1: none), and whether it would have gone past.
 * Only the appends whose size a value decides (strings, bytea) can grow a
 * buffer by much at once: they check before they enlarge it, and the
 * loops over columns and array elements check after each, so a bounded
 * buffer never grows much past its bound -- never to the 1 GB at which
 * enlargeStringInfo fails with "Cannot enlarge string buffer", which would
 * only restart the worker to fail again on the same row.
 */
static int64 bound_len = -1;
static bool bound_exceeded = false;

/* what an unchecked append (a number, numeric_out's text) may add past it */
#define BOUND_SLACK (1024 * 1024)

static inline bool
over_bound(StringInfo buf, int64 more)
{
	if (likely(bound_len < 0))
		return false;
	if (bound_exceeded || (int64) buf->len + more > bound_len)
	{
		bound_exceeded = true;
		return true;
	}
	return false;
}

void
cp_append_json_string(StringInfo buf, const char *str, int len)
{
	const unsigned char *p = (const unsigned char *) str;
	const unsigned char *end = p + len;
	const unsigned char *run = p;

	/* escaped, it takes at least len + 2 bytes, and grows as it goes */
	if (over_bound(buf, (int64) len + 2))
		return;
	enlargeStringInfo(buf, len + 2);
	buf->data[buf->len++] = '"';
	for (; p < end; p++)
	{
		char		esc = json_escape_table[*p];

		if (likely(esc == 0))
			continue;
		if (over_bound(buf, (p - run) + 6 + 1))
			return;
		if (p > run)
			appendBinaryStringInfo(buf, (const char *) run, p - run);
		if (esc == 'u')
		{
			char		u[6] = {'\\', 'u', '0', '0', hex_digits[*p >> 4],
			hex_digits[*p & 0xf]};

			appendBinaryStringInfo(buf, u, 6);
		}
		else
		{
			char		e[2] = {'\\', esc};

			appendBinaryStringInfo(buf, e, 2);
		}
		run = p + 1;
	}
	if (over_bound(buf, (p - run) + 1))
		return;
	if (p > run)
		appendBinaryStringInfo(buf, (const char *) run, p - run);
	appendStringInfoCharMacro(buf, '"');
}

static inline void
append_literal(StringInfo buf, const char *lit, int len)
{
	appendBinaryStringInfo(buf, lit, len);
}

#define APPEND_LITERAL(buf, lit) append_literal((buf), (lit), sizeof(lit) - 1)

/*
 * A number rendered in place: make room for at most maxlen bytes plus the
 * terminator, let fn write them, and take the length it reports.
 */
#define APPEND_IN_PLACE(buf, maxlen, expr_writing_at_p) \
	do { \
		char	   *p; \
		enlargeStringInfo((buf), (maxlen) + 1); \
		p = (buf)->data + (buf)->len; \
		(buf)->len += (expr_writing_at_p); \
	} while (0)

static void
encode_money(StringInfo buf, Cash value, int digits)
{
	uint64		magnitude;
	uint64		scale = 1;
	char		frac[16];

	for (int i = 0; i < digits; i++)
		scale *= 10;
	/* through uint64 so that INT64_MIN has a magnitude */
	magnitude = value < 0 ? -(uint64) value : (uint64) value;
	if (value < 0)
		appendStringInfoCharMacro(buf, '-');
	APPEND_IN_PLACE(buf, MAXINT8LEN, pg_ulltoa_n(magnitude / scale, p));
	if (digits > 0)
	{
		uint64		rem = magnitude % scale;

		appendStringInfoCharMacro(buf, '.');
		for (int i = digits - 1; i >= 0; i--)
		{
			frac[i] = '0' + rem % 10;
			rem /= 10;
		}
		appendBinaryStringInfo(buf, frac, digits);
	}
	buf->data[buf->len] = '\0';
}

static void
encode_bytea(StringInfo buf, Datum value)
{
	bytea	   *b = DatumGetByteaPP(value);
	const unsigned char *src = (const unsigned char *) VARDATA_ANY(b);
	int			len = VARSIZE_ANY_EXHDR(b);
	char	   *p;

	/* "\\x" + two hex digits a byte, within quotes */
	if (over_bound(buf, 2 * (int64) len + 6))
	{
		if ((Pointer) b != DatumGetPointer(value))
			pfree(b);
		return;
	}
	enlargeStringInfo(buf, 2 * len + 6);
	p = buf->data + buf->len;
	*p++ = '"';
	*p++ = '\\';
	*p++ = '\\';
	*p++ = 'x';
	for (int i = 0; i < len; i++)
	{
		*p++ = hex_digits[src[i] >> 4];
		*p++ = hex_digits[src[i] & 0xf];
	}
	*p++ = '"';
	*p = '\0';
	buf->len = p - buf->data;

	if ((Pointer) b != DatumGetPointer(value))
		pfree(b);
}

static void
encode_text(StringInfo buf, Datum value)
{
	text	   *t = DatumGetTextPP(value);

	cp_append_json_string(buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	if ((Pointer) t != DatumGetPointer(value))
		pfree(t);
}

static void
encode_numeric(StringInfo buf, Datum value)
{
	/*
	 * A short-header numeric in place of DatumGetNumeric's palloc'd copy.
	 * A TOAST pointer has a one-byte header too: it goes the long way.
	 */
	union
	{
		int32		align;
		char		bytes[VARHDRSZ + 128];
	}			local;
	Pointer		ptr = DatumGetPointer(value);
	Numeric		num;

	if (VARATT_IS_SHORT(ptr) && !VARATT_IS_EXTERNAL(ptr))
	{
		Size		len = VARSIZE_SHORT(ptr) - VARHDRSZ_SHORT;

		SET_VARSIZE(local.bytes, len + VARHDRSZ);
		memcpy(VARDATA(local.bytes), VARDATA_SHORT(ptr), len);
		num = (Numeric) local.bytes;
	}
	else
		num = DatumGetNumeric(value);

	if (numeric_is_nan(num) || numeric_is_inf(num))
		APPEND_LITERAL(buf, "null");
	else
	{
		/* numeric_out's text is the exact decimal, and valid JSON */
		char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out,
															NumericGetDatum(num)));

		appendStringInfoString(buf, s);
		pfree(s);
	}
	if ((Pointer) num != ptr && (Pointer) num != local.bytes)
		pfree(num);
}

/* One dimension of an array; elements come from the iterator in order. */
static void
encode_array_dimension(const CpTypeEncoder *enc, StringInfo buf,
					   array_iter *iter, int ndim, const int *dims,
					   int dim, int *index)
{
	appendStringInfoCharMacro(buf, '[');
	for (int i = 0; i < dims[dim]; i++)
	{
		if (over_bound(buf, 0))
			return;
		if (i > 0)
			appendStringInfoCharMacro(buf, ',');
		if (dim < ndim - 1)
			encode_array_dimension(enc, buf, iter, ndim, dims, dim + 1, index);
		else
		{
			bool		isnull;
			Datum		elem = array_iter_next(iter, &isnull, (*index)++,
											   enc->elmlen, enc->elmbyval,
											   enc->elmalign);

			if (isnull)
				APPEND_LITERAL(buf, "null");
			else
				cp_encode_value(enc->elem, buf, elem);
		}
	}
	appendStringInfoCharMacro(buf, ']');
}

static void
encode_array(const CpTypeEncoder *enc, StringInfo buf, Datum value)
{
	AnyArrayType *array = DatumGetAnyArrayP(value);
	int			ndim = AARR_NDIM(array);
	const int  *dims = AARR_DIMS(array);

	check_stack_depth();		/* arrays of domains over arrays nest */

	/* lower bounds are dropped: JSON arrays always start at their first */
	if (ndim <= 0 || ArrayGetNItems(ndim, dims) == 0)
		APPEND_LITERAL(buf, "[]");
	else
	{
		array_iter	iter;
		int			index = 0;

		array_iter_setup(&iter, array);
		encode_array_dimension(enc, buf, &iter, ndim, dims, 0, &index);
	}

	/* free a detoasted copy, never an expanded array we were handed */
	if (!VARATT_IS_EXTERNAL_EXPANDED(DatumGetPointer(value)) &&
		(Pointer) array != DatumGetPointer(value))
		pfree(array);
}

void
cp_encode_value(const CpTypeEncoder *enc, StringInfo buf, Datum value)
{
	switch (enc->kind)
	{
		case CP_KIND_INT2:
			APPEND_IN_PLACE(buf, 6, pg_ltoa(DatumGetInt16(value), p));
			break;
		case CP_KIND_INT4:
			APPEND_IN_PLACE(buf, 11, pg_ltoa(DatumGetInt32(value), p));
			break;
		case CP_KIND_INT8:
			APPEND_IN_PLACE(buf, MAXINT8LEN, pg_lltoa(DatumGetInt64(value), p));
			break;
		case CP_KIND_OID:
			APPEND_IN_PLACE(buf, 10, pg_ultoa_n(DatumGetObjectId(value), p));
			buf->data[buf->len] = '\0';
			break;
		case CP_KIND_FLOAT4:
			{
				float4		f = DatumGetFloat4(value);

				if (isnan(f) || isinf(f))
					APPEND_LITERAL(buf, "null");
				else
					APPEND_IN_PLACE(buf, FLOAT_SHORTEST_DECIMAL_LEN,
									float_to_shortest_decimal_buf(f, p));
				break;
			}
		case CP_KIND_FLOAT8:
			{
				float8		f = DatumGetFloat8(value);

				if (isnan(f) || isinf(f))
					APPEND_LITERAL(buf, "null");
				else
					APPEND_IN_PLACE(buf, DOUBLE_SHORTEST_DECIMAL_LEN,
									double_to_shortest_decimal_buf(f, p));
				break;
			}
		case CP_KIND_NUMERIC:
			encode_numeric(buf, value);
			break;
		case CP_KIND_MONEY:
			encode_money(buf, DatumGetCash(value), enc->money_digits);
			break;
		case CP_KIND_BOOL:
			if (DatumGetBool(value))
				APPEND_LITERAL(buf, "true");
			else
				APPEND_LITERAL(buf, "false");
			break;
		case CP_KIND_BYTEA:
			encode_bytea(buf, value);
			break;
		case CP_KIND_TEXT:
			encode_text(buf, value);
			break;
		case CP_KIND_NAME:
			{
				const char *name = NameStr(*DatumGetName(value));

				cp_append_json_string(buf, name, strlen(name));
				break;
			}
		case CP_KIND_DATE:
			cp_encode_date(buf, DatumGetDateADT(value));
			break;
		case CP_KIND_TIMESTAMP:
			cp_encode_timestamp(buf, DatumGetTimestamp(value), false);
			break;
		case CP_KIND_TIMESTAMPTZ:
			cp_encode_timestamp(buf, DatumGetTimestampTz(value), true);
			break;
		case CP_KIND_TIME:
			cp_encode_time(buf, DatumGetTimeADT(value));
			break;
		case CP_KIND_TIMETZ:
			cp_encode_timetz(buf, DatumGetTimeTzADTP(value));
			break;
		case CP_KIND_INTERVAL:
			cp_encode_interval(buf, DatumGetIntervalP(value));
			break;
		case CP_KIND_ARRAY:
			encode_array(enc, buf, value);
			break;
		case CP_KIND_OTHER:
			{
				char	   *text = OutputFunctionCall((FmgrInfo *) &enc->outfunc,
													  value);

				cp_append_json_string(buf, text, strlen(text));
				pfree(text);
				break;
			}
	}
}

CpRowEncoder *
cp_row_encoder_create(TupleDesc tupdesc, MemoryContext mcxt)
{
	MemoryContext oldcontext = MemoryContextSwitchTo(mcxt);
	CpRowEncoder *enc = palloc0(sizeof(CpRowEncoder));
	StringInfoData key;

	enc->columns = palloc0(sizeof(CpColumnEncoder) * Max(tupdesc->natts, 1));
	initStringInfo(&key);
	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(tupdesc, i);
		CpColumnEncoder *col;

		if (attr->attisdropped)
			continue;
		col = &enc->columns[enc->ncolumns++];
		col->attnum = i + 1;
		col->name = pstrdup(NameStr(attr->attname));

		/* the "name": prefix is the same for every row: build it once */
		resetStringInfo(&key);
		cp_append_json_string(&key, col->name, strlen(col->name));
		appendStringInfoChar(&key, ':');
		col->key = pstrdup(key.data);
		col->keylen = key.len;

		cp_type_encoder_init(&col->type, attr->atttypid, mcxt);
	}
	pfree(key.data);
	MemoryContextSwitchTo(oldcontext);
	return enc;
}

/* The row as a JSON object, without the columns omit marks (when given). */
static inline void
encode_row(const CpRowEncoder *enc, StringInfo buf, const Datum *values,
		   const bool *isnull, const bool *omit)
{
	bool		first = true;

	appendStringInfoCharMacro(buf, '{');
	for (int i = 0; i < enc->ncolumns; i++)
	{
		const CpColumnEncoder *col = &enc->columns[i];
		int			off = col->attnum - 1;

		if (omit != NULL && omit[i])
			continue;
		if (over_bound(buf, col->keylen + 1))
			return;
		if (!first)
			appendStringInfoCharMacro(buf, ',');
		first = false;
		appendBinaryStringInfo(buf, col->key, col->keylen);
		if (isnull[off])
			APPEND_LITERAL(buf, "null");
		else
			cp_encode_value(&col->type, buf, values[off]);
	}
	appendStringInfoCharMacro(buf, '}');
}

void
cp_encode_row(const CpRowEncoder *enc, StringInfo buf,
			  const Datum *values, const bool *isnull)
{
	encode_row(enc, buf, values, isnull, NULL);
}

bool
cp_encode_row_bounded(const CpRowEncoder *enc, StringInfo buf,
					  const Datum *values, const bool *isnull,
					  const bool *omit, int max_bytes)
{
	int			start = buf->len;
	bool		fits;

	Assert(bound_len < 0);
	/* never so close to MaxAllocSize that the slack could reach it */
	bound_len = Min((int64) start + Max(max_bytes, 0),
					(int64) MaxAllocSize - 1 - BOUND_SLACK);
	bound_exceeded = false;
	PG_TRY();
	{
		encode_row(enc, buf, values, isnull, omit);
	}
	PG_FINALLY();
	{
		/* an error in an output function must not leave later encodings bounded */
		bound_len = -1;
	}
	PG_END_TRY();
	fits = !bound_exceeded && buf->len - start <= max_bytes;
	bound_exceeded = false;
	if (!fits)
	{
		buf->len = start;
		buf->data[start] = '\0';
	}
	return fits;
}

void
cp_encode_type_schema(const CpTypeEncoder *enc, StringInfo buf)
{
	switch (enc->kind)
	{
		case CP_KIND_INT2:
		case CP_KIND_INT4:
		case CP_KIND_INT8:
		case CP_KIND_OID:
			APPEND_LITERAL(buf, "{\"type\":\"number\",\"airbyte_type\":\"integer\"}");
			break;
		case CP_KIND_FLOAT4:
		case CP_KIND_FLOAT8:
		case CP_KIND_NUMERIC:
		case CP_KIND_MONEY:
			APPEND_LITERAL(buf, "{\"type\":\"number\"}");
			break;
		case CP_KIND_BOOL:
			APPEND_LITERAL(buf, "{\"type\":\"boolean\"}");
			break;
		case CP_KIND_DATE:
		case CP_KIND_TIMESTAMP:
		case CP_KIND_TIMESTAMPTZ:
		case CP_KIND_TIME:
		case CP_KIND_TIMETZ:
		case CP_KIND_INTERVAL:
			cp_encode_datetime_schema(enc->kind, buf);
			break;
		case CP_KIND_ARRAY:
			APPEND_LITERAL(buf, "{\"type\":\"array\",\"items\":");
			cp_encode_type_schema(enc->elem, buf);
			appendStringInfoCharMacro(buf, '}');
			break;
		case CP_KIND_BYTEA:
		case CP_KIND_TEXT:
		case CP_KIND_NAME:
		case CP_KIND_OTHER:
			APPEND_LITERAL(buf, "{\"type\":\"string\"}");
			break;
	}
}

void
cp_encode_row_schema(const CpRowEncoder *enc, StringInfo buf)
{
	APPEND_LITERAL(buf, "{\"type\":\"object\",\"properties\":{");
	for (int i = 0; i < enc->ncolumns; i++)
	{
		const CpColumnEncoder *col = &enc->columns[i];

		if (i > 0)
			appendStringInfoCharMacro(buf, ',');
		appendBinaryStringInfo(buf, col->key, col->keylen);
		cp_encode_type_schema(&col->type, buf);
	}
	APPEND_LITERAL(buf, "}}");
}
