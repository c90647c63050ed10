/*-------------------------------------------------------------------------
 *
 * cursor_column.h
 *	  A cursor sync's column (cursor.c): how its values are ordered, and
 *	  the largest value a stream's reads sent.
 *
 * Values are ordered by the default btree operator class of the column's
 * type, in the column's collation: the order an index on the column has,
 * the same at every run whatever the session's settings.  A value is kept
 * as its type's output text, written under the encoder's pinned settings
 * (cp_encoder_pin_settings), so that it reads back as the same value.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CALABI_PUSH_CURSOR_COLUMN_H
#define CALABI_PUSH_CURSOR_COLUMN_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "fmgr.h"
#include "utils/relcache.h"

typedef struct CpCursorColumn
{
	char	   *name;			/* as in the catalog */
	int			column;			/* 0-based, in the stream's SELECT * */
	Oid			type;			/* the column's */
	Oid			base;			/* its base type (a domain's); values are read back as it */
	Oid			compared;		/* the type its values are compared as */
	Oid			collation;
	char	   *expr;			/* (col[::type] [COLLATE c]) */
	char	   *param;			/* ($1[::type]) */
	Oid			gt;				/* "comes after" */
	Oid			ge;
	Oid			lt;				/* the ORDER BY operator */
	FmgrInfo	cmp;			/* the family's order support function */
	FmgrInfo	out;
	FmgrInfo	in;
	Oid			ioparam;
	int32		typmod;
	int16		typlen;
	bool		typbyval;
	Oid			run_as;			/* a value's text is read back as this role */
	TupleDesc	checked;		/* the rows' shape last checked against it */
	MemoryContext cxt;			/* where the largest value is kept */
	bool		has_max;
	Datum		max;
} CpCursorColumn;

/*
 * Describe column name of rel (locked) into cur (zeroed, or described
 * before: its largest value is forgotten), in the current memory context,
 * its largest value in cxt.  A column dropped, renamed or changed
 * to a type without an ordering since create_sync stops the sync, naming
 * the way out.
 */
extern void cp_cursor_column_describe(CpCursorColumn *cur, Relation rel,
									  const char *name, const char *sync_name,
									  Oid run_as, MemoryContext cxt);

/*
 * Consider a row read (its values in the stream's SELECT * order, desc its
 * shape: a shape where the column is not what it was is an error).
 */
extern void cp_cursor_column_see(CpCursorColumn *cur, TupleDesc desc,
								 const Datum *values, const bool *isnull);

/*
 * The largest value seen, as text (in the current memory context), or
 * NULL; and set it from such a text, or forget it (NULL).  Both run in a
 * transaction, under the encoder's pinned settings.
 */
extern char *cp_cursor_column_max_text(CpCursorColumn *cur);
extern void cp_cursor_column_set_max(CpCursorColumn *cur, const char *text);

#endif							/* CALABI_PUSH_CURSOR_COLUMN_H */
