-- Helpers for the pg_regress files of the output plugin (sql/output_plugin_*),
-- read with \i after \set schema NAME: each file works in a schema of its
-- own, NAME, created here and first in search_path.
--
-- read a calabi_push slot as pg_logical_slot_get_changes/_peek_changes do,
-- with what differs from run to run replaced by a fixed word, as
-- contrib/test_decoding's 'include-xids', '0' does for xids: the commit's
-- LSN ("_calabi_cdc_lsn", a CONTROL's "lsn") by "<lsn>", the commit time
-- ("_calabi_cdc_updated_at", a delete's "_calabi_cdc_deleted_at") by
-- "<commit time>", and the time of reading ("emitted_at") by "<now>".
-- TAP test 030_output_plugin.pl checks those values themselves.

-- This server may decode with calabi_push's plugin (a session setting, on
-- servers whose output_plugin_libraries lists the allowed plugins).
DO $$
BEGIN
  IF EXISTS (SELECT FROM pg_settings WHERE name = 'output_plugin_libraries') THEN
    PERFORM set_config('output_plugin_libraries', 'pgoutput, test_decoding, calabi_push', false);
  END IF;
END $$;

CREATE OR REPLACE FUNCTION public.cp_stable_line(line text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT regexp_replace(regexp_replace(regexp_replace(regexp_replace(line,
    '"(_calabi_cdc_lsn|lsn)":\d+', '"\1":"<lsn>"', 'g'),
    '"_calabi_cdc_updated_at":"[^"]*"', '"_calabi_cdc_updated_at":"<commit time>"', 'g'),
    '"_calabi_cdc_deleted_at":"[^"]*"', '"_calabi_cdc_deleted_at":"<commit time>"', 'g'),
    '"emitted_at":\d+', '"emitted_at":"<now>"', 'g')
$$;

-- The slot's messages, consumed (get) or not (peek), one line each.
CREATE OR REPLACE FUNCTION public.cp_get_changes(slot name, VARIADIC options text[] DEFAULT '{}')
RETURNS SETOF text LANGUAGE sql AS $$
  SELECT public.cp_stable_line(data)
    FROM pg_logical_slot_get_changes(slot, NULL, NULL, VARIADIC options)
$$;

CREATE OR REPLACE FUNCTION public.cp_peek_changes(slot name, VARIADIC options text[] DEFAULT '{}')
RETURNS SETOF text LANGUAGE sql AS $$
  SELECT public.cp_stable_line(data)
    FROM pg_logical_slot_peek_changes(slot, NULL, NULL, VARIADIC options)
$$;

-- One protocol line per output line, without psql's padding to the longest.
\pset format unaligned

CREATE SCHEMA :"schema";
SET search_path = :"schema", public;
