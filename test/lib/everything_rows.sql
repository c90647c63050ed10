-- 30 rows of every type family (everything_schema.sql), with values stored
-- out of line compressed (tx) and uncompressed (ext; next, a numeric of
-- 4,000 digits or more in every other row), and one row of NaN
-- and infinities.
INSERT INTO everything (i2, i8, r, d, n, m, b, bits, vb, ba, c, vc, tx, nm, dt, ts, tz,
  tm, ttz, iv, js, jb, u, ip, e, p, rg, pt, h, ia, ta, dom, o, ext, next)
SELECT -32768 + g, -9223372036854775808 + g, 3.4145 * g, 0.1 * g,
       1234567890987654321.1234567890987654321 * g, -1000 * g, g % 2 = 0, B'0100', B'101',
       '\x6b707a'::bytea || g::text::bytea, 'ab', 'x"y\z' || g,
       E'tab\there\n\u0001é ' || repeat('long ', g * 500), 'nm' || g,
       '1991-02-10 BC'::date + g, '3004-10-19 10:23:54.123456 BC'::timestamp + g * interval '1 day',
       '2004-10-19 10:23:00-08'::timestamptz + g * interval '1 minute', '24:00:00',
       '13:00:01.123456-07', '1 year 2 mons 3 days 04:05:06', '{"a": "é\u0000"}',
       '{"b": [1, 2.50]}', md5(g::text)::uuid, '192.168.0.1/24', 'happy',
       ROW(g, '2004-10-19 10:23:00-08'::timestamptz)::pair, '[2010-01-01 14:30, 2010-01-01 15:30)',
       point(1.5, g), 'a=>1, b=>NULL', '[0:1]={1,NULL}', '{{a,b},{c,NULL}}', g, 4294967295,
       repeat(md5(g::text), 200),
       CASE WHEN g % 2 = 0 THEN (repeat('9', 4000 + g) || '.' || g)::numeric ELSE g / 7.0 END
  FROM generate_series(1, 30) g;
INSERT INTO everything (id, r, d, n, dt, ts, tz) VALUES
  (1000, 'NaN', '-Infinity', 'NaN', 'infinity', '-infinity', 'infinity');
