/*-------------------------------------------------------------------------
 *
 * encoder.h
 *	  The one place where PostgreSQL values become JSON.
 *
 * Every read path (preview, full refresh, xmin, cursor, CDC backfill and CDC
 * changes) renders values through this module, following
 * shared/type-mapping.md, so that a value never looks different because of
 * the way it was read.  See docs/type-mapping.md for the decisions taken
 * where the mapping is silent.
 *
 * Usage: pin the settings (cp_encoder_pin_settings), build a CpRowEncoder
 * for the tuple descriptor once, then encode any number of rows; unpin at
 * the end.  The encoder frees what it allocates per value; callers that
 * encode many rows should still run it in a context they reset per batch.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_ENCODER_H
#define CALABI_PUSH_ENCODER_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "fmgr.h"
#include "lib/stringinfo.h"

/* How a value of a type is written; chosen once per column. */
typedef enum CpValueKind
{
	CP_KIND_INT2,
	CP_KIND_INT4,
	CP_KIND_INT8,
	CP_KIND_OID,
	CP_KIND_FLOAT4,
	CP_KIND_FLOAT8,
	CP_KIND_NUMERIC,
	CP_KIND_MONEY,
	CP_KIND_BOOL,
	CP_KIND_BYTEA,
	CP_KIND_TEXT,				/* text, varchar, char(n): the stored string */
	CP_KIND_NAME,
	CP_KIND_DATE,
	CP_KIND_TIMESTAMP,
	CP_KIND_TIMESTAMPTZ,
	CP_KIND_TIME,
	CP_KIND_TIMETZ,
	CP_KIND_INTERVAL,
	CP_KIND_ARRAY,
	CP_KIND_OTHER				/* the type's output function, as a string */
} CpValueKind;

typedef struct CpTypeEncoder
{
	Oid			typid;			/* the declared type (may be a domain) */
	Oid			basetypid;		/* after looking through domains */
	CpValueKind kind;
	int			money_digits;	/* CP_KIND_MONEY: fraction digits */
	FmgrInfo	outfunc;		/* CP_KIND_OTHER: output function */
	/* CP_KIND_ARRAY: the element type and its storage properties */
	struct CpTypeEncoder *elem;
	int16		elmlen;
	bool		elmbyval;
	char		elmalign;
} CpTypeEncoder;

typedef struct CpColumnEncoder
{
	AttrNumber	attnum;			/* 1-based position in the tuple descriptor */
	char	   *name;			/* column name, server encoding */
	char	   *key;			/* the escaped "name": prefix of the value */
	int			keylen;
	CpTypeEncoder type;
} CpColumnEncoder;

typedef struct CpRowEncoder
{
	int			ncolumns;		/* live (not dropped) columns */
	CpColumnEncoder *columns;
} CpRowEncoder;

/*
 * The session settings that type output functions read (DateStyle,
 * IntervalStyle, TimeZone, extra_float_digits, bytea_output, lc_monetary),
 * fixed to the values type-mapping.md names for as long as they are pinned.
 * Returns the GUC nest level to hand to cp_encoder_unpin_settings; an error
 * in between restores them with the transaction's abort.
 */
extern int	cp_encoder_pin_settings(void);
extern void cp_encoder_unpin_settings(int nestlevel);

extern void cp_type_encoder_init(CpTypeEncoder *enc, Oid typid, MemoryContext mcxt);
extern CpRowEncoder *cp_row_encoder_create(TupleDesc tupdesc, MemoryContext mcxt);

/* Append one value (never NULL) / one row as a JSON object. */
extern void cp_encode_value(const CpTypeEncoder *enc, StringInfo buf, Datum value);
extern void cp_encode_row(const CpRowEncoder *enc, StringInfo buf,
						  const Datum *values, const bool *isnull);

/*
 * cp_encode_row, but at most max_bytes of it: when the row's JSON would be
 * longer, buf is left as it was and false returned.  The buffer never
 * grows far past the bound, however large the values (a text of control
 * characters escapes to six times its size, a bytea to twice), so a row
 * too large for any batch is reported instead of failing in
 * enlargeStringInfo.  omit (per column of enc, or NULL) leaves columns
 * out of the object: a decoded update's values that the WAL does not hold.
 */
extern bool cp_encode_row_bounded(const CpRowEncoder *enc, StringInfo buf,
								  const Datum *values, const bool *isnull,
								  const bool *omit, int max_bytes);

/* Append a JSON-schema fragment for a type / {"type":"object",...} for a row. */
extern void cp_encode_type_schema(const CpTypeEncoder *enc, StringInfo buf);
extern void cp_encode_row_schema(const CpRowEncoder *enc, StringInfo buf);

/* Append a JSON string literal for len bytes of server-encoded text. */
extern void cp_append_json_string(StringInfo buf, const char *str, int len);

#endif							/* CALABI_PUSH_ENCODER_H */
