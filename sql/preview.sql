-- preview() and stream_schema(): relations they accept, rows they return,
-- privileges and row-level security, and the errors a user can cause.
CREATE TABLE orders (id int PRIMARY KEY, status text, amount numeric(10,2));
INSERT INTO orders SELECT g, CASE WHEN g % 2 = 0 THEN 'paid' ELSE 'open' END, g * 1.5
  FROM generate_series(1, 25) g;

-- default max_rows is 10; NULL is every row; 0 is none
SELECT count(*) FROM calabi_push.preview('orders');
SELECT count(*) FROM calabi_push.preview('orders', NULL);
SELECT count(*) FROM calabi_push.preview('orders', 0);
SELECT * FROM calabi_push.preview('orders', 3);
SELECT calabi_push.stream_schema('orders');

-- views and materialized views
CREATE VIEW paid_orders AS SELECT id, amount FROM orders WHERE status = 'paid';
CREATE MATERIALIZED VIEW order_totals AS
  SELECT status, sum(amount) AS total, count(*) AS n FROM orders GROUP BY status;
SELECT * FROM calabi_push.preview('paid_orders', 2);
SELECT * FROM calabi_push.preview('order_totals') ORDER BY 1::text;
SELECT calabi_push.stream_schema('paid_orders');
SELECT calabi_push.stream_schema('order_totals');
CREATE MATERIALIZED VIEW unpopulated AS SELECT 1 AS x WITH NO DATA;
SELECT * FROM calabi_push.preview('unpopulated');

-- a partitioned table streams its partitions' rows; an inheritance parent
-- streams only its own rows (each child is a stream of its own)
CREATE TABLE events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO events VALUES (1, '2024-05-01'), (2, '2025-05-01');
SELECT * FROM calabi_push.preview('events');
SELECT calabi_push.stream_schema('events');
CREATE TABLE animal (id int PRIMARY KEY, name text);
CREATE TABLE dog (good boolean) INHERITS (animal);
INSERT INTO animal VALUES (1, 'generic');
INSERT INTO dog VALUES (2, 'rex', true);
SELECT * FROM calabi_push.preview('animal');
SELECT * FROM calabi_push.preview('dog');

-- primary key, else replica identity index, else none
CREATE TABLE keyed_by_identity (a int NOT NULL, b int NOT NULL, c text);
CREATE UNIQUE INDEX keyed_by_identity_ab ON keyed_by_identity (b, a);
ALTER TABLE keyed_by_identity REPLICA IDENTITY USING INDEX keyed_by_identity_ab;
SELECT calabi_push.stream_schema('keyed_by_identity')->'primary_key';
CREATE TABLE keyless (a int);
SELECT calabi_push.stream_schema('keyless')->'primary_key';
CREATE TABLE composite_key (x text, y int, z int, PRIMARY KEY (y, x));
SELECT calabi_push.stream_schema('composite_key')->'primary_key';

-- names that need quoting, and dropped columns
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Mixed ""Case"" Table" ("Col A" int, "quote""d" text, dropped int);
ALTER TABLE "Odd Schema"."Mixed ""Case"" Table" DROP COLUMN dropped;
INSERT INTO "Odd Schema"."Mixed ""Case"" Table" VALUES (1, 'x');
SELECT * FROM calabi_push.preview('"Odd Schema"."Mixed ""Case"" Table"');
SELECT calabi_push.stream_schema('"Odd Schema"."Mixed ""Case"" Table"');

-- errors a user can cause
\set VERBOSITY default
SELECT * FROM calabi_push.preview('orders', -1);
SELECT * FROM calabi_push.preview(NULL);
SELECT calabi_push.stream_schema(NULL) IS NULL AS strict_null;
SELECT * FROM calabi_push.preview('no_such_table');
SELECT * FROM calabi_push.preview(4294967295::oid::regclass);
CREATE SEQUENCE order_seq;
SELECT * FROM calabi_push.preview('order_seq');
SELECT * FROM calabi_push.preview('orders_pkey');
SELECT calabi_push.stream_schema('order_seq');
CREATE TYPE just_a_type AS (a int);
SELECT * FROM calabi_push.preview('just_a_type'::regclass);

-- privileges: nothing is granted to PUBLIC; SELECT on the relation is needed;
-- column privileges on every column suffice; row-level security applies
CREATE ROLE previewer;
SET ROLE previewer;
SELECT * FROM calabi_push.preview('orders');
RESET ROLE;
GRANT USAGE ON SCHEMA calabi_push TO previewer;
GRANT EXECUTE ON FUNCTION calabi_push.preview(regclass, integer),
  calabi_push.stream_schema(regclass) TO previewer;
SET ROLE previewer;
SELECT * FROM calabi_push.preview('orders');
SELECT calabi_push.stream_schema('orders');
RESET ROLE;
GRANT SELECT (id, status) ON orders TO previewer;
SET ROLE previewer;
SELECT * FROM calabi_push.preview('orders');
RESET ROLE;
GRANT SELECT (amount) ON orders TO previewer;
SET ROLE previewer;
SELECT * FROM calabi_push.preview('orders', 2);
RESET ROLE;
ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY only_paid ON orders FOR SELECT TO previewer USING (status = 'paid');
SET ROLE previewer;
SELECT * FROM calabi_push.preview('orders', 3);
RESET ROLE;

-- the settings preview pins while encoding are the caller's again afterwards
SET TimeZone = 'America/New_York';
SET DateStyle = 'German';
SELECT count(*) FROM calabi_push.preview('orders');
SHOW TimeZone;
SHOW DateStyle;
SHOW search_path;

-- the calabi_push. prefix is reserved
SET calabi_push.no_such_setting = 1;
