/*-------------------------------------------------------------------------
 *
 * oversize.c
 *	  How a record too large for any batch is described (see oversize.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "mb/pg_wchar.h"

#include "oversize.h"

/* the longest a key value is shown in a message */
#define KEY_VALUE_SHOWN 64

int64
cp_oversize_values_bytes(TupleDesc desc, const Datum *values, const bool *isnull)
{
	int64		bytes = 0;

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(desc, i);

		if (attr->attisdropped || isnull[i])
			continue;
		bytes += attr->attlen == -1 ? (int64) toast_raw_datum_size(values[i]) :
			attr->attlen > 0 ? attr->attlen :
			(int64) strlen(DatumGetCString(values[i])) + 1;
	}
	return bytes;
}

void
cp_oversize_append_key(StringInfo buf, int nkeys, const char *const *quoted_names,
					   const char *const *texts)
{
	appendStringInfoChar(buf, '(');
	for (int k = 0; k < nkeys; k++)
		appendStringInfo(buf, "%s%s", k ? ", " : "", quoted_names[k]);
	appendStringInfoString(buf, ")=(");
	for (int k = 0; k < nkeys; k++)
	{
		const char *text = texts[k] != NULL ? texts[k] : "null";
		int			len = strlen(text);
		int			shown = pg_mbcliplen(text, len, KEY_VALUE_SHOWN);

		appendStringInfo(buf, "%s%.*s%s", k ? ", " : "", shown, text,
						 shown < len ? "..." : "");
	}
	appendStringInfoChar(buf, ')');
}
