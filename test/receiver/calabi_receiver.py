#!/usr/bin/python3
"""Reference receiver of the Calabi ingest protocol, version 1.

The receiving side of the Calabi ingest protocol (the wire contract between
the calabi_push extension and a Calabi Connect ingest endpoint), implemented
strictly: every deviation from the contract is refused with a 400 naming the
line and the field.  Accepted batches land in a PostgreSQL database, one
transaction per batch, committed before the 2xx.  An admin server on a
separate loopback port injects faults and exposes the request log.

Standard library only, plus psycopg2 (Debian: python3-psycopg2) when batches
are stored.  See docs/receiver.md for the CLI, the landing model and the
choices made where the protocol is silent.
"""

import argparse
import base64
import copy
import datetime
import decimal
import hashlib
import hmac
import http.server
import json
import os
import re
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
import zlib

if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)  # numeric values may have any number of digits

RECEIVER_VERSION = "1.0"
PROTOCOL_VERSION = "1"
MESSAGE_TYPES = ("STREAM", "RECORD", "CONTROL", "STATE")
METHODS = ("full_refresh", "xmin", "cursor", "cdc")
DEST_MODES = ("overwrite", "append", "append_dedup")
CDC_LSN = "_calabi_cdc_lsn"
CDC_UPDATED = "_calabi_cdc_updated_at"
CDC_DELETED = "_calabi_cdc_deleted_at"
CDC_COLUMNS = (CDC_LSN, CDC_UPDATED, CDC_DELETED)
EMITTED_AT = "_calabi_emitted_at"
MAX_LSN = 2**64 - 1
MAX_SEQ = 2**63 - 1
# emitted_at must fit a timestamptz we can build: 1970-01-01 .. 9999-12-31
MAX_EMITTED_AT = 253402300799999
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
NAME_MAX_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1: longer names cannot come from a source
# names a table column cannot have (a view's column may, so a source can send them)
SYSTEM_COLUMNS = ("tableoid", "xmin", "cmin", "xmax", "cmax", "ctid")

SYNC_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+\Z")
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
SEQ_RE = re.compile(r"[1-9][0-9]*\Z")
VERSION_TOKEN = r"[0-9A-Za-z][0-9A-Za-z.+~_-]*"
USER_AGENT_RE = re.compile(r"calabi_push/(" + VERSION_TOKEN + r") PostgreSQL/(" + VERSION_TOKEN + r")\Z")
CONTENT_TYPE_RE = re.compile(r"application/x-ndjson\s*(;\s*charset\s*=\s*(\"?)utf-8\2\s*)?\Z", re.I)
REDACTED_HEADERS = ("authorization", "proxy-authorization", "cookie")


class Refusal(Exception):
    """A request we answer with an error status and {"error": message}."""

    def __init__(self, status, message, headers=None, close=False, body=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.close = close
        self.body = body


def bad(message):
    return Refusal(400, message)


# ---------------------------------------------------------------------------
# JSON: numbers exactly, no NaN/Infinity, no duplicate keys
# ---------------------------------------------------------------------------

class JNum(decimal.Decimal):
    """A JSON number with a fraction or an exponent: exact (a Decimal) and
    remembering its text, which is what lands in numeric/text/jsonb."""

    __slots__ = ("raw",)

    def __new__(cls, text):
        obj = decimal.Decimal.__new__(cls, text)
        obj.raw = text
        return obj


def _reject_constant(name):
    raise ValueError("%s is not a JSON value" % name)


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError("duplicate key %s" % json.dumps(key, ensure_ascii=False))
        obj[key] = value
    return obj


_decoder = json.JSONDecoder(parse_float=JNum, parse_constant=_reject_constant,
                            object_pairs_hook=_no_duplicates)


def loads_exact(text):
    return _decoder.decode(text)


def jdump(value):
    """JSON text of a parsed value, numbers exactly as they were received."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, JNum):
        return value.raw
    if isinstance(value, int):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(jdump(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jdump(v)
                              for k, v in value.items()) + "}"
    raise TypeError("cannot serialise %r" % (value,))


def canonical_key(values):
    """Text identifying a primary-key value the way PostgreSQL's equality
    does (numeric 10 = 10.0): numbers normalised."""

    def canon(v):
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, (int, decimal.Decimal)):
            d = decimal.Decimal(v.raw if isinstance(v, JNum) else v)
            return "#" + ("0" if d == 0 else str(d.normalize()))
        if isinstance(v, list):
            return [canon(x) for x in v]
        if isinstance(v, dict):
            return {k: canon(x) for k, x in sorted(v.items())}
        return v

    return json.dumps([canon(v) for v in values], ensure_ascii=False, separators=(",", ":"))


def short(value, limit=80):
    text = jdump(value) if not isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


def is_int(value):
    return type(value) is int


def jtype(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, decimal.Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def has_nul(value):
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    if isinstance(value, dict):
        return any("\x00" in k or has_nul(v) for k, v in value.items())
    return False


# ---------------------------------------------------------------------------
# Message validation (stateless part)
# ---------------------------------------------------------------------------

def check_keys(obj, where, required, optional=()):
    allowed = set(required) | set(optional)
    for key in obj:
        if key not in allowed:
            raise bad("%s: unknown field %s (allowed: %s)"
                      % (where, json.dumps(key, ensure_ascii=False), ", ".join(sorted(allowed))))
    for key in required:
        if key not in obj:
            raise bad("%s: \"%s\" is missing" % (where, key))


def check_name(value, where, what="a name"):
    if not isinstance(value, str) or value == "":
        raise bad("%s must be %s (a non-empty string), got %s" % (where, what, short(value)))
    if "\x00" in value:
        raise bad("%s contains U+0000" % where)
    if len(value.encode("utf-8")) > NAME_MAX_BYTES:
        raise bad("%s %s is longer than %d bytes, which no PostgreSQL name can be"
                  % (where, short(value), NAME_MAX_BYTES))
    return value


def check_uint(value, where, maximum, what="a non-negative integer"):
    if not is_int(value) or value < 0 or value > maximum:
        raise bad("%s must be %s, got %s" % (where, what, short(value)))
    return value


COLUMN_TYPES = {"number": "numeric", "boolean": "boolean", "string": "text", "array": "jsonb"}


def schema_column_type(prop):
    """PostgreSQL type of the column for a json_schema property."""
    t = prop.get("type")
    if isinstance(t, list):
        t = [x for x in t if x != "null"]
        t = t[0] if len(t) == 1 else None
    return COLUMN_TYPES.get(t, "jsonb")


def value_matches(prop_type, value):
    if value is None:
        return True
    if isinstance(prop_type, list):
        return any(value_matches(t, value) for t in prop_type)
    if prop_type == "number":
        return isinstance(value, (int, decimal.Decimal)) and not isinstance(value, bool)
    if prop_type == "integer":
        return is_int(value)
    if prop_type == "string":
        return isinstance(value, str)
    if prop_type == "boolean":
        return isinstance(value, bool)
    if prop_type == "array":
        return isinstance(value, list)
    if prop_type == "object":
        return isinstance(value, dict)
    if prop_type == "null":
        return False
    return True  # a type this receiver does not know: anything (lands as jsonb)


class StreamDef:
    """A validated STREAM object."""

    def __init__(self, raw, where):
        self.raw = raw
        w = where + ": stream"
        if not isinstance(raw, dict):
            raise bad("%s must be an object" % w)
        check_keys(raw, w, ("namespace", "name", "json_schema", "primary_key", "sync_mode",
                            "destination_sync_mode", "method"), ("cursor_field",))
        self.namespace = check_name(raw["namespace"], w + ".namespace")
        self.name = check_name(raw["name"], w + ".name")
        self.key = (self.namespace, self.name)
        schema = raw["json_schema"]
        if not isinstance(schema, dict):
            raise bad("%s.json_schema must be an object" % w)
        if schema.get("type") != "object":
            raise bad("%s.json_schema.type must be \"object\", got %s" % (w, short(schema.get("type"))))
        props = schema.get("properties")
        if not isinstance(props, dict):
            raise bad("%s.json_schema.properties must be an object" % w)
        self.props = {}      # column -> JSON-schema type (str or list)
        self.coltypes = {}   # column -> PostgreSQL type
        for col, prop in props.items():
            pw = "%s.json_schema.properties.%s" % (w, json.dumps(col, ensure_ascii=False))
            check_name(col, pw, "a column name")
            if col == EMITTED_AT:
                raise bad("%s: the column name %s is reserved for the receiver's metadata column"
                          % (pw, EMITTED_AT))
            if col in SYSTEM_COLUMNS:
                raise bad("%s: %s is a PostgreSQL system column name, which no destination table column "
                          "can have" % (pw, col))
            if not isinstance(prop, dict):
                raise bad("%s must be an object" % pw)
            t = prop.get("type")
            if not (isinstance(t, str) or (isinstance(t, list) and t and all(isinstance(x, str) for x in t))):
                raise bad("%s.type must be a JSON-schema type name, got %s" % (pw, short(t)))
            self.props[col] = t
            self.coltypes[col] = schema_column_type(prop)
        self.columns = list(self.props)
        self.column_set = set(self.columns)

        self.method = raw["method"]
        if self.method not in METHODS:
            raise bad("%s.method must be one of %s, got %s" % (w, ", ".join(METHODS), short(self.method)))
        self.sync_mode = raw["sync_mode"]
        expected = "full_refresh" if self.method == "full_refresh" else "incremental"
        if self.sync_mode != expected:
            raise bad("%s.sync_mode must be \"%s\" for the method \"%s\", got %s"
                      % (w, expected, self.method, short(self.sync_mode)))
        self.mode = raw["destination_sync_mode"]
        if self.mode not in DEST_MODES:
            raise bad("%s.destination_sync_mode must be one of %s, got %s"
                      % (w, ", ".join(DEST_MODES), short(self.mode)))

        pk = raw["primary_key"]
        if not isinstance(pk, list):
            raise bad("%s.primary_key must be a list of column paths" % w)
        self.pk = []
        for i, path in enumerate(pk):
            pw = "%s.primary_key[%d]" % (w, i)
            if not isinstance(path, list) or len(path) != 1 or not isinstance(path[0], str):
                raise bad("%s must be a column path of one column name, like [\"id\"], got %s"
                          % (pw, short(path)))
            if path[0] not in self.column_set:
                raise bad("%s: %s is not a property of json_schema" % (pw, short(path[0])))
            if path[0] in self.pk:
                raise bad("%s: %s is listed twice" % (pw, short(path[0])))
            self.pk.append(path[0])
        if self.mode == "append_dedup" and not self.pk:
            raise bad("%s: destination_sync_mode \"append_dedup\" needs a non-empty primary_key" % w)

        self.cdc = self.method == "cdc"
        cursor = raw.get("cursor_field")
        if self.method == "cursor":
            if not (isinstance(cursor, list) and len(cursor) == 1 and isinstance(cursor[0], str)):
                raise bad("%s.cursor_field must be a one-column path like [\"updated_at\"] for the method "
                          "\"cursor\", got %s" % (w, "nothing" if cursor is None else short(cursor)))
            if cursor[0] not in self.column_set:
                raise bad("%s.cursor_field: %s is not a property of json_schema" % (w, short(cursor[0])))
        elif self.cdc:
            if cursor != [CDC_LSN]:
                raise bad("%s.cursor_field must be [\"%s\"] for the method \"cdc\", got %s"
                          % (w, CDC_LSN, "nothing" if "cursor_field" not in raw else short(cursor)))
        elif "cursor_field" in raw:
            raise bad("%s.cursor_field must be absent for the method \"%s\"" % (w, self.method))
        if self.cdc:
            for col, t in ((CDC_LSN, "number"), (CDC_UPDATED, "string"), (CDC_DELETED, "string")):
                if col not in self.props:
                    raise bad("%s.json_schema.properties lacks \"%s\", which a cdc stream's schema includes"
                              % (w, col))
                if self.props[col] != t:
                    raise bad("%s.json_schema.properties.%s.type must be \"%s\", got %s"
                              % (w, col, t, short(self.props[col])))
            for col in CDC_COLUMNS:
                if col in self.pk:
                    raise bad("%s.primary_key cannot contain %s" % (w, col))

    @property
    def label(self):
        return "%s.%s" % (self.namespace, self.name)


def parse_stream(msg, where):
    check_keys(msg, where, ("type", "stream"))
    return StreamDef(msg["stream"], where)


def parse_record(msg, where):
    check_keys(msg, where, ("type", "record"))
    rec = msg["record"]
    w = where + ": record"
    if not isinstance(rec, dict):
        raise bad("%s must be an object" % w)
    check_keys(rec, w, ("namespace", "stream", "emitted_at", "data"), ("unchanged",))
    check_name(rec["namespace"], w + ".namespace")
    check_name(rec["stream"], w + ".stream")
    check_uint(rec["emitted_at"], w + ".emitted_at", MAX_EMITTED_AT,
               "an integer number of milliseconds since the Unix epoch")
    if not isinstance(rec["data"], dict):
        raise bad("%s.data must be an object, got %s" % (w, short(rec["data"])))
    if "unchanged" in rec:
        unchanged = rec["unchanged"]
        if not isinstance(unchanged, list) or not all(isinstance(c, str) for c in unchanged):
            raise bad("%s.unchanged must be a list of column names, got %s" % (w, short(unchanged)))
        if len(set(unchanged)) != len(unchanged):
            raise bad("%s.unchanged lists a column twice: %s" % (w, short(unchanged)))
    return rec


def parse_control(msg, where):
    check_keys(msg, where, ("type", "control"))
    ctl = msg["control"]
    w = where + ": control"
    if not isinstance(ctl, dict):
        raise bad("%s must be an object" % w)
    kind = ctl.get("kind")
    if kind == "truncate":
        check_keys(ctl, w, ("kind", "namespace", "stream", "lsn"))
    elif kind == "refresh_start":
        check_keys(ctl, w, ("kind", "namespace", "stream", "generation"), ("lsn",))
    elif kind == "refresh_end":
        check_keys(ctl, w, ("kind", "namespace", "stream", "generation"))
    else:
        raise bad("%s.kind must be \"truncate\", \"refresh_start\" or \"refresh_end\", got %s"
                  % (w, "nothing" if "kind" not in ctl else short(kind)))
    check_name(ctl["namespace"], w + ".namespace")
    check_name(ctl["stream"], w + ".stream")
    if "lsn" in ctl:
        check_uint(ctl["lsn"], w + ".lsn", MAX_LSN, "an LSN (a non-negative integer below 2^64)")
    if "generation" in ctl:
        check_uint(ctl["generation"], w + ".generation", MAX_SEQ)
    return ctl


def parse_state(msg, where, header_seq):
    check_keys(msg, where, ("type", "state"))
    st = msg["state"]
    w = where + ": state"
    if not isinstance(st, dict):
        raise bad("%s must be an object" % w)
    check_keys(st, w, ("batch_seq", "streams"))
    seq = st["batch_seq"]
    if not is_int(seq) or seq < 1:
        raise bad("%s.batch_seq must be a positive integer, got %s" % (w, short(seq)))
    if seq != header_seq:
        raise bad("%s.batch_seq is %d, but the request's Calabi-Batch-Seq is %d" % (w, seq, header_seq))
    streams = st["streams"]
    if not isinstance(streams, list):
        raise bad("%s.streams must be a list" % w)
    for i, s in enumerate(streams):
        sw = "%s.streams[%d]" % (w, i)
        if not isinstance(s, dict):
            raise bad("%s must be an object" % sw)
        check_keys(s, sw, ("namespace", "name", "state"))
        check_name(s["namespace"], sw + ".namespace")
        check_name(s["name"], sw + ".name")
        if not isinstance(s["state"], dict):
            raise bad("%s.state must be an object, got %s" % (sw, short(s["state"])))
    return st


def split_lines(body):
    """The body as a list of str lines (without their \\n), checked for
    UTF-8, final newline and empty lines."""
    if not body:
        raise bad("the body is empty: a batch has at least its STATE line")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        line = body.count(b"\n", 0, e.start) + 1
        raise bad("line %d: not valid UTF-8 (byte offset %d in the line)"
                  % (line, e.start - (body.rfind(b"\n", 0, e.start) + 1)))
    if not text.endswith("\n"):
        raise bad("line %d: does not end in \\n (every line, the last included, must)" % (text.count("\n") + 1))
    lines = text.split("\n")
    lines.pop()
    if "\n\n" in text or text.startswith("\n"):
        for i, line in enumerate(lines):
            if line == "":
                raise bad("line %d: empty line (NDJSON has no empty lines)" % (i + 1))
    return lines


def parse_line(line, n):
    where = "line %d" % n
    try:
        msg = loads_exact(line)
    except ValueError as e:
        raise bad("%s: not valid JSON: %s" % (where, e))
    if not isinstance(msg, dict):
        raise bad("%s: a message must be a JSON object, got %s" % (where, jtype(msg)))
    if "type" not in msg:
        raise bad("%s: the message has no \"type\"" % where)
    mtype = msg["type"]
    if mtype not in MESSAGE_TYPES:
        raise bad("%s: unknown message type %s (known: %s)" % (where, short(mtype), ", ".join(MESSAGE_TYPES)))
    if "\\u0000" in line and has_nul(msg):
        raise bad("%s: %s contains a U+0000 character, which PostgreSQL cannot store (nor send)"
                  % (where, mtype))
    return mtype, msg


def parse_body_full(body, header_seq):
    """Every line parsed and checked on its own: [(lineno, type, payload)],
    the STATE object, and counts per type."""
    lines = split_lines(body)
    out = []
    counts = {}
    state = None
    last = len(lines)
    for i, line in enumerate(lines):
        n = i + 1
        mtype, msg = parse_line(line, n)
        counts[mtype] = counts.get(mtype, 0) + 1
        where = "line %d: %s" % (n, mtype)
        if mtype == "STATE":
            if n != last:
                raise bad("line %d: STATE must be the last line of the batch, but %d line(s) follow it"
                          % (n, last - n))
            state = parse_state(msg, where, header_seq)
        elif mtype == "STREAM":
            out.append((n, mtype, parse_stream(msg, where)))
        elif mtype == "RECORD":
            out.append((n, mtype, parse_record(msg, where)))
        else:
            out.append((n, mtype, parse_control(msg, where)))
    if state is None:
        raise bad("the batch has no STATE message: every batch ends with exactly one (line %d is a %s)"
                  % (last, out[-1][1]))
    return out, state, counts, len(lines)


def parse_body_light(body, header_seq):
    """--no-store's quick check: UTF-8, line structure, and the STATE line
    (the last one, the only one).  Message types are counted from the line
    starts (an exact count for lines that begin with their "type")."""
    if not body:
        raise bad("the body is empty: a batch has at least its STATE line")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        split_lines(body)  # for the message naming the line
    if not body.endswith(b"\n"):
        raise bad("line %d: does not end in \\n (every line, the last included, must)" % (body.count(b"\n") + 1))
    if b"\n\n" in body or body.startswith(b"\n"):
        split_lines(body)
    nlines = body.count(b"\n")
    start = body.rfind(b"\n", 0, len(body) - 1) + 1
    last_line = body[start:-1].decode("utf-8")
    mtype, msg = parse_line(last_line, nlines)
    if mtype != "STATE":
        raise bad("the batch has no STATE message as its last line (line %d is a %s)" % (nlines, mtype))
    state = parse_state(msg, "line %d: STATE" % nlines, header_seq)
    if body.count(b'"STATE"') > 1:
        for i, line in enumerate(body[:start].split(b"\n")[:-1]):
            if b'"STATE"' in line:
                t, _ = parse_line(line.decode("utf-8"), i + 1)
                if t == "STATE":
                    raise bad("line %d: STATE must be the last line of the batch, but %d line(s) follow it"
                              % (i + 1, nlines - i - 1))
    counts = {}
    known = 0
    for t in MESSAGE_TYPES:
        c = 0
        for prefix in (('{"type":"%s"' % t).encode(), ('{"type": "%s"' % t).encode()):
            c += body.count(b"\n" + prefix) + (1 if body.startswith(prefix) else 0)
        if c:
            counts[t] = c
            known += c
    if known < nlines:
        counts["?"] = nlines - known
    return state, counts, nlines


# ---------------------------------------------------------------------------
# Per-stream state: the generation state machine (the same for both backends)
# ---------------------------------------------------------------------------

class StreamState:
    """What the receiver remembers of one stream of one sync.

    bracket, for overwrite streams: 'open' (records go to the open
    generation's staging copy), 'replay' (a completed or abandoned generation
    is being re-sent after a sender restart: its records are already in the
    visible copy, they are ignored), 'closed' (no refresh under way: a record
    is a protocol error)."""

    FIELDS = ("stream_id", "definition", "open_generation", "open_lsn", "done_generation",
              "done_lsn", "bracket", "floor_lsn")

    def __init__(self, key):
        self.key = key
        self.stream_id = None
        self.definition = None
        self.open_generation = None
        self.open_lsn = None
        self.done_generation = None
        self.done_lsn = None
        self.bracket = "closed"
        self.floor_lsn = None
        self.dirty = False
        self.has_tombstones = None   # PG backend cache
        self.defined_in_batch = None


class Counters:
    def __init__(self):
        self.records = 0
        self.ignored = 0
        self.deleted = 0


class BatchApplier:
    """Applies a parsed batch, in line order, through a backend."""

    def __init__(self, backend, sync_id, seq, states):
        self.backend = backend
        self.sync_id = sync_id
        self.seq = seq
        self.states = states
        self.counters = Counters()

    def state_for(self, n, mtype, namespace, name):
        st = self.states.get((namespace, name))
        if st is None or st.definition is None:
            raise bad("line %d: %s for stream %s.%s, but no STREAM for it was received from this sync before"
                      % (n, mtype, namespace, name))
        return st

    def apply(self, messages):
        for n, mtype, payload in messages:
            if mtype == "STREAM":
                self.on_stream(n, payload)
            elif mtype == "RECORD":
                self.on_record(n, payload)
            else:
                self.on_control(n, payload)
        self.backend.flush()

    def on_stream(self, n, sdef):
        st = self.states.get(sdef.key)
        if st is None:
            st = StreamState(sdef.key)
            self.states[sdef.key] = st
        old = st.definition
        self.backend.flush()
        if old is not None and old.mode == "overwrite" and sdef.mode != "overwrite" \
                and st.open_generation is not None:
            self.backend.drop_staging(st)
            st.open_generation = st.open_lsn = None
        st.definition = sdef
        st.defined_in_batch = self.seq
        st.dirty = True
        self.backend.ensure_table(st, old)
        # A STREAM begins every run: after a completed refresh, records that
        # come without a new refresh_start are a resumed read of that
        # generation (the sender restarted after its refresh_end was
        # accepted but before it committed the checkpoint).
        if sdef.mode == "overwrite" and st.bracket == "closed":
            if st.open_generation is not None:
                st.bracket = "open"
            elif st.done_generation is not None:
                st.bracket = "replay"
        if sdef.mode != "overwrite" and st.bracket != "closed" and st.open_generation is None:
            st.bracket = "closed"

    def on_record(self, n, rec):
        st = self.state_for(n, "RECORD", rec["namespace"], rec["stream"])
        d = st.definition
        where = "line %d: RECORD for %s" % (n, d.label)
        data = rec["data"]
        unchanged = rec.get("unchanged") or []
        if unchanged and not d.cdc:
            raise bad("%s: record.unchanged is only for changes of a cdc stream (this stream's method is %s)"
                      % (where, d.method))
        for col in unchanged:
            if col not in d.column_set:
                raise bad("%s: record.unchanged lists %s, which is not in the stream's schema" % (where, short(col)))
            if col in data:
                raise bad("%s: record.unchanged lists %s, which record.data also has" % (where, short(col)))
            if col in d.pk or col in CDC_COLUMNS:
                raise bad("%s: record.unchanged cannot list %s (a key or _calabi_cdc_* column)"
                          % (where, short(col)))
        if len(data) + len(unchanged) != len(d.columns) or any(c not in d.column_set for c in data):
            extra = [c for c in data if c not in d.column_set]
            if extra:
                raise bad("%s: record.data has %s, which is not in the stream's schema"
                          % (where, ", ".join(json.dumps(c, ensure_ascii=False) for c in extra)))
            missing = [c for c in d.columns if c not in data and c not in unchanged]
            raise bad("%s: record.data lacks %s (every column of the schema but those listed in unchanged)"
                      % (where, ", ".join(json.dumps(c, ensure_ascii=False) for c in missing)))
        for col, value in data.items():
            if value is not None and not value_matches(d.props[col], value):
                raise bad("%s: record.data.%s is a %s, but the schema says %s"
                          % (where, json.dumps(col, ensure_ascii=False), jtype(value), short(d.props[col])))
        lsn = None
        deleted = False
        if d.cdc:
            lsn = data[CDC_LSN]
            check_uint(lsn, where + ": record.data." + CDC_LSN, MAX_LSN,
                       "an LSN (a non-negative integer below 2^64)")
            if not isinstance(data[CDC_UPDATED], str):
                raise bad("%s: record.data.%s must be a timestamp string, got %s"
                          % (where, CDC_UPDATED, short(data[CDC_UPDATED])))
            deleted = data[CDC_DELETED] is not None
            if deleted and unchanged:
                raise bad("%s: a delete carries every column, but record.unchanged is not empty" % where)
        if d.mode == "append_dedup":
            for col in d.pk:
                if data.get(col) is None:
                    raise bad("%s: record.data.%s is a primary key column and cannot be null"
                              % (where, json.dumps(col, ensure_ascii=False)))
        if d.cdc and st.floor_lsn is not None and lsn < st.floor_lsn:
            self.counters.ignored += 1  # older than a truncate already applied
            return
        if d.mode == "overwrite":
            if st.bracket == "replay":
                self.counters.ignored += 1
                return
            if st.bracket != "open" or st.open_generation is None:
                raise bad("%s: an overwrite stream's records must lie between a refresh_start and its "
                          "refresh_end, and no refresh is under way" % where)
            self.backend.insert(st, rec, staging=True)
        elif d.mode == "append":
            self.backend.insert(st, rec, staging=False)
        else:
            self.backend.upsert(st, rec, lsn, deleted)
        self.counters.records += 1

    def on_control(self, n, ctl):
        kind = ctl["kind"]
        st = self.state_for(n, "CONTROL (%s)" % kind, ctl["namespace"], ctl["stream"])
        d = st.definition
        where = "line %d: CONTROL %s for %s" % (n, kind, d.label)
        self.backend.flush()
        st.dirty = True
        if kind == "truncate":
            if not d.cdc:
                raise bad("%s: truncate is a CDC event, but this stream's method is %s" % (where, d.method))
            lsn = ctl["lsn"]
            self.backend.truncate(st, lsn)
            if st.floor_lsn is None or lsn > st.floor_lsn:
                st.floor_lsn = lsn
            return
        g = ctl["generation"]
        if kind == "refresh_start":
            lsn = ctl.get("lsn")
            if d.cdc and lsn is None:
                raise bad("%s: control.lsn is missing (a cdc stream's refresh_start carries it)" % where)
            if st.open_generation == g:
                st.bracket = "open"          # a resumed read: changes nothing
                return
            if (st.done_generation is not None and g <= st.done_generation) or \
                    (st.open_generation is not None and g < st.open_generation):
                st.bracket = "replay"        # an older read, re-sent after a restart
                return
            if st.open_generation is not None:
                self.backend.drop_staging(st)  # abandoned by the newer generation
            st.open_generation = g
            st.open_lsn = lsn
            st.bracket = "open"
            if d.mode == "overwrite":
                self.backend.create_staging(st)
            return
        # refresh_end
        if st.open_generation == g:
            if d.mode == "overwrite":
                self.backend.swap_staging(st)
            elif d.mode == "append_dedup" and d.cdc and st.open_lsn is not None:
                self.counters.deleted += self.backend.prune(st, st.open_lsn)
            st.done_generation = g
            st.done_lsn = st.open_lsn
            st.open_generation = st.open_lsn = None
            st.bracket = "closed"
        elif st.done_generation is not None and g == st.done_generation:
            # a repeat of the last completed refresh_end: its pruning again
            # (idempotent; removes rows a replay may have brought back)
            if d.mode == "append_dedup" and d.cdc and st.done_lsn is not None:
                self.counters.deleted += self.backend.prune(st, st.done_lsn)
            st.bracket = "closed"
        elif (st.done_generation is not None and g < st.done_generation) or \
                (st.open_generation is not None and g < st.open_generation):
            st.bracket = "closed"
        else:
            raise bad("%s: generation %d was never started (%s)"
                      % (where, g, "the open generation is %d" % st.open_generation
                         if st.open_generation is not None else "no refresh is open"))


# ---------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------

class AcceptedBefore(Exception):
    def __init__(self, received_at):
        super().__init__("already accepted")
        self.received_at = received_at


class MemoryStore:
    """--no-store: batch numbers, and stream states when fully validating,
    in memory; nothing is written anywhere."""

    class NullBackend:
        def flush(self): pass
        def ensure_table(self, st, old): pass
        def drop_staging(self, st): pass
        def create_staging(self, st): pass
        def swap_staging(self, st): pass
        def insert(self, st, rec, staging): pass
        def upsert(self, st, rec, lsn, deleted): pass
        def truncate(self, st, lsn): pass
        def prune(self, st, lsn): return 0

    def __init__(self):
        self.lock = threading.Lock()
        self.syncs = {}

    def describe(self):
        return "memory (--no-store)"

    def process(self, sync_id, sync_name, seq, key, digest, body_len, messages, state, nlines):
        with self.lock:
            s = self.syncs.setdefault(sync_id, {"max_seq": 0, "accepted": {}, "states": {}, "lock": threading.Lock()})
        with s["lock"]:
            if seq in s["accepted"]:
                if s["accepted"][seq][0] == digest:
                    raise AcceptedBefore(s["accepted"][seq][1])
                raise bad("Idempotency-Key %s was already accepted for a different body: a batch number is "
                          "never reused for another body" % key)
            check_order(seq, s["max_seq"])
            counters = Counters()
            counters.records = None  # not looked at
            if messages is not None:
                states = copy.deepcopy(s["states"])
                applier = BatchApplier(self.NullBackend(), sync_id, seq, states)
                applier.apply(messages)
                s["states"] = states
                counters = applier.counters
            s["accepted"][seq] = (digest, utcnow_iso())
            s["max_seq"] = seq
            return counters


def check_order(seq, max_seq):
    if seq <= max_seq:
        raise bad("Calabi-Batch-Seq %d is not above %d, the greatest already accepted for this sync: a batch "
                  "number only grows, and this one was never accepted (a stale or out-of-order sender?); "
                  "refused so that older data cannot overwrite newer" % (seq, max_seq))


def qi(name):
    return '"' + name.replace('"', '""') + '"'


def qt(namespace, name):
    return qi(namespace) + "." + qi(name)


def widen(a, b):
    if a == b:
        return a
    if "jsonb" in (a, b):
        return "jsonb"
    return "text"


PLACEHOLDERS = {"numeric": "%s::numeric", "boolean": "%s::boolean", "text": "%s::text", "jsonb": "%s::jsonb"}


def sql_value(value, coltype):
    """A parsed JSON value as the parameter for a column of coltype."""
    if value is None:
        return None
    if coltype == "boolean" and isinstance(value, bool):
        return value
    if coltype == "jsonb":
        return jdump(value)
    if isinstance(value, str):
        return value
    if isinstance(value, JNum):
        return value.raw
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return jdump(value)


class PgStore:
    """Batches land in a PostgreSQL database (see docs/receiver.md)."""

    def __init__(self, dsn, meta_schema, max_connections):
        import psycopg2
        import psycopg2.extras
        import psycopg2.pool
        self.psycopg2 = psycopg2
        self.extras = psycopg2.extras
        self.dsn = dsn
        self.meta = meta_schema
        self.m = qi(meta_schema)
        self.pool = psycopg2.pool.ThreadedConnectionPool(1, max_connections, dsn,
                                                         application_name="calabi_receiver")
        self.slots = threading.BoundedSemaphore(max_connections)
        self.bootstrap()

    def describe(self):
        return "postgresql"

    def bootstrap(self):
        conn = self.pool.getconn()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("calabi_receiver.bootstrap",))
                m = self.m
                cur.execute("""
CREATE SCHEMA IF NOT EXISTS {m};
CREATE TABLE IF NOT EXISTS {m}.syncs (
    sync_id     uuid PRIMARY KEY,
    sync_name   text NOT NULL,
    max_seq     bigint NOT NULL DEFAULT 0,
    first_seen  timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_seen   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS {m}.batches (
    sync_id         uuid NOT NULL REFERENCES {m}.syncs,
    batch_seq       bigint NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    body_sha256     text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    body_bytes      bigint NOT NULL,
    lines           integer NOT NULL,
    records         integer NOT NULL,
    state           jsonb NOT NULL,
    PRIMARY KEY (sync_id, batch_seq)
);
CREATE TABLE IF NOT EXISTS {m}.streams (
    stream_id        bigserial UNIQUE,
    sync_id          uuid NOT NULL REFERENCES {m}.syncs,
    namespace        text NOT NULL,
    name             text NOT NULL,
    definition       jsonb NOT NULL,
    defined_in_batch bigint,
    defined_at       timestamptz,
    open_generation  bigint,
    open_lsn         numeric,
    done_generation  bigint,
    done_lsn         numeric,
    bracket          text NOT NULL DEFAULT 'closed'
                     CHECK (bracket IN ('open', 'replay', 'closed')),
    floor_lsn        numeric,
    PRIMARY KEY (sync_id, namespace, name)
);
CREATE TABLE IF NOT EXISTS {m}.deleted_rows (
    stream_id   bigint NOT NULL REFERENCES {m}.streams (stream_id),
    key         text NOT NULL,
    lsn         numeric NOT NULL,
    PRIMARY KEY (stream_id, key)
);
CREATE OR REPLACE VIEW {m}.open_generations AS
    SELECT sync_id, namespace, name, open_generation AS generation, open_lsn AS lsn,
           definition->>'destination_sync_mode' AS destination_sync_mode,
           CASE WHEN definition->>'destination_sync_mode' = 'overwrite'
                THEN format('%I.%I', '{meta}', 'stage_' || stream_id) END AS staging_table
    FROM {m}.streams WHERE open_generation IS NOT NULL;
""".format(m=m, meta=self.meta.replace("'", "''")))
            conn.commit()
        finally:
            self.pool.putconn(conn)

    def process(self, sync_id, sync_name, seq, key, digest, body_len, messages, state, nlines):
        psycopg2 = self.psycopg2
        if not self.slots.acquire(timeout=60):
            raise Refusal(503, "every database connection of the receiver is busy", {"Retry-After": "1"})
        conn = None
        broken = False
        try:
            try:
                conn = self.pool.getconn()
                if conn.closed:
                    raise psycopg2.OperationalError("connection closed")
            except psycopg2.Error as e:
                broken = True
                raise Refusal(503, "the destination database is unavailable: %s" % str(e).strip(),
                              {"Retry-After": "1"})
            try:
                result = self._process(conn, sync_id, sync_name, seq, key, digest, body_len, messages,
                                       state, nlines)
                conn.commit()
                return result
            except (Refusal, AcceptedBefore):
                conn.rollback()
                raise
            except psycopg2.OperationalError as e:
                broken = True
                raise Refusal(503, "the destination database failed: %s" % str(e).strip(), {"Retry-After": "1"})
            except psycopg2.Error as e:
                try:
                    conn.rollback()
                except psycopg2.Error:
                    broken = True
                raise Refusal(500, "the destination database refused the batch: %s" % str(e).strip())
        finally:
            if conn is not None:
                try:
                    self.pool.putconn(conn, close=broken or bool(conn.closed))
                except Exception:
                    pass
            self.slots.release()

    def _process(self, conn, sync_id, sync_name, seq, key, digest, body_len, messages, state, nlines):
        m = self.m
        cur = conn.cursor()
        # a 200 says the batch is kept: with synchronous_commit off (for the
        # server, the database or the DSN) a crash of the destination lost
        # batches already acknowledged, which the sender never sends again
        # (issue 14).  Set per transaction: a DSN's own options stay, and
        # poolers that refuse the options startup parameter work.
        cur.execute("SET LOCAL synchronous_commit = on")
        cur.execute("INSERT INTO %s.syncs (sync_id, sync_name) VALUES (%%s, %%s) ON CONFLICT DO NOTHING" % m,
                    (sync_id, sync_name))
        cur.execute("SELECT max_seq FROM %s.syncs WHERE sync_id = %%s FOR UPDATE" % m, (sync_id,))
        max_seq = cur.fetchone()[0]
        cur.execute("SELECT body_sha256, received_at FROM %s.batches WHERE sync_id = %%s AND batch_seq = %%s" % m,
                    (sync_id, seq))
        row = cur.fetchone()
        if row is not None:
            if row[0] == digest:
                raise AcceptedBefore(row[1].isoformat())
            raise bad("Idempotency-Key %s was already accepted for a different body: a batch number is "
                      "never reused for another body" % key)
        check_order(seq, max_seq)
        states = self.load_states(cur, sync_id)
        backend = PgBackend(self, cur, sync_id)
        applier = BatchApplier(backend, sync_id, seq, states)
        applier.apply(messages)
        self.save_states(cur, sync_id, states)
        cur.execute("INSERT INTO %s.batches (sync_id, batch_seq, idempotency_key, body_sha256, body_bytes, "
                    "lines, records, state) VALUES (%%s, %%s, %%s, %%s, %%s, %%s, %%s, %%s::jsonb)" % m,
                    (sync_id, seq, key, digest, body_len, nlines, applier.counters.records, jdump(state)))
        cur.execute("UPDATE %s.syncs SET max_seq = %%s, sync_name = %%s, last_seen = clock_timestamp() "
                    "WHERE sync_id = %%s" % m, (seq, sync_name, sync_id))
        return applier.counters

    def load_states(self, cur, sync_id):
        cur.execute("SELECT namespace, name, stream_id, definition::text, defined_in_batch, open_generation, "
                    "open_lsn::text, done_generation, done_lsn::text, bracket, floor_lsn::text "
                    "FROM %s.streams WHERE sync_id = %%s" % self.m, (sync_id,))
        states = {}
        for (ns, name, sid, definition, dib, og, ol, dg, dl, bracket, fl) in cur.fetchall():
            st = StreamState((ns, name))
            st.stream_id = sid
            st.definition = StreamDef(loads_exact(definition), "stored definition of %s.%s" % (ns, name))
            st.defined_in_batch = dib
            st.open_generation = og
            st.open_lsn = int(ol) if ol is not None else None
            st.done_generation = dg
            st.done_lsn = int(dl) if dl is not None else None
            st.bracket = bracket
            st.floor_lsn = int(fl) if fl is not None else None
            states[(ns, name)] = st
        return states

    def save_states(self, cur, sync_id, states):
        for st in states.values():
            if not st.dirty:
                continue
            ns, name = st.key
            cur.execute(
                "UPDATE %s.streams SET definition = %%s::jsonb, defined_in_batch = %%s, "
                "defined_at = COALESCE(CASE WHEN defined_in_batch IS DISTINCT FROM %%s THEN clock_timestamp() END, "
                "defined_at), open_generation = %%s, open_lsn = %%s::numeric, done_generation = %%s, "
                "done_lsn = %%s::numeric, bracket = %%s, floor_lsn = %%s::numeric "
                "WHERE stream_id = %%s" % self.m,
                (jdump(st.definition.raw), st.defined_in_batch, st.defined_in_batch, st.open_generation,
                 None if st.open_lsn is None else str(st.open_lsn), st.done_generation,
                 None if st.done_lsn is None else str(st.done_lsn), st.bracket,
                 None if st.floor_lsn is None else str(st.floor_lsn), st.stream_id))


class PgBackend:
    """The data side of one batch, inside its transaction."""

    def __init__(self, store, cur, sync_id):
        self.store = store
        self.m = store.m
        self.cur = cur
        self.sync_id = sync_id
        self.coltypes = {}   # (namespace, name) -> {column: PostgreSQL type}
        self.pending = None  # (table sql, columns, placeholders, [rows])
        self.last_values = {}  # (stream_id, key) -> row values, for unchanged columns of append streams

    # -- helpers --
    def execute(self, sql, params=None):
        self.cur.execute(sql, params)

    def lock(self, what):
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("calabi_receiver." + what,))

    def table_columns(self, table_sql):
        self.execute("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                     "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
                     "ORDER BY a.attnum", (table_sql,))
        return dict(self.cur.fetchall())

    def staging_sql(self, st):
        return "%s.%s" % (self.m, qi("stage_%d" % st.stream_id))

    def types_for(self, st):
        """The table's columns and types, read once per batch; a table or
        column dropped by someone since the STREAM is built again."""
        types = self.coltypes.get(st.key)
        if types is None:
            ns, name = st.key
            types = self.table_columns(qt(ns, name))
            if not types or any(c not in types for c in st.definition.columns) or EMITTED_AT not in types:
                self.ensure_table(st, st.definition)
                types = self.coltypes[st.key]
            self.coltypes[st.key] = types
        return types

    def flush(self):
        if self.pending is None:
            return
        table, cols, template, rows = self.pending
        self.pending = None
        self.store.extras.execute_values(
            self.cur, "INSERT INTO %s (%s) VALUES %%s" % (table, ", ".join(qi(c) for c in cols)),
            rows, template=template, page_size=1000)

    # -- STREAM --
    def ensure_table(self, st, old):
        self.flush()
        d = st.definition
        ns, name = d.key
        if st.stream_id is None:
            self.execute("INSERT INTO %s.streams (sync_id, namespace, name, definition, defined_at) "
                         "VALUES (%%s, %%s, %%s, %%s::jsonb, clock_timestamp()) "
                         "ON CONFLICT (sync_id, namespace, name) DO UPDATE SET definition = EXCLUDED.definition "
                         "RETURNING stream_id" % self.m, (self.sync_id, ns, name, jdump(d.raw)))
            st.stream_id = self.cur.fetchone()[0]
        self.lock("schema:" + ns)
        self.execute("CREATE SCHEMA IF NOT EXISTS %s" % qi(ns))
        self.lock("table:%s.%s" % (ns, name))
        table = qt(ns, name)
        have = self.table_columns(table)
        if not have:
            cols = ["%s %s" % (qi(c), d.coltypes[c]) for c in d.columns]
            cols.append("%s timestamptz" % qi(EMITTED_AT))
            self.execute("CREATE TABLE %s (%s)" % (table, ", ".join(cols)))
            have = self.table_columns(table)
        else:
            want = dict(d.coltypes)
            want[EMITTED_AT] = "timestamptz"
            self.reconcile_columns(table, have, want)
            have = self.table_columns(table)
        self.coltypes[d.key] = have
        if st.open_generation is not None and d.mode == "overwrite":
            staging = self.staging_sql(st)
            shave = self.table_columns(staging)
            if shave:
                self.reconcile_columns(staging, shave, have)
            else:
                self.create_staging(st)
        self.reconcile_key(st, table)

    def reconcile_columns(self, table, have, want):
        for col, t in want.items():
            if col not in have:
                self.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, qi(col), t))
            elif have[col] != t and have[col] in PLACEHOLDERS and t in PLACEHOLDERS:
                target = widen(have[col], t)
                if target != have[col]:
                    using = "to_jsonb(%s)" % qi(col) if target == "jsonb" else "%s::text" % qi(col)
                    self.execute("ALTER TABLE %s ALTER COLUMN %s TYPE %s USING %s"
                                 % (table, qi(col), target, using))

    def key_index_name(self, ns, name):
        return "_calabi_key_" + hashlib.md5(("%s.%s" % (ns, name)).encode("utf-8")).hexdigest()[:16]

    def reconcile_key(self, st, table):
        d = st.definition
        ns, name = d.key
        idx = self.key_index_name(ns, name)
        self.execute("SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i "
                     "JOIN pg_class c ON c.oid = i.indexrelid "
                     "CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
                     "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                     "WHERE i.indrelid = to_regclass(%s) AND c.relname = %s GROUP BY i.indexrelid",
                     (table, idx))
        row = self.cur.fetchone()
        current = list(row[0]) if row else None
        wanted = list(d.pk) if d.mode == "append_dedup" else None
        if current == wanted:
            return
        if current is not None:
            self.execute("DROP INDEX %s.%s" % (qi(ns), qi(idx)))
        if wanted is None:
            return
        # rows that were appended before the stream became append_dedup (or
        # had another key): keep the newest version per key
        same = " AND ".join("a.%s IS NOT DISTINCT FROM b.%s" % (qi(c), qi(c)) for c in wanted)
        if d.cdc:
            older = ("(COALESCE(a.%s, -1), a.ctid) < (COALESCE(b.%s, -1), b.ctid)" % (qi(CDC_LSN), qi(CDC_LSN)))
        else:
            older = "a.ctid < b.ctid"
        self.execute("DELETE FROM %s a USING %s b WHERE %s AND %s" % (table, table, same, older))
        if d.cdc:
            self.execute("DELETE FROM %s WHERE %s IS NOT NULL" % (table, qi(CDC_DELETED)))
        self.execute("CREATE UNIQUE INDEX %s ON %s (%s)" % (qi(idx), table, ", ".join(qi(c) for c in wanted)))

    # -- overwrite generations --
    def create_staging(self, st):
        ns, name = st.key
        self.types_for(st)
        staging = self.staging_sql(st)
        self.execute("DROP TABLE IF EXISTS %s" % staging)
        self.execute("CREATE TABLE %s (LIKE %s)" % (staging, qt(ns, name)))

    def drop_staging(self, st):
        self.flush()
        if st.stream_id is not None:
            self.execute("DROP TABLE IF EXISTS %s" % self.staging_sql(st))

    def swap_staging(self, st):
        self.flush()
        ns, name = st.key
        table = qt(ns, name)
        staging = self.staging_sql(st)
        cols = ", ".join(qi(c) for c in self.types_for(st))
        # DELETE + INSERT in the batch's transaction: readers keep seeing the
        # previous copy until the commit, without ever waiting; views and
        # grants on the table are untouched.
        self.execute("DELETE FROM %s" % table)
        pk = st.definition.pk if st.definition else None
        if pk:
            # A sender that restarts resumes a keyed read after its last
            # acknowledged key, so the batch in flight at the crash may come
            # twice (at least once): keep the last version of each key.
            keys = ", ".join(qi(c) for c in pk)
            self.execute("INSERT INTO %s (%s) SELECT DISTINCT ON (%s) %s FROM %s ORDER BY %s, ctid DESC"
                         % (table, cols, keys, cols, staging, keys))
        else:
            self.execute("INSERT INTO %s (%s) SELECT %s FROM %s" % (table, cols, cols, staging))
        self.execute("DROP TABLE %s" % staging)

    # -- rows --
    def row_for(self, st, rec, types, extra=None):
        cols = []
        vals = []
        holders = []
        for col, value in rec["data"].items():
            t = types.get(col, "text")
            cols.append(col)
            vals.append(sql_value(value, t))
            holders.append(PLACEHOLDERS.get(t, "%s::" + t))
        if extra:
            for col, value in extra.items():
                t = types.get(col, "text")
                cols.append(col)
                vals.append(value)
                holders.append(PLACEHOLDERS.get(t, "%s::" + t))
        cols.append(EMITTED_AT)
        vals.append(EPOCH + datetime.timedelta(milliseconds=rec["emitted_at"]))
        holders.append("%s::timestamptz")
        return cols, vals, holders

    def insert(self, st, rec, staging):
        types = self.types_for(st)
        extra = None
        d = st.definition
        unchanged = rec.get("unchanged")
        if d.cdc and d.pk and not staging:
            key = (st.stream_id, canonical_key([rec["data"][c] for c in d.pk]))
            if unchanged:
                extra = self.previous_values(st, rec, key, unchanged, types)
            values = dict(rec["data"])
            if extra:
                values.update(extra)
            self.last_values[key] = values
        cols, vals, holders = self.row_for(st, rec, types, extra)
        table = self.staging_sql(st) if staging else qt(*st.key)
        template = "(" + ", ".join(holders) + ")"
        p = self.pending
        if p is not None and p[0] == table and p[1] == cols and p[2] == template:
            p[3].append(vals)
            if len(p[3]) >= 5000:
                self.flush()
        else:
            self.flush()
            self.pending = (table, cols, template, [vals])

    def previous_values(self, st, rec, key, unchanged, types):
        """The stored value of each unchanged column of an append stream: from
        the row's most recent version (greatest LSN, then last stored)."""
        if key in self.last_values:
            prev = self.last_values[key]
            return {c: sql_value(prev.get(c), types.get(c, "text")) for c in unchanged}
        self.flush()
        d = st.definition
        cond = " AND ".join("%s = %s" % (qi(c), PLACEHOLDERS.get(types.get(c, "text"), "%s")) for c in d.pk)
        self.execute("SELECT %s FROM %s WHERE %s ORDER BY %s DESC NULLS LAST, ctid DESC LIMIT 1"
                     % (", ".join("%s::text" % qi(c) for c in unchanged), qt(*st.key), cond, qi(CDC_LSN)),
                     [sql_value(rec["data"][c], types.get(c, "text")) for c in d.pk])
        row = self.cur.fetchone()
        return {c: (row[i] if row else None) for i, c in enumerate(unchanged)}

    def tombstone_lsn(self, st, key):
        if st.has_tombstones is None:
            self.execute("SELECT EXISTS (SELECT FROM %s.deleted_rows WHERE stream_id = %%s)" % self.m,
                         (st.stream_id,))
            st.has_tombstones = self.cur.fetchone()[0]
        if not st.has_tombstones:
            return None
        self.execute("SELECT lsn::text FROM %s.deleted_rows WHERE stream_id = %%s AND key = %%s" % self.m,
                     (st.stream_id, key))
        row = self.cur.fetchone()
        return int(row[0]) if row else None

    def upsert(self, st, rec, lsn, deleted):
        self.flush()
        d = st.definition
        types = self.types_for(st)
        table = qt(*st.key)
        data = rec["data"]
        pkvals = [data[c] for c in d.pk]
        cond = " AND ".join("%s = %s" % (qi(c), PLACEHOLDERS.get(types.get(c, "text"), "%s")) for c in d.pk)
        cond_params = [sql_value(v, types.get(c, "text")) for c, v in zip(d.pk, pkvals)]
        if d.cdc:
            key = canonical_key(pkvals)
            tomb = self.tombstone_lsn(st, key)
            if deleted:
                self.execute("DELETE FROM %s WHERE %s AND (%s IS NULL OR %s <= %%s::numeric)"
                             % (table, cond, qi(CDC_LSN), qi(CDC_LSN)), cond_params + [str(lsn)])
                self.execute("INSERT INTO %s.deleted_rows (stream_id, key, lsn) VALUES (%%s, %%s, %%s::numeric) "
                             "ON CONFLICT (stream_id, key) DO UPDATE SET lsn = GREATEST(%s.deleted_rows.lsn, "
                             "EXCLUDED.lsn)" % (self.m, self.m), (st.stream_id, key, str(lsn)))
                st.has_tombstones = True
                return
            if tomb is not None:
                if tomb > lsn:
                    return     # a newer delete was applied: this version is older
                self.execute("DELETE FROM %s.deleted_rows WHERE stream_id = %%s AND key = %%s" % self.m,
                             (st.stream_id, key))
        cols, vals, holders = self.row_for(st, rec, types)
        unchanged = set(rec.get("unchanged") or ())
        # every column but the key and the unchanged ones takes the new
        # version's value (columns gone from the schema become null)
        sets = [c for c in types if c not in d.pk and c not in unchanged]
        sql = "INSERT INTO %s AS t (%s) VALUES (%s) ON CONFLICT (%s) DO UPDATE SET %s" % (
            table, ", ".join(qi(c) for c in cols), ", ".join(holders), ", ".join(qi(c) for c in d.pk),
            ", ".join("%s = EXCLUDED.%s" % (qi(c), qi(c)) for c in sets))
        if d.cdc:
            sql += " WHERE t.%s IS NULL OR t.%s <= EXCLUDED.%s" % (qi(CDC_LSN), qi(CDC_LSN), qi(CDC_LSN))
        self.execute(sql, vals)

    def truncate(self, st, lsn):
        self.flush()
        self.types_for(st)
        self.execute("DELETE FROM %s WHERE %s < %%s::numeric" % (qt(*st.key), qi(CDC_LSN)), (str(lsn),))
        if st.open_generation is not None and st.definition.mode == "overwrite":
            self.execute("DELETE FROM %s WHERE %s < %%s::numeric" % (self.staging_sql(st), qi(CDC_LSN)),
                         (str(lsn),))
        self.execute("DELETE FROM %s.deleted_rows WHERE stream_id = %%s AND lsn < %%s::numeric" % self.m,
                     (st.stream_id, str(lsn)))
        self.last_values.clear()

    def prune(self, st, lsn):
        self.flush()
        self.types_for(st)
        self.execute("DELETE FROM %s WHERE %s < %%s::numeric" % (qt(*st.key), qi(CDC_LSN)), (str(lsn),))
        return self.cur.rowcount


# ---------------------------------------------------------------------------
# Faults, request log, OAuth tokens
# ---------------------------------------------------------------------------

FAULT_KINDS = ("status", "retry_after", "stall", "drop", "max_bytes", "refuse")


def check_fault(f):
    if not isinstance(f, dict):
        raise ValueError("a fault is a JSON object")
    kind = f.get("kind")
    if kind not in FAULT_KINDS:
        raise ValueError("kind must be one of %s" % ", ".join(FAULT_KINDS))
    allowed = {"kind", "count", "target"}
    out = {"kind": kind}
    count = f.get("count", 1)
    if not is_int(count) or not (count >= 1 or count == -1):
        raise ValueError("count must be a positive integer, or -1 (until cleared)")
    target = f.get("target", "ingest")
    if target not in ("ingest", "token"):
        raise ValueError("target must be \"ingest\" or \"token\"")
    out["count"] = count
    out["target"] = target

    def status(default, low=100, high=599):
        s = f.get("status", default)
        if not is_int(s) or not low <= s <= high:
            raise ValueError("status must be an integer from %d to %d" % (low, high))
        return s

    if kind == "status":
        allowed |= {"status", "body"}
        out["status"] = status(503, 200)
        if "body" in f:
            if not isinstance(f["body"], str):
                raise ValueError("body must be a string")
            out["body"] = f["body"]
    elif kind == "retry_after":
        allowed |= {"status", "retry_after", "body"}
        out["status"] = status(429)
        ra = f.get("retry_after")
        if is_int(ra) and ra >= 0:
            ra = str(ra)
        if not isinstance(ra, str) or not ra or "\n" in ra or "\r" in ra:
            raise ValueError("retry_after must be a number of seconds or an HTTP date")
        out["retry_after"] = ra
        if "body" in f:
            if not isinstance(f["body"], str):
                raise ValueError("body must be a string")
            out["body"] = f["body"]
    elif kind == "stall":
        allowed |= {"seconds", "apply"}
        s = f.get("seconds")
        if not isinstance(s, (int, float, decimal.Decimal)) or isinstance(s, bool) or s < 0:
            raise ValueError("seconds must be a non-negative number")
        out["seconds"] = float(s)
        out["apply"] = f.get("apply", True)
    elif kind == "drop":
        allowed |= {"apply"}
        out["apply"] = f.get("apply", False)
    elif kind == "max_bytes":
        allowed |= {"bytes"}
        b = f.get("bytes")
        if not is_int(b) or b < 0:
            raise ValueError("bytes must be a non-negative integer")
        out["bytes"] = b
        out.pop("count")
    elif kind == "refuse":
        allowed |= {"status", "error"}
        out["status"] = status(400, 400, 499)
        e = f.get("error", "refused by an injected fault")
        if not isinstance(e, str):
            raise ValueError("error must be a string")
        out["error"] = e
    if "apply" in out and not isinstance(out["apply"], bool):
        raise ValueError("apply must be true or false")
    for key in f:
        if key not in allowed:
            raise ValueError("unknown field \"%s\" for the kind %s" % (key, kind))
    return out


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.queue = []
        self.max_bytes = None

    def add(self, faults):
        with self.lock:
            for f in faults:
                if f["kind"] == "max_bytes":
                    self.max_bytes = f["bytes"]
                else:
                    self.queue.append(dict(f))

    def clear(self):
        with self.lock:
            self.queue = []
            self.max_bytes = None

    def snapshot(self):
        with self.lock:
            return {"queue": [dict(f) for f in self.queue], "max_bytes": self.max_bytes}

    def take(self, target):
        with self.lock:
            for i, f in enumerate(self.queue):
                if f["target"] == target:
                    if f["count"] > 0:
                        f["count"] -= 1
                        if f["count"] == 0:
                            del self.queue[i]
                    return dict(f)
            return None

    def limit(self):
        with self.lock:
            return self.max_bytes


class RequestLog:
    def __init__(self, path, keep):
        self.lock = threading.Lock()
        self.entries = []
        self.keep = keep
        self.dropped = 0
        self.file = open(path, "a", encoding="utf-8") if path else None

    def add(self, entry):
        line = json.dumps(entry, ensure_ascii=False, default=str)
        with self.lock:
            self.entries.append(entry)
            if len(self.entries) > self.keep:
                drop = len(self.entries) - self.keep
                del self.entries[:drop]
                self.dropped += drop
            if self.file:
                self.file.write(line + "\n")
                self.file.flush()

    def since(self, n):
        with self.lock:
            start = max(0, n - self.dropped)
            return list(self.entries[start:])

    def clear(self):
        with self.lock:
            self.dropped += len(self.entries)
            self.entries = []


class Tokens:
    def __init__(self, expires_in):
        self.lock = threading.Lock()
        self.tokens = {}
        self.expires_in = expires_in

    def issue(self):
        token = secrets.token_urlsafe(32)
        with self.lock:
            now = time.monotonic()
            self.tokens = {t: e for t, e in self.tokens.items() if e > now}
            self.tokens[token] = now + self.expires_in
        return token

    def valid(self, token):
        with self.lock:
            exp = self.tokens.get(token)
            return exp is not None and exp > time.monotonic()

    def revoke_all(self):
        with self.lock:
            n = len(self.tokens)
            self.tokens = {}
            return n


def utcnow_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

class BodyError(Exception):
    pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "calabi_receiver/" + RECEIVER_VERSION
    sys_version = ""
    timeout = 120  # idle keep-alive connections

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        if self.server.app.args.verbose:
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def setup(self):
        super().setup()
        self.conn_requests = 0

    # every method goes through dispatch
    def do_POST(self): self.dispatch()
    def do_GET(self): self.dispatch()
    def do_PUT(self): self.dispatch()
    def do_DELETE(self): self.dispatch()
    def do_PATCH(self): self.dispatch()
    def do_OPTIONS(self): self.dispatch()
    def do_HEAD(self): self.dispatch()

    def read_body(self, limit):
        te = self.headers.get("Transfer-Encoding")
        if te is not None:
            if te.strip().lower() != "chunked":
                raise BodyError(501, "Transfer-Encoding %s is not supported" % te)
            chunks = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                if not line.endswith(b"\n"):
                    raise BodyError(400, "bad chunked encoding")
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise BodyError(400, "bad chunk size")
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(8192)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    return b"".join(chunks)
                total += size
                if total > limit:
                    raise BodyError(413, "the body exceeds the receiver's limit of %d bytes" % limit)
                data = self.rfile.read(size)
                if len(data) != size:
                    raise BodyError(400, "the connection closed inside a chunk")
                chunks.append(data)
                self.rfile.readline(8)
        cl = self.headers.get("Content-Length")
        if cl is None:
            if self.command in ("POST", "PUT", "PATCH"):
                raise BodyError(411, "a Content-Length is needed")
            return b""
        if not cl.strip().isdigit():
            raise BodyError(400, "bad Content-Length %s" % cl)
        n = int(cl)
        if n > limit:
            raise BodyError(413, "the body exceeds the receiver's limit of %d bytes" % limit)
        data = self.rfile.read(n)
        if len(data) != n:
            raise BodyError(400, "the connection closed before the end of the body")
        return data

    def send_json(self, status, obj, headers=None, raw=None):
        body = raw if raw is not None else (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def dispatch(self):
        raise NotImplementedError


class IngestHandler(Handler):
    def dispatch(self):
        app = self.server.app
        self.conn_requests += 1
        t0 = time.monotonic()
        url = urllib.parse.urlsplit(self.path)
        entry = {
            "time": utcnow_iso(),
            "remote": "%s:%s" % self.client_address[:2],
            "connection": getattr(self.request, "calabi_conn_id", None),
            "request_on_connection": self.conn_requests,
            "method": self.command,
            "path": url.path,
            "headers": redact_headers(self.headers),
        }
        if url.query:
            entry["query"] = url.query
        try:
            body = self.read_body(app.args.max_body_bytes)
        except BodyError as e:
            status, msg = e.args
            self.close_connection = True
            entry.update(status=status, error=msg, duration_ms=round((time.monotonic() - t0) * 1000, 3))
            app.log.add(entry)
            self.send_json(status, {"error": msg})
            return
        entry["body_bytes"] = len(body)
        if app.tokens is not None and url.path == app.args.oauth_path:
            target = "token"
        elif url.path == app.args.ingest_path:
            target = "ingest"
        else:
            entry.update(status=404, error="no such path")
            app.log.add(entry)
            self.send_json(404, {"error": "no such path %s (the ingest path is %s)" % (url.path, app.args.ingest_path)})
            return
        fault = app.faults.take(target)
        if fault:
            entry["fault"] = fault
        process = (lambda: self.token(body, entry)) if target == "token" else (lambda: self.ingest(body, entry))
        status, obj, headers, raw = None, None, {}, None
        if fault and fault["kind"] in ("status", "retry_after", "refuse"):
            status = fault["status"]
            if fault["kind"] == "refuse":
                obj = {"error": fault["error"]}
            elif "body" in fault:
                raw = fault["body"].encode("utf-8")
            else:
                obj = {"error": "injected fault: status %d" % status}
            if fault["kind"] == "retry_after":
                headers["Retry-After"] = fault["retry_after"]
        elif fault and fault["kind"] == "drop":
            if fault["apply"]:
                status, obj, headers = self.safe(process, entry)
                entry["answered_status_would_be"] = status
            entry.update(status=None, dropped=True, duration_ms=round((time.monotonic() - t0) * 1000, 3))
            app.log.add(entry)
            self.close_connection = True
            try:
                self.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        elif fault and fault["kind"] == "stall":
            if fault["apply"]:
                status, obj, headers = self.safe(process, entry)
            else:
                status, obj = 503, {"error": "injected fault: stalled, not processed"}
            time.sleep(fault["seconds"])
        else:
            status, obj, headers = self.safe(process, entry)
        entry["status"] = status
        if obj and "error" in obj:
            entry["error"] = obj["error"]
        elif raw is not None:
            entry["response_body"] = raw.decode("utf-8", "replace")
        entry["duration_ms"] = round((time.monotonic() - t0) * 1000, 3)
        app.log.add(entry)
        try:
            self.send_json(status, obj, headers, raw)
        except OSError:
            self.close_connection = True

    def safe(self, fn, entry):
        try:
            return fn()
        except Refusal as r:
            if r.close:
                self.close_connection = True
            return r.status, (r.body if r.body is not None else {"error": r.message}), r.headers
        except Exception as e:
            traceback.print_exc()
            return 500, {"error": "internal error of the receiver: %s: %s" % (type(e).__name__, e)}, {}

    # -- OAuth2 client credentials --
    def token(self, body, entry):
        app = self.server.app
        if self.command != "POST":
            raise Refusal(405, "the token endpoint takes POST", {"Allow": "POST"})

        def oauth_error(status, code, desc, headers=None):
            return Refusal(status, desc, headers, body={"error": code, "error_description": desc})

        auth = self.headers.get("Authorization")
        if not auth or not auth[:6].lower() == "basic ":
            raise oauth_error(401, "invalid_client", "client authentication with HTTP Basic is required",
                              {"WWW-Authenticate": 'Basic realm="calabi_receiver"'})
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
            cid, csecret = decoded.split(":", 1)
            cid = urllib.parse.unquote_plus(cid)
            csecret = urllib.parse.unquote_plus(csecret)
        except (ValueError, UnicodeDecodeError):
            raise oauth_error(401, "invalid_client", "malformed HTTP Basic credentials",
                              {"WWW-Authenticate": 'Basic realm="calabi_receiver"'})
        ok = hmac.compare_digest(cid.encode(), app.oauth_id.encode()) & \
            hmac.compare_digest(csecret.encode(), app.oauth_secret.encode())
        if not ok:
            raise oauth_error(401, "invalid_client", "unknown client or wrong secret",
                              {"WWW-Authenticate": 'Basic realm="calabi_receiver"'})
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise oauth_error(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        except (ValueError, UnicodeDecodeError):
            raise oauth_error(400, "invalid_request", "malformed form body")
        for k, v in form.items():
            if len(v) > 1:
                raise oauth_error(400, "invalid_request", "parameter %s repeated" % k)
        if "client_secret" in form:
            raise oauth_error(400, "invalid_request", "send the client credentials with HTTP Basic only")
        grant = form.get("grant_type", [None])[0]
        if grant != "client_credentials":
            raise oauth_error(400, "unsupported_grant_type" if grant else "invalid_request",
                              "grant_type must be client_credentials")
        entry["oauth_client_id"] = cid
        out = {"access_token": app.tokens.issue(), "token_type": "Bearer",
               "expires_in": app.tokens.expires_in}
        if "scope" in form:
            out["scope"] = form["scope"][0]
        return 200, out, {"Cache-Control": "no-store", "Pragma": "no-cache"}

    # -- ingest --
    def ingest(self, body, entry):
        app = self.server.app
        h = self.headers
        # authentication first: nothing about the request is judged before
        if app.args.token is not None or app.tokens is not None:
            auth = h.get("Authorization")
            challenge = {"WWW-Authenticate": 'Bearer realm="calabi_receiver"'}
            if auth is None:
                raise Refusal(401, "an Authorization: Bearer token is required", challenge)
            parts = auth.split(" ")
            if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1]:
                raise Refusal(401, "the Authorization header must be \"Bearer <token>\"", challenge)
            token = parts[1]
            challenge = {"WWW-Authenticate": 'Bearer realm="calabi_receiver", error="invalid_token"'}
            if app.tokens is not None:
                if not app.tokens.valid(token):
                    raise Refusal(401, "the bearer token is unknown or expired", challenge)
            elif not hmac.compare_digest(token.encode("utf-8", "replace"), app.args.token.encode("utf-8")):
                raise Refusal(401, "the bearer token is wrong", challenge)

        if self.command != "POST":
            raise bad("method %s: the ingest endpoint takes POST only" % self.command)

        limit = app.faults.limit()
        if limit is not None and len(body) > limit:
            raise Refusal(413, "the batch is %d bytes, above the limit of %d bytes" % (len(body), limit))

        def header(name):
            values = h.get_all(name)
            if values and len(values) > 1:
                raise bad("header %s is given %d times" % (name, len(values)))
            return values[0] if values else None

        ctype = header("Content-Type")
        if ctype is None or not CONTENT_TYPE_RE.match(ctype.strip()):
            raise bad("header Content-Type must be application/x-ndjson (optionally with ; charset=utf-8), got %s"
                      % ("nothing" if ctype is None else json.dumps(ctype)))
        enc = header("Content-Encoding")
        gz = False
        if enc is not None:
            if enc.strip().lower() != "gzip":
                raise Refusal(415, "Content-Encoding %s is not supported: gzip, or no Content-Encoding for an "
                                   "uncompressed body" % json.dumps(enc))
            gz = True
        proto = header("Calabi-Protocol")
        if proto != PROTOCOL_VERSION:
            raise bad("header Calabi-Protocol must be %s (the version this receiver speaks), got %s"
                      % (PROTOCOL_VERSION, "nothing" if proto is None else json.dumps(proto)))
        sync_name = header("Calabi-Sync")
        if sync_name is None or not SYNC_NAME_RE.match(sync_name):
            raise bad("header Calabi-Sync must be a sync name (letters, digits, _ . -), got %s"
                      % ("nothing" if sync_name is None else json.dumps(sync_name)))
        sync_id = header("Calabi-Sync-Id")
        if sync_id is None or not UUID_RE.match(sync_id):
            raise bad("header Calabi-Sync-Id must be a uuid, got %s"
                      % ("nothing" if sync_id is None else json.dumps(sync_id)))
        seq_text = header("Calabi-Batch-Seq")
        if seq_text is None or not SEQ_RE.match(seq_text) or int(seq_text) > MAX_SEQ:
            raise bad("header Calabi-Batch-Seq must be a positive integer (at most 2^63-1, no sign or leading "
                      "zero), got %s" % ("nothing" if seq_text is None else json.dumps(seq_text)))
        seq = int(seq_text)
        entry["batch_seq"] = seq
        key = header("Idempotency-Key")
        if key != "%s:%s" % (sync_id, seq_text):
            raise bad("header Idempotency-Key must be \"<Calabi-Sync-Id>:<Calabi-Batch-Seq>\", that is %s, got %s"
                      % (json.dumps("%s:%s" % (sync_id, seq_text)), "nothing" if key is None else json.dumps(key)))
        entry["idempotency_key"] = key
        ua = header("User-Agent")
        if ua is None or not USER_AGENT_RE.match(ua):
            raise bad("header User-Agent must be \"calabi_push/<extension version> PostgreSQL/<server version>\", "
                      "got %s" % ("nothing" if ua is None else json.dumps(ua)))

        if app.args.validate == "none":
            # benchmarks: headers checked, the body taken as it is, so that
            # the receiver costs next to nothing beside the sender measured
            return 200, {"status": "accepted", "batch_seq": seq}, {}
        if gz:
            data, entry["gzip_members"] = gunzip(body, app.args.max_uncompressed_bytes)
        else:
            data = body
        entry["body_bytes_uncompressed"] = len(data)
        if app.args.log_bodies:
            entry["body"] = data.decode("utf-8", "replace")
        digest = hashlib.sha256(data).hexdigest()
        if app.args.validate == "full":
            messages, state, counts, nlines = parse_body_full(data, seq)
        else:
            state, counts, nlines = parse_body_light(data, seq)
            messages = None
        entry["lines"] = nlines
        entry["types"] = counts
        try:
            counters = app.store.process(sync_id.lower(), sync_name, seq, key, digest, len(body), messages,
                                         state, nlines)
        except AcceptedBefore as a:
            return 409, {"status": "already_accepted", "idempotency_key": key, "accepted_at": a.received_at}, {}
        out = {"status": "accepted", "batch_seq": seq, "lines": nlines}
        if counters.records is not None:
            entry["records"] = out["records"] = counters.records
        if counters.deleted:
            entry["deleted_rows"] = counters.deleted
        if counters.ignored:
            entry["ignored_records"] = counters.ignored
            out["ignored_records"] = counters.ignored
        return 200, out, {}


def gunzip(body, limit):
    if not body:
        raise bad("the body is not valid gzip: it is empty")
    out = []
    total = 0
    members = 0
    data = body
    while data:
        members += 1
        d = zlib.decompressobj(wbits=31)
        try:
            while data:
                chunk = d.decompress(data, max(1, limit - total + 1))
                total += len(chunk)
                out.append(chunk)
                if total > limit:
                    raise Refusal(413, "the body is more than %d bytes once uncompressed" % limit)
                data = d.unconsumed_tail
                if d.eof:
                    break
        except zlib.error as e:
            raise bad("the body is not valid gzip: %s" % e)
        if not d.eof:
            raise bad("the body is not valid gzip: it ends inside the compressed stream")
        data = d.unused_data
    # several members are valid gzip (RFC 1952); the log says how many
    return b"".join(out), members


def redact_headers(headers):
    """Request headers for the log: names in their usual case
    (calabi-batch-seq -> Calabi-Batch-Seq), credentials redacted."""
    out = {}
    for k, v in headers.items():
        k = "-".join(part[:1].upper() + part[1:].lower() for part in k.split("-"))
        if k.lower() in REDACTED_HEADERS:
            scheme = v.split(" ", 1)[0] if " " in v else ""
            v = (scheme + " REDACTED") if scheme else "REDACTED"
        if k in out:
            out[k] = out[k] + ", " + v
        else:
            out[k] = v
    return out


class AdminHandler(Handler):
    timeout = 30

    def dispatch(self):
        app = self.server.app
        url = urllib.parse.urlsplit(self.path)
        try:
            body = self.read_body(16 << 20)
        except BodyError as e:
            self.close_connection = True
            self.send_json(e.args[0], {"error": e.args[1]})
            return
        path, method = url.path, self.command
        q = urllib.parse.parse_qs(url.query)
        if path == "/health" and method in ("GET", "HEAD"):
            self.send_json(200, {"status": "ok", "port": app.port, "store": app.store.describe(),
                                 "validate": app.args.validate})
        elif path == "/faults" and method == "GET":
            self.send_json(200, app.faults.snapshot())
        elif path == "/faults" and method == "POST":
            try:
                spec = json.loads(body.decode("utf-8"), parse_float=decimal.Decimal)
                items = spec if isinstance(spec, list) else [spec]
                faults = [check_fault(f) for f in items]
            except (ValueError, UnicodeDecodeError) as e:
                self.send_json(400, {"error": "bad fault: %s" % e})
                return
            app.faults.add(faults)
            self.send_json(200, app.faults.snapshot())
        elif path == "/faults" and method == "DELETE":
            app.faults.clear()
            self.send_json(200, app.faults.snapshot())
        elif path == "/requests" and method == "GET":
            since = int(q.get("since", ["0"])[0])
            self.send_json(200, app.log.since(since))
        elif path == "/requests" and method == "DELETE":
            app.log.clear()
            self.send_json(200, [])
        elif path == "/tokens" and method == "DELETE":
            n = app.tokens.revoke_all() if app.tokens is not None else 0
            self.send_json(200, {"revoked": n})
        else:
            self.send_json(404, {"error": "no such admin endpoint: %s %s" % (method, path)})


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, handler, app, ssl_context=None):
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app = app
        self.ssl_context = ssl_context
        self.conn_counter = 0
        self.conn_lock = threading.Lock()
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        with self.conn_lock:
            self.conn_counter += 1
            conn_id = self.conn_counter
        # A response goes out in two writes (headers, then body): with
        # Nagle's algorithm the second waits for the client's delayed ACK,
        # 40 ms per request on Linux, which would make the receiver, not the
        # sender, the measure of every benchmark.
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self.ssl_context is not None:
            request.settimeout(30)
            try:
                tls = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                if self.app.args.verbose:
                    sys.stderr.write("TLS handshake with %s failed: %s\n" % (client_address[0], e))
                self.app.tls_failures += 1
                return
            try:
                tls.calabi_conn_id = conn_id
                self.RequestHandlerClass(tls, client_address, self)
            finally:
                try:
                    tls.close()
                except OSError:
                    pass
        else:
            try:
                request.calabi_conn_id = conn_id
            except AttributeError:
                pass
            self.RequestHandlerClass(request, client_address, self)

    def handle_error(self, request, client_address):
        if self.app.args.verbose:
            super().handle_error(request, client_address)


class App:
    pass


def parse_hostport(text, what):
    m = re.match(r"^\[([^\]]+)\]:(\d+)$", text) or re.match(r"^([^:]+):(\d+)$", text)
    if not m:
        raise SystemExit("%s must be HOST:PORT (or [IPv6]:PORT), got %s" % (what, text))
    return m.group(1), int(m.group(2))


def write_port_file(path, port):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description="Reference receiver of the Calabi ingest protocol v1 "
                                            "(see docs/receiver.md)")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (port 0: any free port)")
    p.add_argument("--port-file", help="write the port there once listening")
    p.add_argument("--tls-cert", help="server certificate (PEM, chain allowed)")
    p.add_argument("--tls-key", help="its private key (PEM)")
    p.add_argument("--plain-http", action="store_true", help="serve plain http (no --tls-cert/--tls-key)")
    p.add_argument("--client-ca", help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument("--token", help="the static bearer token every ingest request must carry "
                                   "(visible to every local user in ps: prefer --token-file)")
    p.add_argument("--token-file", metavar="FILE",
                   help="read the static bearer token from the first line of FILE")
    p.add_argument("--oauth", metavar="CLIENT_ID:CLIENT_SECRET",
                   help="serve an OAuth2 client-credentials token endpoint; ingest accepts its tokens only "
                        "(visible in ps: prefer --oauth-file)")
    p.add_argument("--oauth-file", metavar="FILE",
                   help="read CLIENT_ID:CLIENT_SECRET for --oauth from the first line of FILE")
    p.add_argument("--oauth-expires-in", type=int, default=3600, help="lifetime of issued tokens, seconds")
    p.add_argument("--oauth-path", default="/oauth/token", help="path of the token endpoint")
    p.add_argument("--dest-dsn", help="libpq connection string of the destination database")
    p.add_argument("--meta-schema", default="_calabi", help="bookkeeping schema in the destination")
    p.add_argument("--db-connections", type=int, default=8, help="database connections at most")
    p.add_argument("--no-store", action="store_true", help="validate and acknowledge without storing")
    p.add_argument("--validate", choices=("full", "light", "none"),
                   help="full: every line (the default when storing); light: headers, gzip, UTF-8, line "
                        "structure and the STATE line (the default with --no-store); none: headers only, "
                        "for benchmarks (with --no-store)")
    p.add_argument("--log", help="append one JSON line per request to this file")
    p.add_argument("--log-bodies", action="store_true",
                   help="keep each request's (uncompressed) body in its log entry (tests)")
    p.add_argument("--log-keep", type=int, default=100000, help="requests kept in memory for GET /requests")
    p.add_argument("--admin-listen", default="127.0.0.1:0", help="HOST:PORT of the plain-http admin server")
    p.add_argument("--admin-port-file", help="write the admin port there once listening")
    p.add_argument("--ingest-path", default="/ingest", help="the ingest path; any other path is a 404")
    p.add_argument("--max-body-bytes", type=int, default=512 << 20, help="largest request body accepted")
    p.add_argument("--max-uncompressed-bytes", type=int, default=2 << 30,
                   help="largest uncompressed body accepted")
    p.add_argument("--verbose", action="store_true", help="log every request and TLS failure to stderr")
    args = p.parse_args(argv)

    # secrets from files, so that they are not on the command line
    for opt, attr, file_attr in (("--token", "token", "token_file"), ("--oauth", "oauth", "oauth_file")):
        path = getattr(args, file_attr)
        if path is None:
            continue
        if getattr(args, attr) is not None:
            p.error("%s and %s-file exclude each other" % (opt, opt))
        try:
            with open(path, encoding="utf-8") as f:
                setattr(args, attr, f.readline().rstrip("\r\n"))
        except OSError as e:
            p.error("cannot read %s-file: %s" % (opt, e))
    if args.plain_http and (args.tls_cert or args.tls_key or args.client_ca):
        p.error("--plain-http excludes --tls-cert, --tls-key and --client-ca")
    if not args.plain_http and not (args.tls_cert and args.tls_key):
        p.error("give --tls-cert and --tls-key, or --plain-http")
    if args.token is not None and args.oauth is not None:
        p.error("--token and --oauth exclude each other")
    if args.token == "":
        p.error("--token must not be empty")
    if args.no_store and args.dest_dsn:
        p.error("--no-store excludes --dest-dsn")
    if not args.no_store and not args.dest_dsn:
        p.error("give --dest-dsn, or --no-store")
    if args.validate is None:
        args.validate = "light" if args.no_store else "full"
    if args.validate in ("light", "none") and not args.no_store:
        p.error("--validate %s is for --no-store only (storing needs every line)" % args.validate)
    if args.oauth is not None and ":" not in args.oauth:
        p.error("--oauth must be CLIENT_ID:CLIENT_SECRET")
    if not args.ingest_path.startswith("/"):
        p.error("--ingest-path must start with /")

    app = App()
    app.args = args
    app.faults = Faults()
    app.log = RequestLog(args.log, args.log_keep)
    app.tls_failures = 0
    app.tokens = None
    if args.oauth is not None:
        app.oauth_id, app.oauth_secret = args.oauth.split(":", 1)
        app.tokens = Tokens(args.oauth_expires_in)
    try:
        app.store = MemoryStore() if args.no_store else PgStore(args.dest_dsn, args.meta_schema,
                                                                 args.db_connections)
    except Exception as e:
        sys.stderr.write("calabi_receiver: cannot use the destination database: %s\n" % e)
        return 1

    ctx = None
    if not args.plain_http:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=args.client_ca)

    host, port = parse_hostport(args.listen, "--listen")
    ahost, aport = parse_hostport(args.admin_listen, "--admin-listen")
    if ahost not in ("127.0.0.1", "::1", "localhost"):
        p.error("--admin-listen must be on loopback")
    if ahost == "localhost":
        ahost = "127.0.0.1"
    server = Server((host, port), IngestHandler, app, ctx)
    admin = Server((ahost, aport), AdminHandler, app)
    app.port = server.server_address[1]

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=admin.serve_forever, name="admin", daemon=True).start()
    if args.admin_port_file:
        write_port_file(args.admin_port_file, admin.server_address[1])
    if args.port_file:
        write_port_file(args.port_file, app.port)
    sys.stderr.write("calabi_receiver: %s://%s:%d%s (admin http://%s:%d), store: %s\n"
                     % ("http" if args.plain_http else "https", "[%s]" % host if ":" in host else host,
                        app.port, args.ingest_path, "[%s]" % ahost if ":" in ahost else ahost,
                        admin.server_address[1], app.store.describe()))
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        admin.shutdown()
        server.server_close()
        admin.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
