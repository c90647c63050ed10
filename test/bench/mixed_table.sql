-- The benchmarks' table: :rows rows of 12 mixed-type columns.
CREATE TABLE t (
  id bigint PRIMARY KEY, qty integer, price numeric(12,2), ratio double precision,
  name text, created_at timestamptz, day date, active boolean,
  tags text[], ref uuid, note varchar(40), score real);
INSERT INTO t
SELECT g, g % 1000, (g % 100000) / 100.0, g / 7.0,
       'customer ' || g || ' "quoted"', '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second',
       '2024-01-01'::date + g % 1000, g % 2 = 0,
       ARRAY['a' || g % 10, 'b'], md5(g::text)::uuid, repeat('x', (g % 40)::int), g / 3.0
FROM generate_series(1, :rows) g;
VACUUM ANALYZE t;
