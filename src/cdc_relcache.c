/*-------------------------------------------------------------------------
 *
 * cdc_relcache.c
 *	  Per-relation state of a decoding session (see cdc_relcache.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "catalog/catalog.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/syscache.h"

#include "cdc_relcache.h"
#include "protocol.h"
#include "stream.h"

/* the extension's own schema (calabi_push.control: not relocatable) */
#define CP_EXTENSION_SCHEMA "calabi_push"

/* The process's cache: NULL when no decoding session has one. */
static HTAB *relcache = NULL;
static MemoryContext relcache_cxt = NULL;
static CpCdcOptions relcache_options;

/* Invalidation callbacks cannot be unregistered: register them once. */
static bool callbacks_registered = false;

/* cp_cdc_relcache_take_recheck's flag, and cp_cdc_relcache_ignore_resets' */
static bool recheck_wanted = false;
static bool ignore_resets = false;

/* Reset callback of relcache_cxt: the cache is gone with its context. */
static void
relcache_forget(void *arg)
{
	relcache = NULL;
	relcache_cxt = NULL;
	memset(&relcache_options, 0, sizeof(relcache_options));
}

/*
 * Invalidation callbacks only mark entries stale: they may run at any
 * catalog access, even while an entry is being rebuilt, so they must not
 * free anything an entry's user may be holding.
 */
static void
invalidate_all(void)
{
	HASH_SEQ_STATUS status;
	CpCdcRelation *entry;

	if (relcache == NULL)
		return;
	hash_seq_init(&status, relcache);
	while ((entry = (CpCdcRelation *) hash_seq_search(&status)) != NULL)
		entry->valid = false;
}

/* Whether relid is one the session emits (every user table: any). */
static bool
relation_is_listed(Oid relid)
{
	if (relcache_options.nrelations < 0)
		return true;
	return relcache_options.nrelations > 0 &&
		bsearch(&relid, relcache_options.relations,
				relcache_options.nrelations, sizeof(Oid), oid_cmp) != NULL;
}

static void
relcache_invalidate_cb(Datum arg, Oid relid)
{
	CpCdcRelation *entry;

	if (relcache == NULL)
		return;
	/*
	 * A policy created, altered or dropped invalidates its table's entry
	 * (CacheInvalidateRelcache), as ALTER TABLE and GRANT do: all of them
	 * may violate a precondition of the sync.
	 */
	if (!ignore_resets && (!OidIsValid(relid) || relation_is_listed(relid)))
		recheck_wanted = true;
	if (!OidIsValid(relid))
	{
		invalidate_all();
		return;
	}
	entry = (CpCdcRelation *) hash_search(relcache, &relid, HASH_FIND, NULL);
	if (entry != NULL)
		entry->valid = false;
}

/* A renamed schema changes the namespace of its tables' streams. */
static void
namespace_invalidate_cb(Datum arg, int cacheid, uint32 hashvalue)
{
	invalidate_all();
}

/*
 * A role created, altered (BYPASSRLS, SUPERUSER), dropped, or granted to or
 * revoked from another: whether run_as may read a table may have changed,
 * although no relation's entry was invalidated.
 */
static void
role_invalidate_cb(Datum arg, int cacheid, uint32 hashvalue)
{
	if (relcache == NULL)
		return;
	invalidate_all();
	if (!ignore_resets)
		recheck_wanted = true;
}

bool
cp_cdc_relcache_take_recheck(void)
{
	bool		wanted = recheck_wanted;

	recheck_wanted = false;
	return wanted;
}

void
cp_cdc_relcache_ignore_resets(bool ignore)
{
	ignore_resets = ignore;
}

void
cp_cdc_relcache_init(MemoryContext parent, const CpCdcOptions *options)
{
	MemoryContext cxt;
	MemoryContext oldcxt;
	MemoryContextCallback *forget;
	HASHCTL		ctl;
	HTAB	   *hash;
	CpCdcOptions copy;

	if (relcache_cxt != NULL)
		cp_cdc_relcache_destroy();

	cxt = AllocSetContextCreate(parent, "calabi_push CDC relation cache",
								ALLOCSET_DEFAULT_SIZES);

	oldcxt = MemoryContextSwitchTo(cxt);
	copy.destination_sync_mode = pstrdup(options->destination_sync_mode);
	copy.nrelations = options->nrelations;
	copy.run_as = options->run_as;
	copy.in_sync = options->in_sync;
	copy.relations = NULL;
	if (options->nrelations > 0)
	{
		Oid		   *relations = palloc(sizeof(Oid) * options->nrelations);

		memcpy(relations, options->relations, sizeof(Oid) * options->nrelations);
		qsort(relations, options->nrelations, sizeof(Oid), oid_cmp);
		copy.relations = relations;
	}
	MemoryContextSwitchTo(oldcxt);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(CpCdcRelation);
	ctl.hcxt = cxt;
	hash = hash_create("calabi_push CDC relations", 128, &ctl,
					   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	forget = MemoryContextAlloc(cxt, sizeof(MemoryContextCallback));
	forget->func = relcache_forget;
	forget->arg = NULL;
	MemoryContextRegisterResetCallback(cxt, forget);

	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(relcache_invalidate_cb, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, namespace_invalidate_cb,
									  (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, role_invalidate_cb, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, role_invalidate_cb,
									  (Datum) 0);
		callbacks_registered = true;
	}

	relcache_options = copy;
	relcache = hash;
	relcache_cxt = cxt;
}

void
cp_cdc_relcache_destroy(void)
{
	/* relcache_forget clears the statics */
	if (relcache_cxt != NULL)
		MemoryContextDelete(relcache_cxt);
}

/*
 * Ordinary tables (partitions included, as streams of their own) created by
 * users, outside the extension's schema, and listed when a list was given.
 */
static bool
relation_is_emitted(Relation rel, const char *nspname)
{
	Oid			relid = RelationGetRelid(rel);

	if (rel->rd_rel->relkind != RELKIND_RELATION)
		return false;
	if (relid < FirstNormalObjectId || IsCatalogRelation(rel))
		return false;
	if (strcmp(nspname, CP_EXTENSION_SCHEMA) == 0)
		return false;
	return relation_is_listed(relid);
}

/*
 * Only what the sync's role may read leaves the database, although the
 * slot decodes everything: SELECT on the table or on all its columns, and
 * no row-level security it is subject to (decoded changes cannot be
 * filtered by policies), as the catalog stood when the change was made.
 */
CpCdcViolation
cp_cdc_check_relation(Relation rel, Oid run_as, bool keyed)
{
	Oid			relid = RelationGetRelid(rel);

	if (OidIsValid(run_as))
	{
		if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(run_as)))
			return CP_CDC_ROLE_GONE;
		if (pg_class_aclcheck(relid, run_as, ACL_SELECT) != ACLCHECK_OK &&
			pg_attribute_aclcheck_all(relid, run_as, ACL_SELECT, ACLMASK_ALL) != ACLCHECK_OK)
			return CP_CDC_NO_SELECT;
		/* core's own rule: BYPASSRLS, superuser, owner unless FORCE */
		if (check_enable_rls(relid, run_as, true) == RLS_ENABLED)
			return CP_CDC_RLS;
	}
	if (rel->rd_rel->relpersistence != RELPERSISTENCE_PERMANENT)
		return CP_CDC_UNLOGGED;
	if (keyed)
	{
		List	   *pk = cp_stream_primary_key(rel);

		if (pk == NIL)
			return CP_CDC_NO_KEY;
		list_free_deep(pk);
		if (rel->rd_rel->relreplident == REPLICA_IDENTITY_NOTHING)
			return CP_CDC_REPLIDENT_NOTHING;
	}
	return CP_CDC_OK;
}

static bool
type_needs_settings(const CpTypeEncoder *type)
{
	if (type->kind == CP_KIND_ARRAY)
		return type_needs_settings(type->elem);
	/* the output functions read DateStyle, TimeZone, extra_float_digits... */
	return type->kind == CP_KIND_OTHER;
}

/* One of the _calabi_cdc_* columns, for the STREAM's json_schema only. */
static void
cdc_column(CpColumnEncoder *col, const char *name, Oid typid)
{
	StringInfoData key;

	memset(col, 0, sizeof(*col));
	col->name = pstrdup(name);
	initStringInfo(&key);
	cp_append_json_string(&key, name, strlen(name));
	appendStringInfoChar(&key, ':');
	col->key = key.data;
	col->keylen = key.len;
	cp_type_encoder_init(&col->type, typid, CurrentMemoryContext);
}

/*
 * Everything an emitted relation needs, allocated in the current memory
 * context (the entry's new one).
 */
static void
build_emitted(CpCdcRelation *fresh, Relation rel, const char *nspname)
{
	TupleDesc	desc = RelationGetDescr(rel);
	const char *relname = RelationGetRelationName(rel);
	CpRowEncoder *enc = cp_row_encoder_create(desc, CurrentMemoryContext);
	CpRowEncoder schema_enc;
	List	   *pk = cp_stream_primary_key(rel);
	ListCell   *lc;
	StringInfoData buf;
	char	   *names;

	fresh->natts = desc->natts;
	fresh->enc = enc;

	fresh->col_varlena = palloc0(sizeof(bool) * Max(enc->ncolumns, 1));
	fresh->needs_settings = false;
	for (int i = 0; i < enc->ncolumns; i++)
	{
		const CpColumnEncoder *col = &enc->columns[i];

		fresh->col_varlena[i] = TupleDescAttr(desc, col->attnum - 1)->attlen == -1;
		if (type_needs_settings(&col->type))
			fresh->needs_settings = true;
	}

	/* the key columns as positions in the encoder, found once */
	fresh->nkeys = 0;
	fresh->key_columns = palloc0(sizeof(int) * Max(list_length(pk), 1));
	foreach(lc, pk)
	{
		const char *keyname = lfirst(lc);
		int			i;

		for (i = 0; i < enc->ncolumns; i++)
			if (strcmp(enc->columns[i].name, keyname) == 0)
				break;
		if (i == enc->ncolumns)
			elog(ERROR, "key column \"%s\" of relation \"%s\" not found",
				 keyname, relname);
		fresh->key_columns[fresh->nkeys++] = i;
	}

	/* STREAM: the relation's columns, then the three _calabi_cdc_* ones */
	schema_enc.ncolumns = enc->ncolumns + 3;
	schema_enc.columns = palloc0(sizeof(CpColumnEncoder) * schema_enc.ncolumns);
	memcpy(schema_enc.columns, enc->columns,
		   sizeof(CpColumnEncoder) * enc->ncolumns);
	cdc_column(&schema_enc.columns[enc->ncolumns], "_calabi_cdc_lsn", INT8OID);
	cdc_column(&schema_enc.columns[enc->ncolumns + 1], "_calabi_cdc_updated_at",
			   TIMESTAMPTZOID);
	cdc_column(&schema_enc.columns[enc->ncolumns + 2], "_calabi_cdc_deleted_at",
			   TIMESTAMPTZOID);

	initStringInfo(&buf);
	cp_protocol_append_stream(&buf, rel, &schema_enc, "cdc",
							  relcache_options.destination_sync_mode, "_calabi_cdc_lsn");
	appendStringInfoChar(&buf, '\n');
	fresh->stream_line = buf.data;
	fresh->stream_line_len = buf.len;

	/* what announces the stream again: its line, or a column's type */
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, fresh->stream_line, fresh->stream_line_len);
	for (int i = 0; i < enc->ncolumns; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(desc, enc->columns[i].attnum - 1);

		appendStringInfo(&buf, "%d:%u:%d;", (int) attr->attnum,
						 attr->atttypid, attr->atttypmod);
	}
	fresh->signature = buf.data;

	names = cp_protocol_message_names(nspname, relname);
	fresh->record_prefix = cp_protocol_record_prefix(names);
	fresh->record_prefix_len = strlen(fresh->record_prefix);
	fresh->truncate_prefix = cp_protocol_truncate_prefix(names);
	fresh->truncate_prefix_len = strlen(fresh->truncate_prefix);
}

static void
rebuild(CpCdcRelation *entry, Relation rel)
{
	CpCdcRelation fresh;
	char	   *nspname;
	MemoryContext oldcxt;
	MemoryContext retired;

	/* an invalidation from here on asks for yet another rebuild */
	entry->valid = true;
	entry->built = false;

	memset(&fresh, 0, sizeof(fresh));
	nspname = get_namespace_name(RelationGetNamespace(rel));
	if (nspname == NULL)
		elog(ERROR, "cache lookup failed for namespace %u",
			 RelationGetNamespace(rel));
	fresh.emit = relation_is_emitted(rel, nspname);
	if (fresh.emit)
		fresh.violation = cp_cdc_check_relation(rel, relcache_options.run_as,
												strcmp(relcache_options.destination_sync_mode,
													   "append_dedup") == 0);
	if (fresh.violation == CP_CDC_ROLE_GONE || fresh.violation == CP_CDC_NO_SELECT ||
		fresh.violation == CP_CDC_RLS)
	{
		fresh.emit = false;
		fresh.denied = true;
		/* a sync worker stops instead, saying so (cdc_sync.c) */
		if (!entry->denied && !relcache_options.in_sync)
			ereport(LOG,
					(errmsg("calabi_push: changes of \"%s\".\"%s\" are not sent: role %s may not see them",
							nspname, RelationGetRelationName(rel),
							GetUserNameFromId(relcache_options.run_as, true) ?
							GetUserNameFromId(relcache_options.run_as, true) :
							psprintf("%u", relcache_options.run_as)),
					 errhint("GRANT SELECT on the table to the role, and exempt it from row-level security; its changes made since are sent.")));
	}
	else if (!relcache_options.in_sync)
	{
		/* the SQL functions emit what the WAL holds, whatever the key */
		fresh.violation = CP_CDC_OK;
	}

	if (fresh.emit)
	{
		fresh.cxt = AllocSetContextCreate(relcache_cxt, "calabi_push CDC relation",
										  ALLOCSET_SMALL_SIZES);
		MemoryContextCopyAndSetIdentifier(fresh.cxt, RelationGetRelationName(rel));
		oldcxt = MemoryContextSwitchTo(fresh.cxt);
		build_emitted(&fresh, rel, nspname);
		MemoryContextSwitchTo(oldcxt);
	}

	retired = entry->cxt;
	entry->emit = fresh.emit;
	entry->denied = fresh.denied;
	entry->violation = fresh.violation;
	entry->cxt = fresh.cxt;
	entry->natts = fresh.natts;
	entry->enc = fresh.enc;
	entry->col_varlena = fresh.col_varlena;
	entry->needs_settings = fresh.needs_settings;
	entry->nkeys = fresh.nkeys;
	entry->key_columns = fresh.key_columns;
	entry->stream_line = fresh.stream_line;
	entry->stream_line_len = fresh.stream_line_len;
	entry->signature = fresh.signature;
	entry->record_prefix = fresh.record_prefix;
	entry->record_prefix_len = fresh.record_prefix_len;
	entry->truncate_prefix = fresh.truncate_prefix;
	entry->truncate_prefix_len = fresh.truncate_prefix_len;
	entry->built = true;

	if (retired != NULL)
		MemoryContextDelete(retired);
}

/* The entry of relid, created stale and never built when missing. */
static CpCdcRelation *
entry_for(Oid relid)
{
	CpCdcRelation *entry;
	bool		found;

	if (relcache == NULL)
		elog(ERROR, "calabi_push CDC relation cache is not set up");
	entry = (CpCdcRelation *) hash_search(relcache, &relid, HASH_ENTER, &found);
	if (!found)
	{
		memset(entry, 0, sizeof(CpCdcRelation));
		entry->relid = relid;
	}
	return entry;
}

CpCdcRelation *
cp_cdc_relcache_get(Relation rel)
{
	CpCdcRelation *entry = entry_for(RelationGetRelid(rel));

	/*
	 * The natts check is a belt to the invalidation's braces: the encoder
	 * indexes the deformed tuple by attribute number.
	 */
	if (!entry->valid || !entry->built ||
		(entry->emit && entry->natts != RelationGetDescr(rel)->natts))
		rebuild(entry, rel);
	return entry;
}

bool
cp_cdc_relcache_stream_owed(const CpCdcRelation *entry)
{
	return entry->announced == NULL || entry->signature == NULL ||
		strcmp(entry->announced, entry->signature) != 0;
}

void
cp_cdc_relcache_announced(Oid relid, const char *signature)
{
	CpCdcRelation *entry = entry_for(relid);

	if (entry->announced != NULL)
		pfree(entry->announced);
	entry->announced = MemoryContextStrdup(relcache_cxt, signature);
}

void
cp_cdc_relcache_describe(Relation rel, char **stream_line, int *stream_line_len,
						 char **signature)
{
	CpCdcRelation fresh;
	char	   *nspname = get_namespace_name(RelationGetNamespace(rel));

	if (relcache == NULL)
		elog(ERROR, "calabi_push CDC relation cache is not set up");
	memset(&fresh, 0, sizeof(fresh));
	build_emitted(&fresh, rel, nspname);
	*stream_line = fresh.stream_line;
	*stream_line_len = fresh.stream_line_len;
	*signature = fresh.signature;
}

int
cp_cdc_relcache_owed(Oid relid, const char *signature)
{
	CpCdcRelation *entry;

	if (relcache == NULL)
		elog(ERROR, "calabi_push CDC relation cache is not set up");
	entry = (CpCdcRelation *) hash_search(relcache, &relid, HASH_FIND, NULL);
	if (entry == NULL)
		return 1;
	if (entry->valid && entry->built && entry->emit && entry->signature != NULL &&
		strcmp(entry->signature, signature) != 0)
		return -1;
	if (entry->announced == NULL || strcmp(entry->announced, signature) != 0)
		return 1;
	return 0;
}
