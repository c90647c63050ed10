-- A table holding one column of every type family of the type mapping, for
-- the TAP tests that compare what a sync or the output plugin sends with
-- preview().  Rows: everything_rows.sql.
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b timestamptz);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE everything (
  id serial PRIMARY KEY, i2 int2, i8 int8, r real, d float8, n numeric, m money,
  b bool, bits bit(4), vb varbit, ba bytea, c char(5), vc varchar, tx text,
  nm name, dt date, ts timestamp, tz timestamptz, tm time, ttz timetz,
  iv interval, js json, jb jsonb, u uuid, ip inet, e mood, p pair,
  rg tsrange, pt point, h hstore, ia int[], ta text[][], dom posint, o oid,
  ext text, next numeric);
-- stored out of line and uncompressed: decoding must reassemble them (a
-- numeric's TOAST pointer has a one-byte header like a short value's)
ALTER TABLE everything ALTER COLUMN ext SET STORAGE EXTERNAL;
ALTER TABLE everything ALTER COLUMN next SET STORAGE EXTERNAL;
