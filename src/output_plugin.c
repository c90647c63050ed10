/*-------------------------------------------------------------------------
 *
 * output_plugin.c
 *	  The calabi_push library as a logical decoding output plugin named
 *	  "calabi_push": committed changes as the ingest protocol's messages.
 *
 *	  SELECT pg_create_logical_replication_slot('s', 'calabi_push');
 *	  SELECT data FROM pg_logical_slot_get_changes('s', NULL, NULL,
 *	                  'destination_sync_mode', 'append', 'relations', '16384');
 *
 * Each protocol line is one write, so one row of pg_logical_slot_get_changes.
 * The lines themselves are made by cdc_change.c, which the sync worker will
 * call with its own buffer; this file only adapts the callbacks.
 *
 * Options:
 *	  destination_sync_mode	 append_dedup (default) or append: what the STREAM
 *							 lines declare
 *	  relations				 comma-separated relation OIDs whose changes are
 *							 emitted (default: every user table)
 *	  run_as				 a role: only tables it may SELECT are emitted
 *
 * Callbacks run inside the reorder buffer's replay transaction, under a
 * historic snapshot: they read catalogs only, never write a table, and
 * allocate per change in a context reset after each change.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/xact.h"
#include "commands/defrem.h"
#include "nodes/parsenodes.h"
#include "nodes/pg_list.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "replication/reorderbuffer.h"
#include "utils/acl.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "cdc_change.h"
#include "cdc_relcache.h"
#include "cdc_sink.h"
#include "compat.h"
#include "encoder.h"

PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

CpCdcSink  *cp_cdc_sink = NULL;

/* the change buffer is kept between changes up to this size */
#define LINES_KEEP_BYTES (8 * 1024 * 1024)

typedef struct CpPluginState
{
	MemoryContext change_cxt;	/* reset after every change */
	StringInfoData lines;		/* a change's lines, in ctx->context */
	CpCdcTxn	txn;			/* the transaction being replayed */
	int			pin_nestlevel;	/* > 0: encoder settings pinned for the session */
} CpPluginState;

/* Parse the relations option: OIDs separated by commas (and blanks). */
static void
parse_relations(const char *text, CpCdcOptions *options)
{
	int			max = 1;
	Oid		   *relations;
	int			n = 0;
	const char *p = text;

	for (const char *c = text; *c; c++)
		if (*c == ',')
			max++;
	relations = palloc(sizeof(Oid) * max);

	for (;;)
	{
		char	   *end;
		unsigned long value;

		while (*p == ' ' || *p == '\t')
			p++;
		errno = 0;
		value = strtoul(p, &end, 10);
		if (end == p || errno != 0 || value == 0 || value > UINT_MAX ||
			*p == '-' || *p == '+')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value for option \"relations\": \"%s\"", text),
					 errdetail("Each element must be a relation OID."),
					 errhint("Give OIDs separated by commas, e.g. 'public.orders'::regclass::oid.")));
		relations[n++] = (Oid) value;
		p = end;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		if (*p != ',')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value for option \"relations\": \"%s\"", text),
					 errhint("Give OIDs separated by commas, e.g. 'public.orders'::regclass::oid.")));
		p++;
	}
	options->nrelations = n;
	options->relations = relations;
}

static void
parse_options(List *defs, CpCdcOptions *options)
{
	ListCell   *lc;

	options->destination_sync_mode = "append_dedup";
	options->nrelations = -1;
	options->relations = NULL;
	options->run_as = InvalidOid;
	options->in_sync = false;

	foreach(lc, defs)
	{
		DefElem    *def = lfirst_node(DefElem, lc);

		if (strcmp(def->defname, "destination_sync_mode") == 0)
		{
			char	   *mode = defGetString(def);

			if (strcmp(mode, "append_dedup") != 0 && strcmp(mode, "append") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid value for option \"destination_sync_mode\": \"%s\"", mode),
						 errhint("Change data capture streams are \"append_dedup\" or \"append\".")));
			options->destination_sync_mode = mode;
		}
		else if (strcmp(def->defname, "relations") == 0)
			parse_relations(defGetString(def), options);
		else if (strcmp(def->defname, "run_as") == 0)
		{
			const char *role = defGetString(def);

			/*
			 * A sync worker gives the OID: it decodes outside any
			 * transaction, where no catalog can be read.
			 */
			if (role[0] != '\0' && strspn(role, "0123456789") == strlen(role))
				options->run_as = (Oid) strtoul(role, NULL, 10);
			else
				options->run_as = get_role_oid(role, false);
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unrecognized option \"%s\" of output plugin \"calabi_push\"",
							def->defname),
					 errhint("Valid options are \"destination_sync_mode\", \"relations\" and \"run_as\".")));
	}
}

static void
cp_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	CpPluginState *state;
	CpCdcOptions options;
	MemoryContext oldcxt;

	opt->output_type = OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
	opt->receive_rewrites = false;

	oldcxt = MemoryContextSwitchTo(ctx->context);
	state = palloc0(sizeof(CpPluginState));
	state->change_cxt = AllocSetContextCreate(ctx->context,
											  "calabi_push change",
											  ALLOCSET_DEFAULT_SIZES);
	parse_options(ctx->output_plugin_options, &options);
	/* a sync worker's sink stops the sync on a violated precondition */
	options.in_sync = cp_cdc_sink != NULL;
	initStringInfo(&state->lines);
	MemoryContextSwitchTo(oldcxt);

	cp_cdc_relcache_init(ctx->context, &options);
	ctx->output_plugin_private = state;

	/*
	 * Called by the SQL functions, decoding runs inside the caller's
	 * transaction and replays each decoded transaction in a subtransaction
	 * of it: settings pinned here outlive those and are restored at
	 * shutdown, or by the caller's abort.  Pinning once instead of in every
	 * replayed transaction halves the cost of one-row transactions.  A
	 * walsender decodes outside any transaction, where a pin would not
	 * survive the first replay: there cdc_change.c pins per transaction.
	 */
	if (IsTransactionState())
	{
		state->pin_nestlevel = cp_encoder_pin_settings();
		state->txn.settings_pinned = true;
	}
}

static void
cp_shutdown(LogicalDecodingContext *ctx)
{
	CpPluginState *state = ctx->output_plugin_private;

	if (state != NULL && state->pin_nestlevel > 0)
	{
		cp_encoder_unpin_settings(state->pin_nestlevel);
		state->pin_nestlevel = 0;
	}
	/* the rest is in ctx->context, freed by the caller */
	cp_cdc_relcache_destroy();
}

static void write_lines(LogicalDecodingContext *ctx, StringInfo buf, int start);

static void
cp_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	CpPluginState *state = ctx->output_plugin_private;

	cp_cdc_txn_begin(&state->txn, txn->end_lsn, cp_txn_commit_time(txn));
	if (cp_cdc_sink != NULL)
		cp_cdc_sink->begin(cp_cdc_sink->arg, txn, &state->txn);
}

static void
cp_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
		  XLogRecPtr commit_lsn)
{
	CpPluginState *state = ctx->output_plugin_private;

	cp_cdc_txn_end(&state->txn);
	if (cp_cdc_sink != NULL)
		cp_cdc_sink->commit(cp_cdc_sink->arg, txn);
}

/* Watermarks of a sync worker's backfill; nothing for the SQL functions. */
static void
cp_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
		   XLogRecPtr message_lsn, bool transactional, const char *prefix,
		   Size message_size, const char *message)
{
	if (cp_cdc_sink != NULL && !transactional)
		cp_cdc_sink->message(cp_cdc_sink->arg, message_lsn, prefix,
							 message_size, message);
}

/* Where a change's lines are made: the sink's buffer, or our own. */
static StringInfo
lines_buffer(CpPluginState *state)
{
	if (cp_cdc_sink != NULL)
		return cp_cdc_sink->buffer(cp_cdc_sink->arg);
	resetStringInfo(&state->lines);
	return &state->lines;
}

/* The lines of a change, buf from start: to the sink, or one row each. */
static void
emit_lines(LogicalDecodingContext *ctx, Oid relid, StringInfo buf, int start,
		   int nlines, int nrecords)
{
	if (cp_cdc_sink != NULL)
		cp_cdc_sink->lines(cp_cdc_sink->arg, relid, buf, start, nlines, nrecords);
	else
		write_lines(ctx, buf, start);
}

/* One write, so one row of the SQL functions, per line. */
static void
write_lines(LogicalDecodingContext *ctx, StringInfo buf, int start)
{
	const char *p = buf->data + start;
	const char *end = buf->data + buf->len;

	while (p < end)
	{
		const char *nl = memchr(p, '\n', end - p);
		const char *stop = nl != NULL ? nl : end;
		bool		last = nl == NULL || nl + 1 >= end;

		OutputPluginPrepareWrite(ctx, last);
		appendBinaryStringInfo(ctx->out, p, stop - p);
		OutputPluginWrite(ctx, last);
		p = nl != NULL ? nl + 1 : end;
	}
}

static void
cp_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
		  Relation relation, ReorderBufferChange *change)
{
	CpPluginState *state = ctx->output_plugin_private;
	MemoryContext oldcxt = MemoryContextSwitchTo(state->change_cxt);
	/* the sink's, or one buffer for every change: no allocation per change */
	StringInfo	buf = lines_buffer(state);
	int			start = buf->len;
	int			nrecords;
	int			nlines = cp_cdc_append_change(buf, &state->txn, relation, change,
											  &nrecords);

	if (nlines > 0)
		emit_lines(ctx, RelationGetRelid(relation), buf, start, nlines, nrecords);
	/* a huge row grew ours: give the memory back */
	if (state->lines.maxlen > LINES_KEEP_BYTES)
	{
		MemoryContext cxt = GetMemoryChunkContext(state->lines.data);

		pfree(state->lines.data);
		MemoryContextSwitchTo(cxt);
		initStringInfo(&state->lines);
		MemoryContextSwitchTo(state->change_cxt);
	}

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(state->change_cxt);
}

static void
cp_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			int nrelations, Relation relations[], ReorderBufferChange *change)
{
	CpPluginState *state = ctx->output_plugin_private;
	MemoryContext oldcxt = MemoryContextSwitchTo(state->change_cxt);

	for (int i = 0; i < nrelations; i++)
	{
		StringInfo	buf = lines_buffer(state);
		int			start = buf->len;
		int			nlines = cp_cdc_append_truncate(buf, &state->txn, relations[i]);

		/* a STREAM line, a CONTROL: no RECORD */
		if (nlines > 0)
			emit_lines(ctx, RelationGetRelid(relations[i]), buf, start, nlines, 0);
	}

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(state->change_cxt);
}

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = cp_startup;
	cb->begin_cb = cp_begin;
	cb->change_cb = cp_change;
	cb->truncate_cb = cp_truncate;
	cb->commit_cb = cp_commit;
	cb->message_cb = cp_message;
	cb->shutdown_cb = cp_shutdown;
}
