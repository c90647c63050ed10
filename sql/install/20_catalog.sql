------------------------------------------------------------------------------
-- Catalog.  The tables are the truth about destinations and syncs; the
-- launcher's shared memory only mirrors which syncs should run.  Nothing is
-- granted on them: the management functions (SECURITY DEFINER) write them,
-- the views show them without secrets.
------------------------------------------------------------------------------

CREATE TABLE destination (
    name        text PRIMARY KEY
                CONSTRAINT destination_name_valid CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    url         text NOT NULL,
    -- every option but the secrets: ca_file, ca_pem, client_cert, compression,
    -- connect_timeout, request_timeout, proxy, token_url, client_id, scope,
    -- allow_http (see docs/destinations.md)
    options     jsonb NOT NULL DEFAULT '{}',
    -- which secrets the destination was given (names, never values): dumped
    -- with this row while destination_secret is not, so that a restored
    -- destination shows which ones must be entered again
    secrets     text[] NOT NULL DEFAULT '{}'
                CONSTRAINT destination_secrets_valid
                CHECK (secrets <@ ARRAY['token', 'client_secret', 'client_key']),
    created_by  name NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Secrets live apart so that no view, grant or join can reach them by accident.
CREATE TABLE destination_secret (
    destination   text PRIMARY KEY REFERENCES destination (name)
                  ON DELETE CASCADE ON UPDATE CASCADE,
    token         text,     -- static bearer token
    client_secret text,     -- OAuth2 client credentials
    client_key    text      -- PEM private key for mutual TLS
);
-- Row-level security without any policy: roles that read every table
-- (pg_read_all_data, a GRANT by mistake) see no row of it.  Its owner (the
-- superuser who created the extension: the SECURITY DEFINER functions and
-- the destinations view run as it) and other superusers bypass it, as do the
-- foreign key's cascades (they run as the owner); the sync workers read it
-- as a superuser.
ALTER TABLE destination_secret ENABLE ROW LEVEL SECURITY;

CREATE TABLE sync (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name            text NOT NULL UNIQUE
                    CONSTRAINT sync_name_valid CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    destination     text NOT NULL REFERENCES destination (name) ON UPDATE CASCADE,
    method          text NOT NULL
                    CHECK (method IN ('full_refresh', 'xmin', 'cursor', 'cdc')),
    destination_sync_mode text NOT NULL
                    CHECK (destination_sync_mode IN ('overwrite', 'append', 'append_dedup')),
    -- schedule, batch_rows, batch_bytes, batch_linger_ms, chunk_rows,
    -- lookback (cursor), ...
    options         jsonb NOT NULL DEFAULT '{}',
    run_as          regrole NOT NULL,       -- the role whose privileges reads use
    enabled         boolean NOT NULL DEFAULT false,  -- start_sync'ed, not stopped
    error_stopped   boolean NOT NULL DEFAULT false,  -- stopped by a refusal
    run_started_at  timestamptz,            -- the current or last run
    run_completed_at timestamptz,           -- every stream read to the end
    -- Calabi-Batch-Seq numbers below this may have been used; a run reserves
    -- a block above it before sending (ingest protocol: never reuse a number)
    next_batch_seq  bigint NOT NULL DEFAULT 1,
    batches_sent    bigint NOT NULL DEFAULT 0,
    records_sent    bigint NOT NULL DEFAULT 0,
    bytes_sent      bigint NOT NULL DEFAULT 0,
    retries         bigint NOT NULL DEFAULT 0,
    last_ack_at     timestamptz,
    last_error      text,
    -- last_error without anything the endpoint sent (a response body
    -- excerpt, a Location): what sync_status shows to roles other than the
    -- destination's owner and superusers
    last_error_redacted text,
    last_error_at   timestamptz,
    -- cdc: every change committed before this position was acknowledged;
    -- NULL until the worker created the sync's replication slot (and again
    -- after a resync of every table, which starts over with a new slot)
    cdc_lsn         pg_lsn,
    -- Where the sync belongs: the cluster (its system identifier), the
    -- database (its OID) and the timeline it was created or adopted on.
    -- These are dumped with the row and copied with a data directory, but
    -- the server that reads them elsewhere differs: a sync found in a copy
    -- (a restored dump, CREATE DATABASE ... TEMPLATE, a promoted clone
    -- beside its live primary) does not run under the original's identity
    -- until adopt_sync() gives it one of its own (src/home.c;
    -- docs/operations.md, "Copies of a database").
    home_system     bigint NOT NULL,
    home_database   oid NOT NULL,
    home_timeline   integer NOT NULL,
    -- A sync that runs on a standby (option run_on) keeps its progress in
    -- a state file there, not in this row (24_run_on.sql): the commands
    -- that change progress on the primary's side -- start_sync, resync --
    -- are numbered (command_seq), and each records its number where the
    -- standby looks for it and applies it to its state once: start_sync
    -- (a new run), resync's start again of a sync stopped in error
    -- (restart_command), its new slot for every table (slot_reset_command)
    -- and its streams read again (sync_stream.reset_command).
    command_seq     bigint NOT NULL DEFAULT 0,
    start_command   bigint NOT NULL DEFAULT 0,
    restart_command bigint NOT NULL DEFAULT 0,
    slot_reset_command bigint NOT NULL DEFAULT 0,
    -- the state file's writes a promoted standby took over (_state_import)
    standby_import  bigint NOT NULL DEFAULT 0,
    created_by      name NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sync_stream (
    -- ON UPDATE: adopt_sync() gives a copied sync a new id
    sync_id         uuid NOT NULL REFERENCES sync (id) ON DELETE CASCADE ON UPDATE CASCADE,
    relid           regclass NOT NULL,
    ordinal         int NOT NULL,           -- read order within the sync
    -- pending: to be read; reading: a read is under way (checkpoint says
    -- where); done: read to the end in the current run
    phase           text NOT NULL DEFAULT 'pending'
                    CHECK (phase IN ('pending', 'reading', 'done')),
    generation      bigint NOT NULL DEFAULT 0,  -- of the current/last read
    checkpoint      jsonb,                  -- the state last acknowledged
    rows_sent       bigint NOT NULL DEFAULT 0,  -- in the current read
    read_started_at timestamptz,
    read_finished_at timestamptz,
    -- cursor: the relation's cursor column (its attname), by which the
    -- reads of a view or foreign table go on from the previous run's
    -- largest value; NULL for the other methods
    cursor_column   name,
    -- the resync() that last reset it (sync.command_seq; 24_run_on.sql)
    reset_command   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (sync_id, relid)
);

-- pg_dump keeps the configuration (and the checkpoints: a restored cluster's
-- syncs resume, or are resync'ed by the DBA), but not destination_secret:
-- dumps are copied and kept where the secrets should not go.  A restored
-- destination lists what it lacks (destinations.missing_secrets) and its
-- syncs stop in error until alter_destination enters them again
-- (docs/operations.md, "Dump and restore").
SELECT pg_catalog.pg_extension_config_dump('destination', '');
SELECT pg_catalog.pg_extension_config_dump('sync', '');
SELECT pg_catalog.pg_extension_config_dump('sync_stream', '');

REVOKE ALL ON destination, destination_secret, sync, sync_stream FROM PUBLIC;
