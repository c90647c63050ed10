/*-------------------------------------------------------------------------
 *
 * stream.c
 *	  A relation as a stream of the ingest protocol.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "compat.h"
#include "stream.h"

Relation
cp_stream_open(Oid relid, Oid role)
{
	char		relkind = get_rel_relkind(relid);
	Relation	rel;

	if (relkind == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid),
				 errhint("Name an existing table, view or materialized view, e.g. 'public.orders'.")));

	switch (relkind)
	{
		case RELKIND_RELATION:
		case RELKIND_PARTITIONED_TABLE:
		case RELKIND_VIEW:
		case RELKIND_MATVIEW:
		case RELKIND_FOREIGN_TABLE:
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("\"%s\" cannot be streamed: it is %s",
							get_rel_name(relid),
							relkind == RELKIND_SEQUENCE ? "a sequence" :
							relkind == RELKIND_INDEX ||
							relkind == RELKIND_PARTITIONED_INDEX ? "an index" :
							relkind == RELKIND_COMPOSITE_TYPE ? "a composite type" :
							relkind == RELKIND_TOASTVALUE ? "a TOAST table" :
							"not a table or view"),
					 errhint("calabi_push streams tables, partitioned tables, views, materialized views and foreign tables.")));
	}

	rel = relation_open(relid, AccessShareLock);

	/*
	 * Check up front, rather than letting the executor fail, so the error
	 * says which role lacks what and how to fix it.  Column privileges on
	 * every column are as good as the table privilege.
	 */
	if (pg_class_aclcheck(relid, role, ACL_SELECT) != ACLCHECK_OK &&
		pg_attribute_aclcheck_all(relid, role, ACL_SELECT, ACLMASK_ALL) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for relation \"%s\"",
						RelationGetRelationName(rel)),
				 errdetail("Role \"%s\" does not have SELECT on all columns of it.",
						   GetUserNameFromId(role, false)),
				 errhint("GRANT SELECT ON %s TO %s;",
						 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
													RelationGetRelationName(rel)),
						 quote_identifier(GetUserNameFromId(role, false)))));
	return rel;
}

char *
cp_stream_select_query(Relation rel)
{
	const char *name = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												  RelationGetRelationName(rel));

	/*
	 * A table is its own stream: rows of inheritance children belong to the
	 * children's streams, so read it with ONLY.  A partitioned table holds
	 * no rows itself: its stream is the rows of all its partitions.
	 */
	if (rel->rd_rel->relkind == RELKIND_RELATION)
		return psprintf("SELECT * FROM ONLY %s", name);
	return psprintf("SELECT * FROM %s", name);
}

Oid
cp_stream_key_index(Relation rel)
{
	Oid			indexoid = InvalidOid;

	if (rel->rd_rel->relhasindex)
	{
		indexoid = cp_relation_primary_key_index(rel);
		if (!OidIsValid(indexoid))
			indexoid = RelationGetReplicaIndex(rel);
	}
	return indexoid;
}

List *
cp_stream_primary_key(Relation rel)
{
	Oid			indexoid = cp_stream_key_index(rel);
	HeapTuple	tuple;
	Form_pg_index index;
	List	   *columns = NIL;

	if (!OidIsValid(indexoid))
		return NIL;

	tuple = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for index %u", indexoid);
	index = (Form_pg_index) GETSTRUCT(tuple);
	for (int i = 0; i < index->indnkeyatts; i++)
		columns = lappend(columns,
						  get_attname(RelationGetRelid(rel),
									  index->indkey.values[i], false));
	ReleaseSysCache(tuple);
	return columns;
}

void
cp_stream_append_object(StringInfo buf, Relation rel, const CpRowEncoder *enc,
						const char *extra_members)
{
	const char *nspname = get_namespace_name(RelationGetNamespace(rel));
	const char *relname = RelationGetRelationName(rel);
	List	   *pk = cp_stream_primary_key(rel);
	ListCell   *lc;

	appendStringInfoString(buf, "{\"namespace\":");
	cp_append_json_string(buf, nspname, strlen(nspname));
	appendStringInfoString(buf, ",\"name\":");
	cp_append_json_string(buf, relname, strlen(relname));
	appendStringInfoString(buf, ",\"json_schema\":");
	cp_encode_row_schema(enc, buf);

	/* a list of column paths; each of our paths is one column name */
	appendStringInfoString(buf, ",\"primary_key\":[");
	foreach(lc, pk)
	{
		const char *col = lfirst(lc);

		if (foreach_current_index(lc) > 0)
			appendStringInfoChar(buf, ',');
		appendStringInfoChar(buf, '[');
		cp_append_json_string(buf, col, strlen(col));
		appendStringInfoChar(buf, ']');
	}
	appendStringInfoChar(buf, ']');
	if (extra_members != NULL)
	{
		appendStringInfoChar(buf, ',');
		appendStringInfoString(buf, extra_members);
	}
	appendStringInfoChar(buf, '}');
}

int64
cp_unix_ms(TimestampTz t)
{
	return t / 1000 +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
}
