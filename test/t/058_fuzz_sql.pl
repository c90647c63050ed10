# Randomized inputs for the checks that are PL/pgSQL, out of libFuzzer's
# reach (test/fuzz/ covers the C parsers): mutated destination URLs and
# options through create_destination, as a non-superuser with the
# documented grants.  Each call must either succeed or fail with a proper
# SQLSTATE and a hint: never an internal error (class XX), never a crash.
# Then random values of many types through preview(), the encoder's
# output for a sync, which must never fail or crash either.
#
# The seed is fixed (CP_FUZZ_SQL_SEED to change it): a failure replays.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Encode qw(encode);
use CalabiPushTest;

my $seed = $ENV{CP_FUZZ_SQL_SEED} // 20240607;
my $count = 15000;
srand($seed);
note "seed $seed";

my $node = calabi_node('fuzz_sql');
$node->safe_psql('postgres', q{
	CREATE EXTENSION calabi_push;
	CREATE ROLE dest_owner LOGIN;
	GRANT USAGE ON SCHEMA calabi_push TO dest_owner;
	GRANT EXECUTE ON FUNCTION
	    calabi_push.create_destination(text, text, text, jsonb),
	    calabi_push.alter_destination(text, text, text, jsonb),
	    calabi_push.drop_destination(text)
	  TO dest_owner;
});

# ---- mutated URLs and options -------------------------------------------

my @seeds = (
	'https://ingest.example.com/v1/batches',
	'https://ingest.example.com:8443/v1/batches?tenant=a&x=1#frag',
	'http://127.0.0.1:8080/ingest',
	'https://[::1]:443/',
	'https://[fe80::1%25eth0]/x',
	'https://user:secret@ingest.example.com/',
	'https://169.254.169.254/latest/meta-data',
	'https://0x7f.1/',
	'https://xn--bcher-kva.example/',
	'https://büch.example/päth',
	'HTTPS://INGEST.EXAMPLE.COM',
	'https://a/',
	'ftp://ingest.example.com/',
	'https://ingest.example.com:0/',
	'https://ingest.example.com:65536/',
);
# pieces that URL parsers trip on (no NUL: text cannot hold it)
my @pieces = (
	'/', ':', '@', '[', ']', '?', '#', '%', '%00', '%2F', '%zz', '\\', ' ',
	"\t", "\n", "\r\n", '..', '//', '://', ':99999999999999999999', ':-1',
	'[::ffff:10.0.0.1]', '127.0.0.1', '0.0.0.0', 'localhost', 'localhost.',
	'é', "\x{202e}", "\x{ff0e}", "\x{1f600}", "\x{fffd}", "'", '"', '$$',
	';', ',', '*', 'a' x 300, '.' x 70, '1' x 30, 'https://', 'http://',
);
my @option_keys = qw(allow_http ca_file ca_pem client_cert client_id
  client_key client_secret compression connect_timeout proxy
  request_timeout scope token_url);
my @option_values = (
	'true', 'false', 'null', '0', '-1', '1e308', '-1e308', '0.5',
	'99999999999999999999999', '"10s"', '"-5 ms"', '"1 year"', '"gzip"',
	'"none"', '"zstd"', '""', '"http://127.0.0.1:1/"', '"https://[::1]/t"',
	'"socks5://10.0.0.1:1080"', '"/etc/passwd"', '"-----BEGIN CERTIFICATE-----"',
	'[]', '{}', '[1,2]', '{"a":1}', '"\u0000"', '"\ud800"', '"é"',
);

sub mutate
{
	my ($s) = @_;
	for (1 .. 1 + int(rand(4)))
	{
		my $len = length $s;
		my $at = int(rand($len + 1));
		my $op = int(rand(6));
		if ($op == 0)    # insert a piece
		{
			substr($s, $at, 0) = $pieces[ rand @pieces ];
		}
		elsif ($op == 1 && $len > 0)    # delete a run
		{
			substr($s, $at, 1 + int(rand(5))) = '';
		}
		elsif ($op == 2)                # a random character
		{
			my $c = int(rand(5)) ? 1 + int(rand(126)) : 0x80 + int(rand(0x2ff80));
			$c = 0x41 if $c >= 0xd800 && $c <= 0xdfff;
			substr($s, $at, 0) = chr($c);
		}
		elsif ($op == 3 && $len > 0)    # duplicate a chunk
		{
			substr($s, $at, 0) = substr($s, int(rand($len)), 1 + int(rand(20)));
		}
		elsif ($op == 4)                # splice another seed
		{
			my $o = $seeds[ rand @seeds ];
			substr($s, $at) = substr($o, int(rand(length $o)));
		}
		else                            # swap the case of a run
		{
			substr($s, $at, 8) = uc substr($s, $at, 8) if $at < $len;
		}
	}
	return $s;
}

sub options
{
	my @o;
	for (1 .. int(rand(4)))
	{
		my $k = int(rand(10)) ? $option_keys[ rand @option_keys ] : 'x' . int(rand(9));
		push @o, qq{"$k": $option_values[rand @option_values]};
	}
	return '{' . join(', ', @o) . '}';
}

sub quote { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }

my @rows;
for my $i (1 .. $count)
{
	my $url = $i % 10 == 0 ? $seeds[ rand @seeds ] : mutate($seeds[ rand @seeds ]);
	my $opts = options();
	$opts =~ s/"\\u0000"/"x"/ if int(rand(2));
	push @rows, '(' . $i . ', ' . quote($url) . ', ' . quote($opts) . ')';
}

# jsonb input rejects \u0000 and lone surrogates itself: such options go in
# as text and are cast inside the loop, where their error is counted too
my $result = $node->safe_psql('postgres', encode('UTF-8', <<"SQL"));
SET ROLE dest_owner;
CREATE TEMP TABLE fz (i int, url text, opts text);
CREATE TEMP TABLE fz_out (i int, state text, message text, hint text);
INSERT INTO fz VALUES @{[ join(",\n", @rows) ]};
DO \$\$
DECLARE
    r record;
    st text;
    msg text;
    hnt text;
BEGIN
    FOR r IN SELECT * FROM fz ORDER BY i LOOP
        BEGIN
            PERFORM calabi_push.create_destination('fz_' || r.i, r.url,
                                                   'secret-token', r.opts::jsonb);
            -- created: undo it (the subtransaction) and count it
            RAISE SQLSTATE 'CPOK0';
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                    hnt = PG_EXCEPTION_HINT;
            INSERT INTO fz_out VALUES (r.i, st, msg, hnt);
        END;
    END LOOP;
END
\$\$;
SELECT count(*) FILTER (WHERE state = 'CPOK0') || ' created, ' ||
       count(*) FILTER (WHERE state <> 'CPOK0') || ' refused' FROM fz_out;
SELECT state || ' x' || count(*) || ', e.g. ' || left(min(message), 100) FROM fz_out GROUP BY state ORDER BY 1;
SELECT 'BAD ' || o.i || ' ' || o.state || ' ' || o.message || ' <' || f.url || '> '
       || f.opts
  FROM fz_out o JOIN fz f USING (i)
 WHERE o.state LIKE 'XX%' OR o.state LIKE '58%'
    -- every refusal by calabi_push says how to fix it; the cast of the
    -- options text to jsonb fails PostgreSQL's own way
    OR (o.state <> 'CPOK0' AND coalesce(o.hint, '') = ''
        AND NOT (o.state IN ('22P02', '22P05') AND o.message ~ 'json|Unicode'))
 ORDER BY o.i LIMIT 20;
SQL
$result = Encode::decode('UTF-8', $result);
my @lines = split /\n/, $result;
note $_ for grep { !/^BAD / } @lines;
my ($summary) = grep { /created, .* refused/ } @lines;
like($summary, qr/^\d+ created, \d+ refused$/, "all $count URLs went through create_destination");
my ($created, $refused) = $summary =~ /^(\d+) created, (\d+) refused/;
is($created + $refused, $count, 'each call either created the destination or was refused');
ok($created > 0 && $refused > 0, 'the inputs reach both outcomes');
my @bad = grep { /^BAD / } @lines;
is(scalar(@bad), 0, 'no internal error and no refusal without a hint')
  or diag join("\n", @bad);

# nothing was left behind: every creation was rolled back
is($node->safe_psql('postgres', 'SELECT count(*) FROM calabi_push.destinations'),
	'0', 'no destination is left over');

# ---- the encoder on random values ---------------------------------------

# The shared every-type-family table, filled with random values of each
# type, the extremes among them (infinities, NaN, the ends of each range,
# empty and multi-dimensional arrays, long and odd Unicode text), a tenth
# NULL: preview() must encode every row.
my $rows = 2000;
my %pick = (
	i2 => [ q{(floor(random()*65536)-32768)::int2}, '32767', '-32768' ],
	i8 => [ q{(random()*1e18-5e17)::int8}, '9223372036854775807', '-9223372036854775808' ],
	r => [ q{(random()*1e6-5e5)::real}, q{'NaN'}, q{'Infinity'}, q{'-Infinity'}, q{'-0'}, q{'1e-45'}, q{'3.4e38'} ],
	d => [ q{(random()*1e300)}, q{'NaN'}, q{'-Infinity'}, q{'5e-324'}, q{'1.7976931348623157e308'} ],
	n => [ q{(random()::numeric * 10::numeric ^ floor(random()*60 - 30)::numeric)}, q{'NaN'}, q{'Infinity'}, q{'-Infinity'},
		q{repeat('9', 1000)::numeric}, q{('0.' || repeat('0', 900) || '1')::numeric} ],
	m => [ q{(random()*1e6)::numeric::money}, q{'-92233720368547758.08'}, q{'92233720368547758.07'} ],
	b => [ q{random() < 0.5} ],
	bits => [ q{floor(random()*16)::int::bit(4)} ],
	vb => [ q{fz_bits(floor(random()*200)::int)}, q{''} ],
	ba => [ q{fz_bytes(floor(random()*300)::int)}, q{''} ],
	c => [ q{fz_text(5)} ],
	vc => [ q{fz_text(floor(random()*100)::int)} ],
	tx => [ q{fz_text(floor(random()*3000)::int)}, q{''} ],
	nm => [ q{fz_text(40)} ],
	dt => [ q{date '2000-01-01' + floor(random()*1e5 - 5e4)::int}, q{'infinity'}, q{'-infinity'},
		q{'4713-01-01 BC'}, q{'5874897-12-31'} ],
	ts => [ q{timestamp '2000-01-01' + random() * interval '100000 days' - interval '50000 days'},
		q{'infinity'}, q{'-infinity'}, q{'4713-01-01 00:00 BC'}, q{'294276-12-31 23:59:59.999999'} ],
	tz => [ q{timestamptz '2000-01-01 UTC' + random() * interval '100000 days' - interval '50000 days'},
		q{'infinity'}, q{'-infinity'}, q{'4713-01-01 00:00+00 BC'} ],
	tm => [ q{time '00:00' + random() * interval '24 hours'}, q{'24:00:00'} ],
	ttz => [ q{(time '00:00' + random() * interval '24 hours')::timetz}, q{'24:00:00-15:59'}, q{'00:00+15:59'} ],
	iv => [ q{(random() - 0.5) * interval '10000 days 7 hours'}, q{'178000000 years'}, q{'-178000000 years'},
		q{'1 mon -1 day 0.000001 sec'} ],
	js => [ q{to_json(fz_text(40))}, q{'"\u0000"'}, q{'1e999'}, q{'[[[[[]]]]]'}, q{'{"a":1,"a":2}'} ],
	jb => [ q{to_jsonb(fz_text(40))}, q{'{"":{"":[null,true,-0.0e-5]}}'}, q{'1e999'}, q{'[]'} ],
	u => [ q{gen_random_uuid()} ],
	ip => [ q{(floor(random()*256) || '.' || floor(random()*256) || '.0.' || floor(random()*256))::inet},
		q{'::ffff:1.2.3.4/128'}, q{'0.0.0.0/0'}, q{'ffff::/1'} ],
	e => [ q{(enum_range(NULL::mood))[1 + floor(random()*3)::int]} ],
	p => [ q{ROW(floor(random()*1e6)::int, now())::pair}, q{ROW(NULL, 'infinity')::pair} ],
	rg => [ q{tsrange(timestamp '2000-01-01', timestamp '2000-01-01' + random() * interval '9 days')},
		q{'empty'}, q{'(,)'}, q{'[-infinity,infinity]'} ],
	pt => [ q{point(random()*1e300, random()-0.5)}, q{point('NaN', 'Infinity')} ],
	h => [ q{hstore(fz_text(5), fz_text(5))}, q{hstore(fz_text(3), NULL)}, q{''} ],
	ia => [ q{ARRAY[floor(random()*1e9)::int, NULL, -2147483648]}, q{'{}'}, q{'[0:2]={1,2,3}'}, q{'{NULL}'} ],
	ta => [ q{ARRAY[[fz_text(3), fz_text(3)], [fz_text(1), NULL]]}, q{'{}'}, q{'{{"",""}}'} ],
	dom => [ q{1 + floor(random()*2147483646)::int} ],
	o => [ q{floor(random()*4294967295)::bigint::oid} ],
	ext => [ q{fz_text(floor(random()*5000)::int)} ],
	next => [ q{(random()::numeric * 10::numeric ^ floor(random()*200)::numeric)}, q{repeat('7', 5000)::numeric} ],
);
my @cols = sort keys %pick;
my @exprs = map {
	my @c = @{ $pick{$_} };
	my $rand = shift @c;
	my $case = "CASE WHEN random() < 0.1 THEN NULL";
	for my $i (0 .. $#c)
	{
		$case .= " WHEN random() < 0.05 THEN $c[$i]";
	}
	"$case ELSE $rand END"
} @cols;

$node->safe_psql('postgres', everything_sql('schema'));
$node->safe_psql('postgres', <<"SQL");
SELECT setseed(0.5);
CREATE FUNCTION fz_text(n int) RETURNS text LANGUAGE sql VOLATILE AS \$\$
  SELECT coalesce(string_agg(chr(CASE
      WHEN r < 0.6 THEN 32 + floor(random()*95)::int
      WHEN r < 0.7 THEN 1 + floor(random()*31)::int
      ELSE CASE WHEN c BETWEEN 55296 AND 57343 THEN 65533 ELSE c END END), ''), '')
    FROM (SELECT random() AS r, 128 + floor(random()*1113983)::int AS c
            FROM generate_series(1, n)) g
\$\$;
CREATE FUNCTION fz_bytes(n int) RETURNS bytea LANGUAGE sql VOLATILE AS \$\$
  SELECT decode(coalesce(string_agg(lpad(to_hex(floor(random()*256)::int), 2, '0'), ''), ''), 'hex')
    FROM generate_series(1, n)
\$\$;
CREATE FUNCTION fz_bits(n int) RETURNS varbit LANGUAGE sql VOLATILE AS \$\$
  SELECT coalesce(string_agg(CASE WHEN random() < 0.5 THEN '1' ELSE '0' END, ''), '')::varbit
    FROM generate_series(1, n)
\$\$;
INSERT INTO everything (@{[ join(', ', @cols) ]})
SELECT @{[ join(",\n       ", @exprs) ]}
  FROM generate_series(1, $rows);
SQL
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM calabi_push.preview('everything', NULL) AS p
	 WHERE (p::text)::json IS NOT NULL}),
	$rows, "preview() encodes $rows rows of random values of every type family as JSON");

my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|server process .* was terminated|TRAP:/,
	'no backend crashed');
$node->stop;
done_testing();
