# TLS failures toward the endpoint: a certificate for another host name, an
# expired certificate, a self-signed certificate with no ca_file.  Each
# fails the handshake: the sync stops in 'error' (no retry can change a
# certificate; docs/operations.md) and says why in last_error (the cause
# named, as libcurl reports it, and the ca_file / ca_pem way out), and
# nothing is sent: no HTTP request reaches the endpoint, no batch is
# counted.  Once the endpoint presents a valid certificate, the same sync
# delivers after start_sync.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;
use CalabiReceiver;

my $node = calabi_node('tlsfail');
$node->safe_psql('postgres', q{
	CREATE EXTENSION calabi_push;
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 20) g;
});

# Certificates signed by the test CA (or by themselves), made here.
my $certs = CalabiReceiver::cert_dir();
my $dir = PostgreSQL::Test::Utils::tempdir('tls_certs');
sub run { system(@_) == 0 or die "@_ failed" }
sub leaf_request
{
	my ($name, $san) = @_;
	run('openssl', 'genpkey', '-quiet', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256',
		'-out', "$dir/$name.key");
	run('openssl', 'req', '-new', '-key', "$dir/$name.key", '-subj', '/CN=calabi_push test server',
		'-out', "$dir/$name.csr");
	append_to_file("$dir/$name.ext", "basicConstraints=critical,CA:FALSE\n"
		  . "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=$san\n");
}
# valid for another host only
leaf_request('wrong_host', 'DNS:ingest.example.com');
run('openssl', 'x509', '-req', '-in', "$dir/wrong_host.csr", '-CA', "$certs/ca.crt", '-CAkey', "$certs/ca.key",
	'-set_serial', '101', '-days', '365', '-sha256', '-extfile', "$dir/wrong_host.ext", '-out', "$dir/wrong_host.crt");
# valid for localhost, but only for a day of 2020 (openssl ca sets the dates)
leaf_request('expired', 'DNS:localhost,IP:127.0.0.1');
append_to_file("$dir/index.txt", '');
append_to_file("$dir/ca.cnf", <<"CNF");
[ca]
default_ca = d
[d]
database = $dir/index.txt
new_certs_dir = $dir
serial = $dir/serial
default_md = sha256
policy = p
[p]
commonName = supplied
CNF
append_to_file("$dir/serial", "66\n");
run('openssl', 'ca', '-batch', '-notext', '-config', "$dir/ca.cnf", '-cert', "$certs/ca.crt",
	'-keyfile', "$certs/ca.key", '-in', "$dir/expired.csr", '-extfile', "$dir/expired.ext",
	'-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-out', "$dir/expired.crt");
# self-signed, for localhost
leaf_request('self_signed', 'DNS:localhost,IP:127.0.0.1');
run('openssl', 'x509', '-req', '-in', "$dir/self_signed.csr", '-signkey', "$dir/self_signed.key",
	'-days', '365', '-sha256', '-extfile', "$dir/self_signed.ext", '-out', "$dir/self_signed.crt");
chmod 0644, glob("$dir/*.crt");
chmod 0755, $dir;

my @cases = (
	# (libcurl 7.88, Debian 12's, writes "host name"; 8.x "hostname")
	[ 'wrong_host', 1, qr/no alternative certificate subject name matches target host ?name 'localhost'/ ],
	[ 'expired', 1, qr/certificate has expired/ ],
	[ 'self_signed', 0, qr/self.signed certificate/ ],
);
for my $case (@cases)
{
	my ($name, $with_ca, $cause) = @$case;
	my $token = "tok-$name-secret";
	my $recv = CalabiReceiver->start(node => $node, no_store => 1, token => $token, name => $name,
		extra_args => [ '--tls-cert' => "$dir/$name.crt", '--tls-key' => "$dir/$name.key" ]);
	my $options = $with_ca ? "jsonb_build_object('ca_file', '" . $recv->ca_file . "')" : "'{}'";
	$node->safe_psql('postgres', qq{
		SELECT calabi_push.create_destination('$name', '@{[ $recv->url ]}', token => '$token', options => $options);
		SELECT calabi_push.create_sync('$name', '$name', ARRAY['t']::regclass[],
		  options => '{"max_backoff": "1s"}');
		SELECT calabi_push.start_sync('$name');
	});
	ok($node->poll_query_until('postgres', qq{
		SELECT state = 'error' FROM calabi_push.sync_status WHERE name = '$name'}),
		"$name: the handshake fails, the sync stops in error");
	my $error = sync_status($node, $name, 'last_error');
	like($error, $cause, "$name: last_error names the cause");
	like($error, qr/"ca_file" or "ca_pem"/, "$name: ... and the way out");
	unlike($error, qr/\Q$token\E/, "$name: ... and not the token");
	is(sync_status($node, $name, 'batches_sent || \' \' || records_sent'), '0 0', "$name: nothing delivered");
	is(scalar(grep { ($_->{path} // '') eq '/ingest' } @{ $recv->requests }), 0,
		"$name: no HTTP request reached the endpoint");
	like(slurp_file($node->logfile), qr/ERROR:  the sync stopped, no retry can help: [^\n]*$cause[^\n]*\n(?:(?:[^\n]*(?:DETAIL|HINT):  |\t)[^\n]*\n)*[^\n]*CONTEXT:  (?:[^\n]*\n\t)*calabi_push sync "$name"\n/,
		"$name: the server log says the same");
	my $logged = () = slurp_file($node->logfile) =~ /\Q$error\E/g;
	is($logged, 1, "$name: ... once");
	$recv->stop;
}

# the same sync, once the endpoint presents a valid certificate
my $recv = CalabiReceiver->start(node => $node, no_store => 1, token => 'tok-self_signed-secret', name => 'fixed');
$node->safe_psql('postgres', qq{
	SELECT calabi_push.alter_destination('self_signed', url => '@{[ $recv->url ]}',
	  options => jsonb_build_object('ca_file', '@{[ $recv->ca_file ]}'));
	SELECT calabi_push.start_sync('self_signed');
});
ok($node->poll_query_until('postgres', q{
	SELECT records_sent = 20 FROM calabi_push.sync_status WHERE name = 'self_signed'}),
	'a valid certificate: the same sync delivers');
$recv->stop;
$node->stop;
done_testing();
