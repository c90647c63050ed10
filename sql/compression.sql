-- gzip: which library compresses (calabi_push.gzip_library, reported by
-- version()), and the destination option compression_level checked against
-- that library's levels.  expected/compression.out is a build with ISA-L
-- (levels 1 to 3), compression_1.out one without it (zlib: 1 to 9).
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT calabi_push.version() ~ '^calabi_push 0\.1\.0, gzip by (isa-l|zlib) [0-9.]+$' AS version_names_the_compressor;
SELECT current_setting('calabi_push.gzip_library') AS gzip_library;
SELECT calabi_push._gzip_max_level() AS max_level;

-- levels: stored as given; absent means the fastest (1)
SELECT calabi_push.create_destination('fast', 'https://ingest.example.com/v1/batches');
SELECT calabi_push.create_destination('l2', 'https://ingest.example.com/v1/batches',
    options => '{"compression_level": 2}');
SELECT name, options->'compression_level' AS level FROM calabi_push.destinations
 WHERE name IN ('fast', 'l2') ORDER BY name COLLATE "C";
SELECT calabi_push.alter_destination('l2', options => '{"compression_level": 1}');
SELECT options->'compression_level' AS level FROM calabi_push.destinations WHERE name = 'l2';
SELECT calabi_push.alter_destination('l2', options => '{"compression_level": null}');
SELECT options ? 'compression_level' AS has_level FROM calabi_push.destinations WHERE name = 'l2';

-- refused: out of the library's range, not an integer, with compression none
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"compression_level": 0}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"compression_level": 10}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"compression_level": 1.5}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"compression_level": "1"}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/', options => '{"compression_level": 1e400}');
SELECT calabi_push.create_destination('bad', 'https://x.example.com/',
    options => '{"compression": "none", "compression_level": 1}');
SELECT calabi_push.alter_destination('l2', options => '{"compression": "none", "compression_level": 2}');
SELECT calabi_push.alter_destination('l2', options => '{"compression_level": 2}');
SELECT calabi_push.alter_destination('l2', options => '{"compression": "none"}');
SELECT count(*) AS half_created FROM calabi_push.destinations WHERE name = 'bad';

-- a level the other library has (zlib's 4 to 9) is refused here when the
-- library is ISA-L; the worker lowers a stored one to the library's highest
SELECT calabi_push.create_destination('l4', 'https://x.example.com/', options => '{"compression_level": 4}');

SELECT calabi_push.drop_destination('fast');
SELECT calabi_push.drop_destination('l2');
SELECT calabi_push.drop_destination(name) FROM calabi_push.destinations WHERE name = 'l4';

-- version() is ours only when qualified: pg_catalog.version() keeps its
-- grant to PUBLIC, ours has none
CREATE ROLE cp_gz_nobody;
SELECT has_function_privilege('cp_gz_nobody', 'pg_catalog.version()', 'EXECUTE') AS core_version_public,
       has_function_privilege('cp_gz_nobody', 'calabi_push.version()', 'EXECUTE') AS ours_public,
       pg_catalog.version() LIKE 'PostgreSQL %' AS core_version_unchanged;
DROP ROLE cp_gz_nobody;
