/*-------------------------------------------------------------------------
 *
 * protocol.c
 *	  The lines of the Calabi ingest protocol (see protocol.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/pg_list.h"

#include "protocol.h"
#include "reader.h"
#include "stream.h"

static char *
names(const char *nspname, const char *relname, const char *name_member)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "\"namespace\":");
	cp_append_json_string(&buf, nspname, strlen(nspname));
	appendStringInfo(&buf, ",\"%s\":", name_member);
	cp_append_json_string(&buf, relname, strlen(relname));
	return buf.data;
}

char *
cp_protocol_state_names(const char *nspname, const char *relname)
{
	return names(nspname, relname, "name");
}

char *
cp_protocol_message_names(const char *nspname, const char *relname)
{
	return names(nspname, relname, "stream");
}

void
cp_protocol_append_stream(StringInfo buf, Relation rel, const CpRowEncoder *schema,
						  const char *method, const char *destination_sync_mode,
						  const char *cursor_field)
{
	StringInfoData extra;

	initStringInfo(&extra);
	appendStringInfo(&extra, "\"sync_mode\":\"%s\",\"destination_sync_mode\":",
					 strcmp(method, "full_refresh") == 0 ? "full_refresh" : "incremental");
	cp_append_json_string(&extra, destination_sync_mode, strlen(destination_sync_mode));
	appendStringInfo(&extra, ",\"method\":\"%s\"", method);
	if (cursor_field != NULL)
	{
		appendStringInfoString(&extra, ",\"cursor_field\":[");
		cp_append_json_string(&extra, cursor_field, strlen(cursor_field));
		appendStringInfoChar(&extra, ']');
	}

	appendStringInfoString(buf, "{\"type\":\"STREAM\",\"stream\":");
	cp_stream_append_object(buf, rel, schema, extra.data);
	appendStringInfoChar(buf, '}');
	pfree(extra.data);
}

char *
cp_protocol_record_prefix(const char *message_names)
{
	return psprintf("{\"type\":\"RECORD\",\"record\":{%s,\"emitted_at\":", message_names);
}

void
cp_protocol_record_head(StringInfo buf, const char *prefix, TimestampTz emitted_at)
{
	appendStringInfoString(buf, prefix);
	cp_protocol_record_emitted(buf, emitted_at);
}

void
cp_protocol_record_end(StringInfo buf)
{
	appendStringInfoString(buf, "}}");
}

void
cp_protocol_record_emitted(StringInfo buf, TimestampTz emitted_at)
{
	appendStringInfo(buf, INT64_FORMAT ",\"data\":", cp_unix_ms(emitted_at));
}

void
cp_protocol_cdc_members(StringInfo buf, XLogRecPtr lsn, const char *time, int time_len)
{
	appendStringInfo(buf, "\"_calabi_cdc_lsn\":" UINT64_FORMAT ",\"_calabi_cdc_updated_at\":",
					 (uint64) lsn);
	appendBinaryStringInfo(buf, time, time_len);
	appendStringInfoString(buf, ",\"_calabi_cdc_deleted_at\":");
}

void
cp_protocol_append_control(StringInfo buf, const char *kind, const char *message_names,
						   int64 generation, XLogRecPtr lsn)
{
	appendStringInfo(buf,
					 "{\"type\":\"CONTROL\",\"control\":{\"kind\":\"%s\",%s,\"generation\":"
					 INT64_FORMAT, kind, message_names, generation);
	if (!XLogRecPtrIsInvalid(lsn))
		appendStringInfo(buf, ",\"lsn\":" UINT64_FORMAT, (uint64) lsn);
	appendStringInfoString(buf, "}}");
}

char *
cp_protocol_truncate_prefix(const char *message_names)
{
	return psprintf("{\"type\":\"CONTROL\",\"control\":{\"kind\":\"truncate\",%s,\"lsn\":",
					message_names);
}

void
cp_protocol_append_truncate_end(StringInfo buf, XLogRecPtr lsn)
{
	appendStringInfo(buf, UINT64_FORMAT "}}\n", (uint64) lsn);
}

void
cp_protocol_state_line(StringInfo line, int64 batch_seq, int nstreams,
					   const char *const *state_names, const char *const *states,
					   const int *state_lens)
{
	bool		first = true;

	appendStringInfo(line, "{\"type\":\"STATE\",\"state\":{\"batch_seq\":" INT64_FORMAT
					 ",\"streams\":[", batch_seq);
	for (int s = 0; s < nstreams; s++)
	{
		if (states[s] == NULL)
			continue;
		if (!first)
			appendStringInfoChar(line, ',');
		first = false;
		appendStringInfo(line, "{%s,\"state\":", state_names[s]);
		appendBinaryStringInfo(line, states[s], state_lens[s]);
		appendStringInfoChar(line, '}');
	}
	appendStringInfoString(line, "]}}\n");
}

/* where a read is: "key":[..], the members between, "after":[..] */
static void
append_position(StringInfo buf, const CpStreamRun *s, const char *between)
{
	ListCell   *lc;

	appendStringInfoString(buf, ",\"key\":[");
	for (int k = 0; k < s->nkeys; k++)
	{
		if (k > 0)
			appendStringInfoChar(buf, ',');
		cp_append_json_string(buf, s->key_names[k], strlen(s->key_names[k]));
	}
	appendStringInfo(buf, "]%s,\"after\":[", between);
	foreach(lc, s->after)
	{
		const char *value = lfirst(lc);

		if (foreach_current_index(lc) > 0)
			appendStringInfoChar(buf, ',');
		cp_append_json_string(buf, value, strlen(value));
	}
	appendStringInfoChar(buf, ']');
}

void
cp_protocol_full_refresh_state(StringInfo buf, const CpStreamRun *s, const char *phase)
{
	appendStringInfo(buf, "{\"method\":\"full_refresh\",\"generation\":" INT64_FORMAT
					 ",\"phase\":\"%s\",\"rows\":" INT64_FORMAT,
					 s->generation, phase, s->rows);
	/* the key's columns too: a resumed read must use the same key */
	if (s->keyset && strcmp(phase, "reading") == 0)
	{
		char		relfilenode[32];

		snprintf(relfilenode, sizeof(relfilenode), ",\"relfilenode\":%u", s->relfilenode);
		append_position(buf, s, relfilenode);
	}
	appendStringInfoChar(buf, '}');
}

void
cp_protocol_cdc_state(StringInfo buf, const CpStreamRun *s, const char *phase,
					  XLogRecPtr lsn)
{
	appendStringInfo(buf, "{\"method\":\"cdc\",\"lsn\":" UINT64_FORMAT
					 ",\"generation\":" INT64_FORMAT ",\"phase\":\"%s\",\"rows\":" INT64_FORMAT,
					 (uint64) lsn, s->generation, phase, s->rows);
	if (strcmp(phase, "reading") == 0)
	{
		append_position(buf, s, "");
		appendStringInfo(buf, ",\"refresh_lsn\":" UINT64_FORMAT, (uint64) s->refresh_lsn);
	}
	appendStringInfoChar(buf, '}');
}

static void append_text_field(StringInfo buf, const char *key, const char *value);

void
cp_protocol_xmin_state(StringInfo buf, const CpStreamRun *s, const CpXminState *x)
{
	bool		reading = strcmp(x->phase, "reading") == 0;

	appendStringInfo(buf, "{\"method\":\"%s\",\"generation\":" INT64_FORMAT
					 ",\"phase\":\"%s\",\"read\":\"%s\",\"rows\":" INT64_FORMAT
					 ",\"relfilenode\":%u",
					 x->method, s->generation, x->phase, x->full ? "full" : "incremental",
					 s->rows, s->relfilenode);
	if (reading)
	{
		appendStringInfo(buf, ",\"part\":%u,\"after\":[", x->part);
		if (s->after != NIL)
			cp_append_json_string(buf, linitial(s->after), strlen(linitial(s->after)));
		appendStringInfo(buf, "],\"snapshot\":\"%s\"", x->snapshot);
		if (!XLogRecPtrIsInvalid(x->floor))
			appendStringInfo(buf, ",\"floor\":\"%X/%X\"", LSN_FORMAT_ARGS(x->floor));
	}
	/* digits, ':', ',', '*', '@', '/' and hex only: no escaping needed */
	if (x->since != NULL)
		appendStringInfo(buf, ",\"since\":\"%s\"", x->since);
	appendStringInfo(buf, ",\"parts\":\"%s\",\"marks\":\"%s\",\"pages_examined\":" INT64_FORMAT
					 ",\"pages_skipped\":" INT64_FORMAT ",\"pages_found_by\":\"%s\""
					 ",\"wal_bytes_read\":" INT64_FORMAT,
					 x->parts, x->marks, x->pages_examined, x->pages_skipped,
					 x->pages_found_by, x->wal_bytes_read);
	append_text_field(buf, "full_reason", x->full_reason);
	append_text_field(buf, "cursor", x->cursor);
	appendStringInfoChar(buf, '}');
}

/* ,"key":"value" unless value is NULL */
static void
append_text_field(StringInfo buf, const char *key, const char *value)
{
	if (value == NULL)
		return;
	appendStringInfo(buf, ",\"%s\":", key);
	cp_append_json_string(buf, value, strlen(value));
}

void
cp_protocol_cursor_state(StringInfo buf, const CpStreamRun *s, const CpCursorState *c)
{
	appendStringInfo(buf, "{\"method\":\"cursor\",\"generation\":" INT64_FORMAT
					 ",\"phase\":\"%s\",\"read\":\"%s\",\"rows\":" INT64_FORMAT,
					 s->generation, c->phase, c->full ? "full" : "incremental", s->rows);
	if (strcmp(c->phase, "reading") == 0)
	{
		appendStringInfoString(buf, ",\"after\":[");
		if (s->after != NIL)
			cp_append_json_string(buf, linitial(s->after), strlen(linitial(s->after)));
		appendStringInfoChar(buf, ']');
	}
	append_text_field(buf, "since", c->since);
	append_text_field(buf, "cursor", c->cursor);
	append_text_field(buf, "full_reason", c->full_reason);
	appendStringInfoChar(buf, '}');
}
