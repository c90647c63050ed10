# The reference receiver alone (test/receiver/calabi_receiver.py): hand-built
# gzip NDJSON batches posted over HTTPS prove that it accepts and lands what
# the ingest protocol says (append, overwrite, append_dedup), refuses what it
# forbids with a 400 naming the line and the field, authenticates (static
# token, OAuth2 client credentials, mutual TLS), injects every kind of fault,
# and logs each request with its Authorization redacted.
use strict;
use warnings;

use HTTP::Tiny;
use IO::Compress::Gzip qw(gzip $GzipError);
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(time sleep);

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiReceiver;

my $node = calabi_node('dest');
my $TOKEN = 'tok-3f9a1c77e2';
my $r = CalabiReceiver->start(node => $node, dbname => 'dest', token => $TOKEN, name => 'main');

my $json = JSON::PP->new->canonical;
my $SYNC = '0b6f3a52-8a0e-4c8f-9b1e-2f6d1c3e4a5b';

sub sql { $node->safe_psql('dest', shift) }

# --- building batches -------------------------------------------------------

# A STREAM line; properties is the JSON text of json_schema.properties.
sub stream_msg
{
	my ($ns, $name, $props, %o) = @_;
	my $method = $o{method} // 'full_refresh';
	my %s = (
		namespace => $ns,
		name => $name,
		json_schema => '@PROPS@',
		primary_key => $o{pk} // [],
		sync_mode => $o{sync_mode} // ($method eq 'full_refresh' ? 'full_refresh' : 'incremental'),
		destination_sync_mode => $o{mode} // 'append',
		method => $method);
	$s{cursor_field} = $o{cursor} if $o{cursor};
	$s{cursor_field} = ['_calabi_cdc_lsn'] if $method eq 'cdc' && !$o{cursor};
	my $text = $json->encode({ type => 'STREAM', stream => \%s });
	$text =~ s/"\@PROPS\@"/{"type":"object","properties":$props}/;
	return $text;
}

# A RECORD line; data is JSON text.
sub rec
{
	my ($ns, $name, $data, %o) = @_;
	my $u = $o{unchanged} ? ',"unchanged":' . $json->encode($o{unchanged}) : '';
	my $at = $o{emitted_at} // 1732450000123;
	return qq({"type":"RECORD","record":{"namespace":"$ns","stream":"$name","emitted_at":$at,"data":$data$u}});
}

sub control
{
	my ($kind, $ns, $name, %f) = @_;
	my $extra = join('', map { qq(,"$_":$f{$_}) } sort keys %f);
	return qq({"type":"CONTROL","control":{"kind":"$kind","namespace":"$ns","stream":"$name"$extra}});
}

sub state_msg
{
	my ($seq) = @_;
	return qq({"type":"STATE","state":{"batch_seq":$seq,"streams":[{"namespace":"public","name":"x","state":{"method":"cdc","lsn":1}}]}});
}

# The NDJSON body of batch SEQ: the lines, then its STATE.
sub batch
{
	my ($seq, @lines) = @_;
	return join('', map { "$_\n" } @lines, state_msg($seq));
}

# --- posting ----------------------------------------------------------------

my %client_cache;

sub client
{
	my (%o) = @_;
	my %ssl = (SSL_ca_file => $o{ca_file} // $r->ca_file);
	if ($o{cert})
	{
		$ssl{SSL_cert_file} = $o{cert};
		$ssl{SSL_key_file} = $o{key};
	}
	return HTTP::Tiny->new(
		verify_SSL => 1,
		SSL_options => \%ssl,
		timeout => $o{timeout} // 60,
		keep_alive => $o{keep_alive} // 0);
}

# post(seq => N, body => NDJSON | raw => BYTES, ...): ($status, $json or text, $response)
sub post
{
	my (%o) = @_;
	my $recv = $o{receiver} // $r;
	my $seq = $o{seq};
	my $sync = $o{sync} // $SYNC;
	my $body = $o{raw};
	if (!defined $body)
	{
		$body = $o{body} // batch($seq);
		if ($o{gzip} // 1)
		{
			my $z;
			gzip(\$body => \$z) or die $GzipError;
			$body = $z;
		}
	}
	my %h = (
		'content-type' => 'application/x-ndjson',
		'calabi-protocol' => '1',
		'calabi-sync' => 'orders_sync',
		'calabi-sync-id' => $sync,
		'calabi-batch-seq' => $seq,
		'idempotency-key' => "$sync:$seq",
		'user-agent' => 'calabi_push/0.1.0 PostgreSQL/15.20');
	$h{'content-encoding'} = 'gzip' if ($o{gzip} // 1);
	$h{authorization} = "Bearer " . ($o{token} // $TOKEN)
	  unless exists $o{token} && !defined $o{token};
	while (my ($k, $v) = each %{ $o{headers} // {} })
	{
		if (defined $v) { $h{ lc $k } = $v }
		else { delete $h{ lc $k } }
	}
	my $http = $o{client} // client(%o);
	my $res;
	if ($o{give_up_after})
	{
		# a client that stops waiting (HTTP::Tiny's own timeout does not
		# cover a TLS 1.3 read that session tickets woke up)
		$res = eval {
			local $SIG{ALRM} = sub { die "gave up\n" };
			alarm $o{give_up_after};
			my $x = $http->request('POST', $o{url} // $recv->url, { headers => \%h, content => $body });
			alarm 0;
			$x;
		} // { status => 599, content => $@ };
		alarm 0;
	}
	else
	{
		$res = $http->request($o{method} // 'POST', $o{url} // $recv->url,
			{ headers => \%h, content => $body });
	}
	my $content = $res->{content};
	my $decoded = eval { JSON::PP->new->decode($content) } // $content;
	return ($res->{status}, $decoded, $res);
}

sub err_of { my $d = shift; ref $d eq 'HASH' ? ($d->{error} // '') : ($d // '') }

# refused(N, qr/error/, name, post options): a 400 (or the given status)
# whose error matches
sub refused
{
	my ($status, $re, $name, %o) = @_;
	my ($st, $d) = post(%o);
	is($st, $status, "$name: $status") or diag explain $d;
	like(err_of($d), $re, "$name: the error names it");
}

# --- append -----------------------------------------------------------------

my $orders_props =
  '{"id":{"type":"number","airbyte_type":"integer"},"amount":{"type":"number"},'
  . '"f":{"type":"number"},"note":{"type":"string"},"ok":{"type":"boolean"},'
  . '"tags":{"type":"array","items":{"type":"string"}}}';
my $orders = stream_msg('public', 'orders', $orders_props, pk => [ ['id'] ]);

my ($st, $d) = post(
	seq => 1,
	body => batch(
		1, $orders,
		rec('public', 'orders',
			'{"id":-9223372036854775808,"amount":1234567890987654321.1234567890987654321,"f":1e+24,"note":"h\u00e9llo \"q\"","ok":true,"tags":["a",1.50,null]}'
		),
		rec('public', 'orders',
			'{"id":2,"amount":3.540,"f":0.1,"note":null,"ok":false,"tags":null}',
			emitted_at => 1732450000999)));
is($st, 200, 'append: a batch is accepted');
is_deeply($d, { status => 'accepted', batch_seq => 1, lines => 4, records => 2 },
	'append: the answer says what was accepted');
is( sql(q{SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
	FROM pg_attribute WHERE attrelid = 'public.orders'::regclass AND attnum > 0}),
	'id numeric, amount numeric, f numeric, note text, ok boolean, tags jsonb, _calabi_emitted_at timestamp with time zone',
	'append: one column per property, typed from json_schema, plus _calabi_emitted_at');
is( sql(q{SELECT id || '|' || amount || '|' || f || '|' || coalesce(note, '-') || '|' || ok || '|' || coalesce(tags::text, '-')
	|| '|' || (extract(epoch FROM _calabi_emitted_at) * 1000)::bigint FROM public.orders ORDER BY id}),
	qq{-9223372036854775808|1234567890987654321.1234567890987654321|1000000000000000000000000|héllo "q"|true|["a", 1.50, null]|1732450000123\n}
	  . qq{2|3.540|0.1|-|false|-|1732450000999},
	'append: values land exactly (numeric digits and scale, strings, arrays as jsonb, emitted_at)');

($st, $d) = post(seq => 1, body => batch(1, $orders, rec('public', 'orders',
	'{"id":-9223372036854775808,"amount":1234567890987654321.1234567890987654321,"f":1e+24,"note":"h\u00e9llo \"q\"","ok":true,"tags":["a",1.50,null]}'),
	rec('public', 'orders', '{"id":2,"amount":3.540,"f":0.1,"note":null,"ok":false,"tags":null}', emitted_at => 1732450000999)));
is($st, 409, 'append: the same Idempotency-Key again is a 409');
is(sql('SELECT count(*) FROM public.orders'), '2', 'append: ... and changes nothing');

refused(400, qr/already accepted for a different body/, 'a used Idempotency-Key with another body',
	seq => 1, body => batch(1));

($st, $d) = post(seq => 3, body => batch(3, rec('public', 'orders',
	'{"id":3,"amount":1,"f":null,"note":"x","ok":null,"tags":[]}')));
is($st, 200, 'append: a later batch may rely on the STREAM of an earlier one (gaps in seq allowed)');
refused(400, qr/Calabi-Batch-Seq 2 is not above 3, the greatest already accepted/,
	'a lower seq never accepted', seq => 2, body => batch(2));

# the stream evolves: a new column, one gone, one whose type changes
($st, $d) = post(seq => 4, body => batch(4,
	stream_msg('public', 'orders',
		'{"id":{"type":"number"},"amount":{"type":"string"},"f":{"type":"number"},"ok":{"type":"boolean"},'
		. '"tags":{"type":"array"},"extra":{"type":"string"}}', pk => [ ['id'] ]),
	rec('public', 'orders', '{"id":4,"amount":"12.5 EUR","f":2,"ok":true,"tags":[1],"extra":"new"}')));
is($st, 200, 'append: a STREAM with a new, a removed and a retyped column');
is( sql(q{SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
	FROM pg_attribute WHERE attrelid = 'public.orders'::regclass AND attnum > 0 AND NOT attisdropped}),
	'id numeric, amount text, f numeric, note text, ok boolean, tags jsonb, _calabi_emitted_at timestamp with time zone, extra text',
	'append: the new column is added, the removed one stays, numeric -> string widens to text');
is( sql(q{SELECT string_agg(id || ':' || amount || ':' || coalesce(note, '-') || ':' || coalesce(extra, '-'), ' ' ORDER BY id) FROM public.orders}),
	'-9223372036854775808:1234567890987654321.1234567890987654321:héllo "q":- 2:3.540:-:- 3:1:x:- 4:12.5 EUR:-:new',
	'append: old values keep their exact text; the removed column is null from then on');

# --- rejected batches change nothing ------------------------------------------

refused(400, qr/line 2: RECORD for public\.orders: record\.data has "bogus", which is not in the stream's schema/,
	'data with a key not in the schema', seq => 5,
	body => batch(5, rec('public', 'orders', '{"id":5,"amount":"1","f":1,"ok":true,"tags":[],"extra":null}'),
		rec('public', 'orders', '{"id":6,"amount":"1","f":1,"ok":true,"tags":[],"extra":null,"bogus":1}')));
refused(400, qr/line 1: RECORD for public\.orders: record\.data lacks "extra"/,
	'data lacking a column of the schema', seq => 5,
	body => batch(5, rec('public', 'orders', '{"id":5,"amount":"1","f":1,"ok":true,"tags":[]}')));
refused(400, qr/line 1: RECORD for public\.orders: record\.data\."f" is a string, but the schema says "number"/,
	'a value of the wrong JSON type', seq => 5,
	body => batch(5, rec('public', 'orders', '{"id":5,"amount":"1","f":"1","ok":true,"tags":[],"extra":null}')));
refused(400, qr/line 1: RECORD for stream public\.nosuch, but no STREAM for it was received from this sync before/,
	'a RECORD before any STREAM of its stream', seq => 5,
	body => batch(5, rec('public', 'nosuch', '{"id":1}')));
refused(400, qr/RECORD for stream public\.orders, but no STREAM/,
	'STREAMs are per sync: another sync must send its own', seq => 1,
	sync => '99999999-8a0e-4c8f-9b1e-2f6d1c3e4a5b',
	body => batch(1, rec('public', 'orders', '{"id":5,"amount":"1","f":1,"ok":true,"tags":[],"extra":null}')));
refused(400, qr/the batch has no STATE message/, 'a batch without STATE', seq => 5,
	body => rec('public', 'orders', '{"id":5,"amount":"1","f":1,"ok":true,"tags":[],"extra":null}') . "\n");
refused(400, qr/line 1: STATE must be the last line of the batch, but 1 line\(s\) follow it/,
	'STATE not last', seq => 5,
	body => state_msg(5) . "\n" . rec('public', 'orders', '{"id":5}') . "\n");
refused(400, qr/line 1: STATE must be the last line/, 'two STATEs', seq => 5,
	body => state_msg(5) . "\n" . state_msg(5) . "\n");
refused(400, qr/line 1: STATE: state\.batch_seq is 4, but the request's Calabi-Batch-Seq is 5/,
	'STATE batch_seq differing from the header', seq => 5, body => batch(4));
refused(400, qr/the body is not valid gzip/, 'a body that is not gzip', seq => 5,
	raw => "this is not gzip\n", headers => { 'content-encoding' => 'gzip' });
{
	my $z;
	my $b = batch(5);
	gzip(\$b => \$z);
	refused(400, qr/not valid gzip: it ends inside the compressed stream/, 'a truncated gzip body', seq => 5,
		raw => substr($z, 0, length($z) - 12), headers => { 'content-encoding' => 'gzip' });
}
refused(400, qr/line 1: not valid JSON/, 'a line that is not JSON', seq => 5, body => "{\"type\":\n" . state_msg(5) . "\n");
refused(400, qr/line 2: empty line/, 'an empty line', seq => 5,
	body => rec('public', 'orders', '{"id":5,"amount":"1","f":1,"ok":true,"tags":[],"extra":null}') . "\n\n" . state_msg(5) . "\n");
refused(400, qr/line 1: does not end in \\n/, 'a last line without its newline', seq => 5, body => state_msg(5));
refused(400, qr/line 1: unknown message type "LOG"/, 'an unknown message type', seq => 5,
	body => qq({"type":"LOG","log":{}}\n) . state_msg(5) . "\n");
refused(400, qr/line 1: not valid UTF-8/, 'a body that is not UTF-8', seq => 5,
	body => qq({"type":"LOG","x":"\xff"}\n) . state_msg(5) . "\n");
refused(400, qr/line 1: not valid JSON: NaN is not a JSON value/, 'NaN', seq => 5,
	body => rec('public', 'orders', '{"id":5,"amount":"1","f":NaN,"ok":true,"tags":[],"extra":null}') . "\n" . state_msg(5) . "\n");
refused(400, qr/line 1: not valid JSON: duplicate key "id"/, 'a duplicate key', seq => 5,
	body => rec('public', 'orders', '{"id":5,"id":6}') . "\n" . state_msg(5) . "\n");
refused(400, qr/line 1: RECORD: record\.emitted_at must be an integer number of milliseconds/,
	'a fractional emitted_at', seq => 5,
	body => batch(5, rec('public', 'orders', '{"id":5,"amount":"1","f":1,"ok":true,"tags":[],"extra":null}', emitted_at => '1.5')));
refused(400, qr/line 1: STREAM: stream: destination_sync_mode "append_dedup" needs a non-empty primary_key/,
	'append_dedup without a key', seq => 5,
	body => batch(5, stream_msg('public', 'k', '{"a":{"type":"string"}}', mode => 'append_dedup', method => 'xmin')));
refused(400, qr/line 1: STREAM: stream\.sync_mode must be "incremental" for the method "cdc"/,
	'sync_mode inconsistent with method', seq => 5,
	body => batch(5, stream_msg('public', 'k', '{"a":{"type":"string"}}', method => 'cdc', sync_mode => 'full_refresh')));
refused(400, qr/line 1: STREAM: stream\.cursor_field must be a one-column path .* for the method "cursor"/,
	'a cursor stream without cursor_field', seq => 5,
	body => batch(5, stream_msg('public', 'k', '{"a":{"type":"string"}}', method => 'cursor')));
refused(400, qr/line 1: STREAM: stream\.json_schema\.properties lacks "_calabi_cdc_lsn"/,
	'a cdc stream without its _calabi_cdc_* columns', seq => 5,
	body => batch(5, stream_msg('public', 'k', '{"a":{"type":"string"}}', method => 'cdc')));
refused(400, qr/line 1: STREAM: stream: unknown field "sync"/, 'an unknown field', seq => 5,
	body => batch(5, qq({"type":"STREAM","stream":{"sync":1}})));
refused(400, qr/line 2: CONTROL refresh_end for public\.orders: generation 7 was never started/,
	'a refresh_end of a generation never started', seq => 5,
	body => batch(5, rec('public', 'orders', '{"id":5,"amount":"1","f":1,"ok":true,"tags":[],"extra":null}'),
		control('refresh_end', 'public', 'orders', generation => 7)));
is(sql('SELECT count(*) FROM public.orders'), '4', 'refused batches changed nothing (lines applied before the fault are rolled back)');
is(sql(qq{SELECT string_agg(batch_seq::text, ',' ORDER BY batch_seq) FROM _calabi.batches WHERE sync_id = '$SYNC'}),
	'1,3,4', 'refused batches are not recorded as accepted');

# bad headers
my %bad_headers = (
	'Calabi-Protocol 2' => [ { 'calabi-protocol' => '2' }, qr/header Calabi-Protocol must be 1/ ],
	'no Calabi-Protocol' => [ { 'calabi-protocol' => undef }, qr/header Calabi-Protocol must be 1 .*got nothing/ ],
	'a sync id that is no uuid' => [ { 'calabi-sync-id' => 'not-a-uuid', 'idempotency-key' => 'not-a-uuid:5' }, qr/header Calabi-Sync-Id must be a uuid/ ],
	'a bad sync name' => [ { 'calabi-sync' => 'a b' }, qr/header Calabi-Sync must be a sync name/ ],
	'seq 05' => [ { 'calabi-batch-seq' => '05' }, qr/header Calabi-Batch-Seq must be a positive integer/ ],
	'seq 0' => [ { 'calabi-batch-seq' => '0', 'idempotency-key' => "$SYNC:0" }, qr/header Calabi-Batch-Seq must be a positive integer/ ],
	'a wrong Idempotency-Key' => [ { 'idempotency-key' => "$SYNC:6" }, qr/header Idempotency-Key must be "<Calabi-Sync-Id>:<Calabi-Batch-Seq>", that is "\Q$SYNC\E:5", got "\Q$SYNC\E:6"/ ],
	'a foreign User-Agent' => [ { 'user-agent' => 'curl/8.0' }, qr/header User-Agent must be "calabi_push\/<extension version> PostgreSQL\/<server version>"/ ],
	'Content-Type text/plain' => [ { 'content-type' => 'text/plain' }, qr/header Content-Type must be application\/x-ndjson/ ],
	'a charset other than utf-8' => [ { 'content-type' => 'application/x-ndjson; charset=latin1' }, qr/header Content-Type/ ],
);
for my $name (sort keys %bad_headers)
{
	my ($h, $re) = @{ $bad_headers{$name} };
	refused(400, $re, "header: $name", seq => 5, headers => $h);
}
($st, $d) = post(seq => 5, headers => { 'content-type' => 'application/x-ndjson; charset=UTF-8' });
is($st, 200, 'Content-Type with ; charset=utf-8 is accepted, and the refused seq 5 is still free');
($st, $d) = post(seq => 6, gzip => 0);
is($st, 200, 'an uncompressed body without Content-Encoding is accepted');
refused(415, qr/Content-Encoding "zstd" is not supported/, 'Content-Encoding zstd', seq => 7,
	headers => { 'content-encoding' => 'zstd' });
refused(415, qr/Content-Encoding "br" is not supported/, 'Content-Encoding br', seq => 7,
	headers => { 'content-encoding' => 'br' });
refused(400, qr/method GET: the ingest endpoint takes POST only/, 'GET', seq => 7, method => 'GET');
refused(404, qr/no such path \/other/, 'another path', seq => 7, url => $r->base_url . '/other');
{
	my ($s, $dd, $res) = post(seq => 7, token => undef);
	is($s, 401, 'no Authorization: 401');
	like($res->{headers}{'www-authenticate'} // '', qr/^Bearer/, '... with a Bearer challenge');
	refused(401, qr/the bearer token is wrong/, 'a wrong token', seq => 7, token => 'nope');
	refused(401, qr/must be "Bearer <token>"/, 'another scheme', seq => 7,
		headers => { authorization => "Basic " . encode_base64("a:b", '') });
}

# --- overwrite ----------------------------------------------------------------

my $snap = stream_msg('sales', 'snap', '{"id":{"type":"number"},"v":{"type":"string"}}', mode => 'overwrite');
sub snap_rows { sql(q{SELECT coalesce(string_agg(id || v, ',' ORDER BY id), '') FROM sales.snap}) }
sub snap_rec { rec('sales', 'snap', qq({"id":$_[0],"v":"$_[1]"})) }

($st, $d) = post(seq => 10, body => batch(10, $snap, control('refresh_start', 'sales', 'snap', generation => 1),
	snap_rec(1, 'a'), snap_rec(2, 'b')));
is($st, 200, 'overwrite: the first part of a read');
is(snap_rows(), '', 'overwrite: the table exists (schema created), empty until the first refresh_end');
is(sql(q{SELECT generation || ' ' || staging_table FROM _calabi.open_generations WHERE name = 'snap'}),
	'1 _calabi.stage_' . sql(q{SELECT stream_id FROM _calabi.streams WHERE name = 'snap'}),
	'overwrite: the open generation is in _calabi.open_generations, with its staging table');
($st, $d) = post(seq => 11, body => batch(11, control('refresh_end', 'sales', 'snap', generation => 1)));
is($st, 200, 'overwrite: refresh_end');
is(snap_rows(), '1a,2b', 'overwrite: at refresh_end the new copy becomes visible');
($st, $d) = post(seq => 12, body => batch(12, control('refresh_start', 'sales', 'snap', generation => 2), snap_rec(3, 'c')));
is(snap_rows(), '1a,2b', 'overwrite: during the next read, readers still see the previous complete copy');
($st, $d) = post(seq => 13, body => batch(13, $snap, control('refresh_start', 'sales', 'snap', generation => 2),
	snap_rec(4, 'd'), control('refresh_end', 'sales', 'snap', generation => 2)));
is($st, 200, 'overwrite: a resumed read repeats its refresh_start');
is(snap_rows(), '3c,4d', 'overwrite: ... which changes nothing: records of the open generation kept accumulating');
($st, $d) = post(seq => 14, body => batch(14, control('refresh_start', 'sales', 'snap', generation => 3), snap_rec(5, 'e')));
($st, $d) = post(seq => 15, body => batch(15, control('refresh_start', 'sales', 'snap', generation => 4), snap_rec(6, 'f')));
is(snap_rows(), '3c,4d', 'overwrite: an unfinished generation is not visible');
($st, $d) = post(seq => 16, body => batch(16, control('refresh_end', 'sales', 'snap', generation => 4)));
is(snap_rows(), '6f', 'overwrite: a newer refresh_start abandoned the unfinished older generation');
($st, $d) = post(seq => 17, body => batch(17, $snap, control('refresh_start', 'sales', 'snap', generation => 4),
	snap_rec(6, 'f'), control('refresh_end', 'sales', 'snap', generation => 4)));
is($st, 200, 'overwrite: a completed generation re-sent after a sender restart');
is($d->{ignored_records}, 1, '... its records are ignored (counted in the answer)');
is(snap_rows(), '6f', '... and the visible copy is unchanged');
refused(400, qr/line 1: RECORD for sales\.snap: an overwrite stream's records must lie between a refresh_start and its refresh_end/,
	'overwrite: a record outside any refresh', seq => 18, body => batch(18, snap_rec(7, 'g')));
is(sql(q{SELECT count(*) FROM pg_tables WHERE schemaname = '_calabi' AND tablename LIKE 'stage_%'}), '0',
	'overwrite: no staging table is left behind');

# --- append_dedup, CDC --------------------------------------------------------

my $items = stream_msg('public', 'items',
	'{"id":{"type":"number"},"name":{"type":"string"},"note":{"type":"string"},'
	. '"_calabi_cdc_lsn":{"type":"number"},"_calabi_cdc_updated_at":{"type":"string"},"_calabi_cdc_deleted_at":{"type":"string"}}',
	pk => [ ['id'] ], mode => 'append_dedup', method => 'cdc');

sub item
{
	my ($id, $lsn, $name, $note, %o) = @_;
	my $del = delete $o{deleted} ? '"2024-11-24T12:00:00.000000Z"' : 'null';
	my $n = (grep { $_ eq 'note' } @{ $o{unchanged} // [] }) ? '' : defined $note ? qq(,"note":"$note") : ',"note":null';
	my $nm = defined $name ? qq("$name") : 'null';
	return rec('public', 'items',
		qq({"id":$id,"name":$nm$n,"_calabi_cdc_lsn":$lsn,"_calabi_cdc_updated_at":"2024-11-24T12:00:00.000000Z","_calabi_cdc_deleted_at":$del}),
		%o);
}
sub items_rows
{
	sql(q{SELECT coalesce(string_agg(id || ':' || coalesce(name, '-') || ':' || coalesce(note, '-') || '@' || _calabi_cdc_lsn, ' ' ORDER BY id), '') FROM public.items});
}

($st, $d) = post(seq => 20, body => batch(20, $items,
	item(1, 100, 'a', 'n1'), item(2, 100, 'b', 'n2'), item(1, 120, 'a2', 'n1b'),
	item(1, 110, 'a-old', 'n-old'), item(3, 130, 'c', 'n3'), item(3, 140, 'c', undef, deleted => 1)));
is($st, 200, 'append_dedup: a batch of changes');
is(items_rows(), '1:a2:n1b@120 2:b:n2@100', 'append_dedup: newest version per key by LSN (an older one arriving later loses); a delete removes the row');
($st, $d) = post(seq => 21, body => batch(21,
	item(2, 150, 'b2', undef, unchanged => ['note']),
	item(4, 150, 'd', 'n4'), item(4, 150, 'd2', 'n4b'),
	item(3, 135, 'c-old', 'n3-old')));
is(items_rows(), '1:a2:n1b@120 2:b2:n2@150 4:d2:n4b@150',
	'append_dedup: unchanged columns keep their value; among equal LSNs the last received wins; an older version does not resurrect a deleted row');
($st, $d) = post(seq => 22, body => batch(22, control('truncate', 'public', 'items', lsn => 200),
	item(5, 190, 'e', 'n5'), item(6, 210, 'f', 'n6')));
is($st, 200, 'append_dedup: truncate');
is(items_rows(), '6:f:n6@210', 'append_dedup: truncate drops every version with a smaller LSN, even one arriving after it');
($st, $d) = post(seq => 23, body => batch(23, control('refresh_start', 'public', 'items', generation => 1, lsn => 300),
	item(7, 300, 'g', 'n7'), item(8, 305, 'h', 'n8')));
is(items_rows(), '6:f:n6@210 7:g:n7@300 8:h:n8@305', 'append_dedup: backfill rows land at once');
($st, $d) = post(seq => 24, body => batch(24, control('refresh_end', 'public', 'items', generation => 1)));
is(items_rows(), '7:g:n7@300 8:h:n8@305', 'append_dedup: refresh_end deletes the rows whose newest version is below the refresh lsn');
is(sql(q{SELECT indexdef FROM pg_indexes WHERE tablename = 'items'}),
	'CREATE UNIQUE INDEX ' . sql(q{SELECT indexname FROM pg_indexes WHERE tablename = 'items'})
	  . ' ON public.items USING btree (id)', 'append_dedup: a unique index on the primary key');
refused(400, qr/line 1: CONTROL truncate for public\.orders: truncate is a CDC event/,
	'truncate on a stream that is not cdc', seq => 25, body => batch(25, control('truncate', 'public', 'orders', lsn => 1)));
refused(400, qr/line 1: RECORD for public\.items: record\.data\."id" is a primary key column and cannot be null/,
	'append_dedup: a null key', seq => 25, body => batch(25, item('null', 400, 'x', 'y')));
refused(400, qr/control\.lsn is missing/, 'a cdc refresh_start without lsn', seq => 25,
	body => batch(25, control('refresh_start', 'public', 'items', generation => 2)));

# append_dedup of a cursor stream: the last one received wins
my $people = stream_msg('public', 'people', '{"id":{"type":"number"},"v":{"type":"string"},"ts":{"type":"string"}}',
	pk => [ ['id'] ], mode => 'append_dedup', method => 'cursor', cursor => ['ts']);
($st, $d) = post(seq => 25, body => batch(25, $people,
	rec('public', 'people', '{"id":1,"v":"one","ts":"t1"}'), rec('public', 'people', '{"id":2,"v":"two","ts":"t1"}'),
	rec('public', 'people', '{"id":1,"v":"uno","ts":"t2"}')));
is(sql(q{SELECT string_agg(id || v, ',' ORDER BY id) FROM public.people}), '1uno,2two',
	'append_dedup (cursor): the version received last wins');

# a stream that becomes append_dedup: the rows appended so far are deduplicated
($st, $d) = post(seq => 26, body => batch(26,
	stream_msg('public', 'people', '{"id":{"type":"number"},"v":{"type":"string"},"ts":{"type":"string"}}',
		mode => 'append', method => 'xmin'),
	rec('public', 'people', '{"id":2,"v":"dos","ts":"t3"}'),
	stream_msg('public', 'people', '{"id":{"type":"number"},"v":{"type":"string"},"ts":{"type":"string"}}',
		pk => [ ['id'] ], mode => 'append_dedup', method => 'xmin'),
	rec('public', 'people', '{"id":1,"v":"eins","ts":"t3"}')));
is(sql(q{SELECT string_agg(id || v, ',' ORDER BY id) FROM public.people}), '1eins,2dos',
	'append -> append_dedup: the newest appended version of each key is kept');

# a CDC append stream: every version is a row; unchanged columns repeat the previous version's value
my $hist = stream_msg('public', 'hist',
	'{"id":{"type":"number"},"big":{"type":"string"},"n":{"type":"number"},'
	. '"_calabi_cdc_lsn":{"type":"number"},"_calabi_cdc_updated_at":{"type":"string"},"_calabi_cdc_deleted_at":{"type":"string"}}',
	pk => [ ['id'] ], mode => 'append', method => 'cdc');
sub hist
{
	my ($lsn, $n, $big, $del) = @_;
	my $b = defined $big ? qq("big":"$big",) : '';
	return rec('public', 'hist',
		qq({"id":1,$b"n":$n,"_calabi_cdc_lsn":$lsn,"_calabi_cdc_updated_at":"t","_calabi_cdc_deleted_at":) . ($del ? '"t"' : 'null') . '}',
		defined $big ? () : (unchanged => ['big']));
}
($st, $d) = post(seq => 27, body => batch(27, $hist, hist(10, 1, 'TOASTED'), hist(11, 2)));
($st, $d) = post(seq => 28, body => batch(28, hist(12, 3), hist(13, 3, 'x', 1)));
is(sql(q{SELECT string_agg(n || ':' || big || ':' || _calabi_cdc_lsn || ':' || (_calabi_cdc_deleted_at IS NOT NULL), ' ' ORDER BY _calabi_cdc_lsn) FROM public.hist}),
	'1:TOASTED:10:false 2:TOASTED:11:false 3:TOASTED:12:false 3:x:13:true',
	'append (cdc): every version kept, deletes too; unchanged columns take the previous version\'s value, within and across batches');

# the columns of an overwrite stream change while a refresh is open
my $snap2 = stream_msg('sales', 'snap', '{"id":{"type":"string"},"w":{"type":"boolean"}}', mode => 'overwrite');
($st, $d) = post(seq => 29, body => batch(29, control('refresh_start', 'sales', 'snap', generation => 5),
	snap_rec(8, 'h'), $snap2, rec('sales', 'snap', '{"id":"nine","w":true}'),
	control('refresh_end', 'sales', 'snap', generation => 5)));
is($st, 200, 'overwrite: a STREAM with other columns in the middle of a refresh');
is(sql(q{SELECT string_agg(id || ':' || coalesce(v, '-') || ':' || coalesce(w::text, '-'), ' ' ORDER BY id) FROM sales.snap}),
	'8:h:- nine:-:true', 'overwrite: the staging copy followed the change (new column, id widened to text)');

is(sql(qq{SELECT string_agg(namespace || '.' || name || ':' || (definition->>'destination_sync_mode'), ' ' ORDER BY name) FROM _calabi.streams WHERE sync_id = '$SYNC'}),
	'public.hist:append public.items:append_dedup public.orders:append public.people:append_dedup sales.snap:overwrite',
	'the stream definitions are kept per sync in _calabi.streams');

# --- keep-alive -----------------------------------------------------------------

{
	$r->clear_requests;
	my $c = client(keep_alive => 1);
	my ($s1) = post(seq => 30, client => $c);
	my ($s2) = post(seq => 31, client => $c);
	my @reqs = @{ $r->requests };
	is("$s1 $s2", '200 200', 'keep-alive: two batches');
	is($reqs[1]{connection}, $reqs[0]{connection}, 'keep-alive: ... on one connection');
	is($reqs[1]{request_on_connection}, 2, 'keep-alive: ... the second request is the second on it');
}

# --- the request log ----------------------------------------------------------------

{
	$r->clear_requests;
	my $body = batch(32, rec('public', 'orders', '{"id":9,"amount":"1","f":1,"ok":true,"tags":[],"extra":null}'));
	my ($s) = post(seq => 32, body => $body);
	refused(401, qr/wrong/, 'log: a wrong token', seq => 33, token => 'bad-token');
	refused(400, qr/batch_seq/, 'log: a bad batch', seq => 33, body => batch(1));
	my @reqs = @{ $r->requests };
	is(scalar(@reqs), 3, 'log: one entry per request');
	my $e = $reqs[0];
	is($e->{headers}{Authorization}, 'Bearer REDACTED', 'log: Authorization is redacted');
	is_deeply(
		[ @{$e}{qw(method path status batch_seq idempotency_key lines)}, $e->{types},
		  $e->{headers}{'Calabi-Batch-Seq'}, $e->{body_bytes_uncompressed} ],
		[ 'POST', '/ingest', 200, 32, "$SYNC:32", 2, { RECORD => 1, STATE => 1 }, '32', length($body) ],
		'log: method, path, status, seq, key, lines, types, headers, sizes');
	ok($e->{body_bytes} > 0 && $e->{body_bytes} < $e->{body_bytes_uncompressed}, 'log: compressed size too');
	like($e->{time}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'log: time');
	is($reqs[1]{status}, 401, 'log: the 401 is logged');
	like($reqs[2]{error}, qr/batch_seq is 1/, 'log: with the error');
	my $file = slurp_file($r->request_log_file);
	unlike($file, qr/\Q$TOKEN\E|bad-token/, 'log file: no token appears in it');
	my @lines = split /\n/, $file;
	ok(@lines > 50 && (grep { !eval { decode_json($_); 1 } } @lines) == 0, 'log file: one JSON object per line');
}

# --- faults ----------------------------------------------------------------------

{
	my $n = sql('SELECT count(*) FROM public.orders');
	my $b = sub { batch($_[0], rec('public', 'orders', qq({"id":$_[0],"amount":"1","f":1,"ok":true,"tags":[],"extra":null}))) };
	$r->fault({ kind => 'status', status => 503, count => 2 });
	my @s = map { (post(seq => 40, body => $b->(40)))[0] } 1 .. 3;
	is("@s", '503 503 200', 'fault status: two 503, then the batch goes through');
	is(sql('SELECT count(*) FROM public.orders') - $n, 1, 'fault status: the faulted attempts stored nothing');

	$r->fault({ kind => 'status', status => 502, body => 'upstream down' });
	my ($s, $dd, $res) = post(seq => 41, body => $b->(41));
	is("$s $res->{content}", '502 upstream down', 'fault status: with a given body');

	$r->fault({ kind => 'retry_after', status => 429, retry_after => '2' });
	($s, $dd, $res) = post(seq => 41, body => $b->(41));
	is("$s " . ($res->{headers}{'retry-after'} // ''), '429 2', 'fault retry_after: 429 with Retry-After in seconds');
	$r->fault({ kind => 'retry_after', status => 503, retry_after => 'Wed, 21 Oct 2037 07:28:00 GMT' });
	($s, $dd, $res) = post(seq => 41, body => $b->(41));
	is("$s " . ($res->{headers}{'retry-after'} // ''), '503 Wed, 21 Oct 2037 07:28:00 GMT', 'fault retry_after: with an HTTP date');

	$r->fault({ kind => 'refuse', status => 422, error => 'no thanks' });
	refused(422, qr/^no thanks$/, 'fault refuse', seq => 41, body => $b->(41));

	$r->fault([ { kind => 'status', status => 500 }, { kind => 'refuse', error => 'second' } ]);
	is_deeply([ map { $_->{kind} } @{ $r->faults->{queue} } ], [ 'status', 'refuse' ], 'GET /faults shows the queue');
	@s = map { (post(seq => 41, body => $b->(41)))[0] } 1 .. 3;
	is("@s", '500 400 200', 'faults queue in order');

	$r->fault({ kind => 'status', status => 504, count => -1 });
	@s = map { (post(seq => 42, body => $b->(42)))[0] } 1 .. 3;
	is("@s", '504 504 504', 'count -1: until cleared');
	$r->clear_faults;
	is((post(seq => 42, body => $b->(42)))[0], 200, 'DELETE /faults clears it');

	$r->fault({ kind => 'drop' });
	($s, $dd, $res) = post(seq => 43, body => $b->(43));
	is($s, 599, 'fault drop: the connection closes without an answer');
	is((post(seq => 43, body => $b->(43)))[0], 200, 'fault drop: the batch had not been stored; the retry is');
	$r->fault({ kind => 'drop', apply => JSON::PP::true });
	is((post(seq => 44, body => $b->(44)))[0], 599, 'fault drop with apply: no answer ...');
	is((post(seq => 44, body => $b->(44)))[0], 409, '... but the batch was stored: the retry gets 409');

	$r->fault({ kind => 'stall', seconds => 3 });
	my $t0 = time();
	($s) = post(seq => 45, body => $b->(45), give_up_after => 1);
	is($s, 599, 'fault stall: a client with a 1 s timeout gives up');
	sleep(3.5 - (time() - $t0)) if time() - $t0 < 3.5;
	is((post(seq => 45, body => $b->(45)))[0], 409, 'fault stall: the stalled batch was accepted before the sleep');
	$r->fault({ kind => 'stall', seconds => 1 });
	$t0 = time();
	($s) = post(seq => 46, body => $b->(46));
	ok($s == 200 && time() - $t0 >= 1, 'fault stall: a patient client gets its 200 after the stall');

	my $big = batch(47, map { rec('public', 'orders', qq({"id":$_,"amount":"$_ x","f":$_,"ok":true,"tags":[],"extra":"@{[ $_ x 20 ]}"})) } 1000 .. 1200);
	$r->fault({ kind => 'max_bytes', bytes => 400 });
	($s, $dd) = post(seq => 47, body => $big);
	is($s, 413, 'fault max_bytes: a larger body gets 413');
	like(err_of($dd), qr/above the limit of 400 bytes/, 'fault max_bytes: saying so');
	is((post(seq => 47, body => $b->(47)))[0], 200, 'fault max_bytes: a smaller one passes');
	is((post(seq => 48, body => $big =~ s/"batch_seq":47/"batch_seq":48/r))[0], 413, 'fault max_bytes: persistent');
	is($r->faults->{max_bytes}, 400, 'fault max_bytes: shown by GET /faults');
	$r->clear_faults;
	is((post(seq => 48, body => $big =~ s/"batch_seq":47/"batch_seq":48/r))[0], 200, 'fault max_bytes: cleared');
	my ($fault_entry) = grep { ($_->{fault} // {})->{kind} && $_->{fault}{kind} eq 'drop' } @{ $r->requests };
	ok($fault_entry && $fault_entry->{dropped}, 'the request log shows the faults applied');
}

$r->stop;

# --- mutual TLS -------------------------------------------------------------------

{
	my $m = CalabiReceiver->start(node => $node, dbname => 'dest', client_ca => 1, name => 'mtls');
	my %o = (receiver => $m, seq => 1, sync => 'aaaaaaaa-8a0e-4c8f-9b1e-2f6d1c3e4a5b', token => undef);
	my ($s) = post(%o, cert => $m->client_cert, key => $m->client_key);
	is($s, 200, 'mTLS: a client certificate of the trusted CA is accepted');
	($s, my $dd) = post(%o, seq => 2);
	is($s, 599, 'mTLS: no client certificate: the TLS handshake fails');
	($s) = post(%o, seq => 2, cert => $m->other_client_cert, key => $m->other_client_key);
	is($s, 599, 'mTLS: a client certificate of an unknown CA fails');
	($s, $dd) = post(%o, seq => 2, cert => $m->client_cert, key => $m->client_key, ca_file => $m->other_ca_file);
	is($s, 599, 'TLS: a server certificate not signed by the CA the client trusts fails');
	like(err_of($dd), qr/certificate verify failed/i, '... on its verification');
	($s) = post(%o, seq => 2, cert => $m->client_cert, key => $m->client_key,
		url => 'https://127.0.0.1:' . $m->port . '/ingest');
	is($s, 200, 'TLS: the server certificate is valid for 127.0.0.1 too');
	$m->stop;
}

# --- OAuth2 client credentials, plain http, --no-store ----------------------------------

{
	my $o = CalabiReceiver->start(oauth => 'client-1:s3cret', plain_http => 1, no_store => 1, name => 'oauth');
	my $http = HTTP::Tiny->new(timeout => 30);
	my $token = sub {
		my ($id, $secret, %x) = @_;
		return $http->request('POST', $o->token_url, {
			headers => { authorization => 'Basic ' . encode_base64("$id:$secret", ''),
				'content-type' => 'application/x-www-form-urlencoded' },
			content => $x{form} // 'grant_type=client_credentials' });
	};
	my $res = $token->('client-1', 's3cret');
	my $t = eval { decode_json($res->{content}) } // {};
	is($res->{status}, 200, 'oauth: the token endpoint issues a token for the right client credentials');
	is("$t->{token_type} $t->{expires_in}", 'Bearer 3600', 'oauth: a Bearer token, with expires_in');
	is($res->{headers}{'cache-control'}, 'no-store', 'oauth: not cacheable');
	$res = $token->('client-1', 'wrong');
	is($res->{status} . ' ' . (eval { decode_json($res->{content})->{error} } // ''), '401 invalid_client', 'oauth: a wrong secret: 401 invalid_client');
	$res = $token->('client-1', 's3cret', form => 'grant_type=password');
	is($res->{status} . ' ' . (eval { decode_json($res->{content})->{error} } // ''), '400 unsupported_grant_type', 'oauth: another grant type: 400');
	my %p = (receiver => $o, sync => 'bbbbbbbb-8a0e-4c8f-9b1e-2f6d1c3e4a5b');
	is((post(%p, seq => 1, token => $t->{access_token}))[0], 200, 'oauth: ingest accepts an issued token (over plain http)');
	is((post(%p, seq => 2, token => $TOKEN))[0], 401, 'oauth: ... and no other');
	$o->revoke_tokens;
	is((post(%p, seq => 2, token => $t->{access_token}))[0], 401, 'oauth: a revoked token is refused');
	$o->fault({ kind => 'status', status => 503, target => 'token' });
	is($token->('client-1', 's3cret')->{status}, 503, 'oauth: faults can target the token endpoint');
	my $t2 = decode_json($token->('client-1', 's3cret')->{content})->{access_token};
	is((post(%p, seq => 2, token => $t2))[0], 200, 'oauth: a new token works');

	# --no-store validates the headers and the STATE line, and numbers the batches
	is((post(%p, seq => 2, token => $t2))[0], 409, 'no-store: a repeated key is a 409');
	is((post(%p, seq => 5, token => $t2))[0], 200, 'no-store: a later batch');
	refused(400, qr/Calabi-Batch-Seq 4 is not above 5/, 'no-store: a lower seq never accepted', %p, seq => 4, token => $t2);
	refused(400, qr/no STATE message as its last line/, 'no-store: STATE missing', %p, seq => 6, token => $t2,
		body => rec('public', 'orders', '{}') . "\n");
	refused(400, qr/batch_seq is 9/, 'no-store: STATE batch_seq checked', %p, seq => 6, token => $t2, body => batch(9));
	refused(400, qr/line 1: STATE must be the last line/, 'no-store: a second STATE', %p, seq => 6, token => $t2,
		body => state_msg(6) . "\n" . state_msg(6) . "\n");
	($st, $d) = post(%p, seq => 6, token => $t2, body => batch(6, rec('public', 'nosuch', '{"x":1}')));
	is($st, 200, 'no-store: lines other than STATE are not examined (light validation)');
	is_deeply($o->requests->[-1]{types}, { RECORD => 1, STATE => 1 }, 'no-store: message types counted from the line starts');
	$o->stop;

	my $e = CalabiReceiver->start(oauth => 'c:s', oauth_expires_in => 1, no_store => 1, name => 'oauth_expiry');
	# the receiver's CA, explicitly: HTTP::Tiny 0.083 and later (Debian 13)
	# verify certificates by default, against the system's CAs
	$res = HTTP::Tiny->new(verify_SSL => 1, SSL_options => { SSL_ca_file => $e->ca_file })
		->request('POST', $e->token_url, {
		headers => { authorization => 'Basic ' . encode_base64('c:s', ''),
			'content-type' => 'application/x-www-form-urlencoded' },
		content => 'grant_type=client_credentials' });
	my $tok = decode_json($res->{content})->{access_token};
	sleep 1.5;
	is((post(receiver => $e, sync => $p{sync}, seq => 1, token => $tok))[0], 401, 'oauth: an expired token is refused');
	$e->stop;

	my $f = CalabiReceiver->start(no_store => 1, validate => 'full', name => 'full');
	refused(400, qr/line 1: RECORD for stream public\.nosuch, but no STREAM/, 'no-store with --validate full checks every line',
		receiver => $f, sync => $p{sync}, seq => 1, token => undef, body => batch(1, rec('public', 'nosuch', '{"x":1}')));
	$f->stop;
}

$node->stop;
done_testing();
