# The encoder's output does not depend on server-level settings either:
# a postgresql.conf with odd DateStyle, TimeZone, IntervalStyle,
# extra_float_digits and bytea_output changes nothing, while lc_monetary in
# postgresql.conf is the one setting that does count (money's fraction
# digits), and a session's SET of it does not.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;

my $node = calabi_node('settings', conf => <<'CONF');
DateStyle = 'German, DMY'
TimeZone = 'Pacific/Chatham'
IntervalStyle = 'sql_standard'
extra_float_digits = -10
bytea_output = 'escape'
lc_monetary = 'ja_JP.UTF-8'
CONF

$node->safe_psql('postgres', <<'SQL');
CREATE EXTENSION calabi_push;
CREATE TABLE t (m money, ts timestamptz, d date, iv interval, f float8,
                b bytea, r tstzrange);
INSERT INTO t VALUES ('-1000', '2004-10-19 10:23:00-08', '1999-01-08',
                      '1 year 2 mons 3 days 04:05:06', 0.1, '\x6b707a',
                      '[2004-10-19 10:23:00-08,)');
SQL

my $expected =
    '{"m":-1000,"ts":"2004-10-19T18:23:00.000000Z","d":"1999-01-08",'
  . '"iv":"1 year 2 mons 3 days 04:05:06","f":0.1,"b":"\\\\x6b707a",'
  . '"r":"[\"2004-10-19 18:23:00+00\",)"}';

is($node->safe_psql('postgres', 'SELECT calabi_push.preview(\'t\')::text'),
	$expected, 'server-level settings do not change the encoding; money has the server lc_monetary\'s 0 fraction digits');

# money stores a count of the locale's smallest units: -1000 yen here.  A
# session SET of lc_monetary really changes money's own text (to -10,00 €),
# but not the encoder's.
is( $node->safe_psql(
		'postgres', q{SET lc_monetary = 'de_DE.UTF-8';
		  SELECT m::text || ' | ' || (SELECT p->>'m' FROM calabi_push.preview('t') p) FROM t}),
	"-10,00 € | -1000",
	'a session SET lc_monetary changes money::text, not the encoder');

# A database-level default is part of the configuration a session starts
# with, so it counts: the same stored -1000 is now -10.00 with 2 digits.
$node->safe_psql('postgres', q{ALTER DATABASE postgres SET lc_monetary = 'C'});
is($node->safe_psql('postgres', q{SELECT p->>'m' FROM calabi_push.preview('t') p}),
	'-10.00', 'the lc_monetary a session starts with decides the digits');

$node->stop;
done_testing();
