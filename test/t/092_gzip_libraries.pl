# gzip by each library the build has: a batch of several megabytes
# compressed with ISA-L (levels 1 and 3) and with zlib (levels 1 and 9,
# chosen with calabi_push.gzip_library) is decoded by the receiver's
# standard decompressor into exactly the lines an uncompressed destination
# received; each body is one gzip member; the two libraries really differ on
# the wire; a destination's compression_level beyond the library's highest
# is lowered, logged, and still delivers.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv, $token) = sync_setup(name => 'gzip', receiver => { log_bodies => 1, no_store => 1 });
my $url = $recv->url;
my $ca = $recv->ca_file;

my $has_isal = $node->safe_psql('postgres', 'SELECT calabi_push.version()') =~ /gzip by isa-l /;
note('build: ' . $node->safe_psql('postgres', 'SELECT calabi_push.version()'));

# about 7.5 MB of NDJSON: text that compresses, but not to nothing
$node->safe_psql('postgres', <<'SQL');
CREATE TABLE big (id int PRIMARY KEY, t text, n numeric, at timestamptz);
INSERT INTO big
SELECT g, repeat(md5(g::text), 4) || ' row ' || g, g * 1.5, '2026-01-01'::timestamptz + g * interval '1 minute'
  FROM generate_series(1, 25000) g;
SQL

sub destination
{
	my ($name, $options) = @_;
	$node->safe_psql('postgres',
		"SELECT calabi_push.create_destination('$name', '$url', token => '$token',"
		  . " options => jsonb_build_object('ca_file', '$ca') || '$options'::jsonb)");
}

# one batch for the whole table; returns its RECORD lines (emitted_at, the
# time of reading, taken out) and the one 200 request's log entry
sub run_sync
{
	my ($sync, $dest) = @_;
	$node->safe_psql('postgres', qq{
		SELECT calabi_push.create_sync('$sync', '$dest', ARRAY['big']::regclass[],
		  options => '{"batch_rows": 100000, "batch_bytes": 67108864, "chunk_rows": 100000}');
		SELECT calabi_push.start_sync('$sync');});
	ok(wait_for_state($node, $sync, 'idle', 'error'), "$sync: the run completes");
	is(sync_status($node, $sync, "state || coalesce(last_error, '')"), 'idle', "$sync: no error");
	my @reqs = grep { ($_->{status} // 0) == 200 } @{ ingest_requests($recv, $sync) };
	my ($big) = sort { $b->{body_bytes_uncompressed} <=> $a->{body_bytes_uncompressed} } @reqs;
	my @records = grep { /"type":"RECORD"/ } split /\n/, $big->{body};
	s/,"emitted_at":\d+// for @records;
	# the bodies are big: keep the receiver's log (fetched whole) short
	$recv->clear_requests;
	return ($big, \@records);
}

destination('plain', '{"compression": "none"}');
my ($plain, $plain_records) = run_sync('s_plain', 'plain');
is(scalar(@$plain_records), 25000, 'the uncompressed batch holds every row');
ok($plain->{body_bytes} > 6 * 1024 * 1024, "a batch of several megabytes ($plain->{body_bytes} bytes)");
ok(!defined $plain->{headers}{'Content-Encoding'}, 'sent without Content-Encoding');

my %wire;
sub check_same
{
	my ($sync, $dest, $what) = @_;
	my ($req, $records) = run_sync($sync, $dest);
	is($req->{headers}{'Content-Encoding'}, 'gzip', "$what: Content-Encoding gzip");
	is($req->{gzip_members}, 1, "$what: one gzip member");
	ok($req->{body_bytes} < $plain->{body_bytes} / 3,
		"$what: $req->{body_bytes} bytes on the wire for $plain->{body_bytes}");
	ok(join("\n", @$records) eq join("\n", @$plain_records),
		"$what: decoded byte for byte into the uncompressed batch's records");
	$wire{$what} = $req->{body_bytes};
	return $req;
}

sub set_library
{
	my ($lib) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET calabi_push.gzip_library = '$lib'; SELECT pg_reload_conf();");
	ok(wait_until(sub {
		$node->safe_psql('postgres', 'SHOW calabi_push.gzip_library') eq $lib }, 30),
		"calabi_push.gzip_library is $lib");
	like($node->safe_psql('postgres', 'SELECT calabi_push.version()'), qr/gzip by \Q$lib\E /,
		"version() names $lib");
}

destination('gz', '{}');
if ($has_isal)
{
	like(slurp_file($node->logfile), qr/launcher started; gzip bodies are compressed with isa-l /,
		'the server log names ISA-L at start');
	check_same('s_isal1', 'gz', 'isa-l level 1');
	destination('gz3', '{"compression_level": 3}');
	check_same('s_isal3', 'gz3', 'isa-l level 3');
	my $err = sql_error($node, 'postgres', q{SELECT calabi_push.create_destination('gz9', 'https://x.example.com/',
		options => '{"compression_level": 9}')});
	is($err->{sqlstate} . ': ' . $err->{message},
		'22023: destination option "compression_level" must be an integer from 1 to 3',
		'ISA-L refuses zlib-only level 9');
	set_library('zlib');
}
else
{
	like(slurp_file($node->logfile), qr/launcher started; gzip bodies are compressed with zlib /,
		'the server log names zlib at start');
}

check_same('s_zlib1', 'gz', 'zlib level 1');
destination('gz9', '{"compression_level": 9}');
check_same('s_zlib9', 'gz9', 'zlib level 9');
ok($wire{'zlib level 9'} < $wire{'zlib level 1'}, 'zlib level 9 compresses better than level 1');

if ($has_isal)
{
	ok($wire{'isa-l level 1'} != $wire{'zlib level 1'},
		"the libraries differ on the wire (isa-l $wire{'isa-l level 1'}, zlib $wire{'zlib level 1'} bytes)");
	# back to ISA-L: a level stored under zlib is lowered to ISA-L's highest
	my $log_offset = -s $node->logfile;
	set_library('isa-l');
	my $req = check_same('s_clamp', 'gz9', 'level 9 under isa-l');
	like(slurp_file($node->logfile, $log_offset),
		qr/sync "s_clamp" asks for compression_level 9; isa-l [0-9.]+ compresses at level 3 at most, which is used/,
		'the lowered level is logged');
	# (the STATE line differs a little from s_isal3's)
	ok(abs($req->{body_bytes} - $wire{'isa-l level 3'}) < 100,
		"and it compressed as level 3 does ($req->{body_bytes} bytes)");
}
note(join(', ', map { "$_: $wire{$_}" } sort keys %wire) . " (uncompressed: $plain->{body_bytes})");

$recv->stop;
$node->stop;
done_testing();
