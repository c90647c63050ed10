# The reference receiver (test/receiver/calabi_receiver.py) for TAP tests.
#
#   my $r = CalabiReceiver->start(node => $node, dbname => 'dest', token => 't');
#   ... point a destination at $r->url, trusting $r->ca_file ...
#   $r->fault({ kind => 'status', status => 503, count => 2 });
#   my @reqs = @{ $r->requests };
#   $r->stop;
#
# start() options:
#   node => PostgreSQL::Test::Cluster, dbname => NAME   destination database
#                                  (created when missing; default "calabi_dest")
#   dsn => 'libpq DSN'             destination database, instead of node
#   no_store => 1                  validate and acknowledge only (--no-store)
#   validate => 'full'|'light'     --validate
#   token => TOKEN                 static bearer token
#   oauth => 'ID:SECRET'           OAuth2 client-credentials token endpoint
#   oauth_expires_in => SECONDS
#   client_ca => 1 | FILE          require client certificates (mutual TLS);
#                                  1 means the test CA
#   plain_http => 1                http:// instead of https://
#   ingest_path => '/ingest'
#   name => 'receiver'             names the log files
#   extra_args => [ ... ]          more command-line arguments
#
# The receiver runs in the background as the current user, in a fresh
# directory under tmp_check; its output and its request log (JSON lines) are
# in tmp_check/log (copied to test/log/tap by test/run).  Certificates come
# from test/receiver/make-certs.sh, made once per test run.
package CalabiReceiver;

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname basename);
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(usleep);

use PostgreSQL::Test::Utils;

my $receiver_dir = abs_path(dirname(abs_path(__FILE__)) . '/../receiver');
our $python = $ENV{CALABI_PYTHON} // '/usr/bin/python3';
my $cert_dir;
my %running;    # pid => object, stopped at exit
my $serial = 0;

# The directory of the test certificates (see make-certs.sh for its files).
sub cert_dir
{
	return $cert_dir if defined $cert_dir;
	my $dir = "$PostgreSQL::Test::Utils::tmp_check/calabi_certs";
	system("$receiver_dir/make-certs.sh", $dir) == 0
	  or die "make-certs.sh $dir failed";
	$cert_dir = $dir;
	return $cert_dir;
}

sub start
{
	my ($class, %opts) = @_;
	my $certs = cert_dir();
	my $name = $opts{name} // 'receiver';
	$serial++;
	my $dir = PostgreSQL::Test::Utils::tempdir("receiver_$name");
	my $test = basename($0, '.pl');
	my $out = "$PostgreSQL::Test::Utils::log_path/${test}_${name}_$serial.log";
	my $reqlog = "$PostgreSQL::Test::Utils::log_path/${test}_${name}_${serial}_requests.jsonl";
	my $ingest_path = $opts{ingest_path} // '/ingest';

	my @cmd = (
		$python, "$receiver_dir/calabi_receiver.py",
		'--listen' => '127.0.0.1:0',
		'--port-file' => "$dir/port",
		'--admin-listen' => '127.0.0.1:0',
		'--admin-port-file' => "$dir/admin_port",
		'--log' => $reqlog,
		'--ingest-path' => $ingest_path);
	if ($opts{plain_http})
	{
		push @cmd, '--plain-http';
	}
	else
	{
		push @cmd, '--tls-cert' => "$certs/server.crt", '--tls-key' => "$certs/server.key";
		if ($opts{client_ca})
		{
			push @cmd, '--client-ca' => ($opts{client_ca} eq '1' ? "$certs/ca.crt" : $opts{client_ca});
		}
	}
	# secrets go through files readable by us only, not the command line
	# (every local user sees it in ps)
	for my $secret ([ token => '--token-file' ], [ oauth => '--oauth-file' ])
	{
		my ($key, $option) = @$secret;
		next unless defined $opts{$key};
		my $file = "$dir/$key";
		my $old_umask = umask(077);
		open(my $fh, '>', $file) or die "$file: $!";
		umask($old_umask);
		print $fh "$opts{$key}\n";
		close($fh) or die "$file: $!";
		push @cmd, $option => $file;
	}
	push @cmd, '--oauth-expires-in' => $opts{oauth_expires_in} if defined $opts{oauth_expires_in};
	push @cmd, '--validate' => $opts{validate} if defined $opts{validate};
	push @cmd, '--log-bodies' if $opts{log_bodies};

	my $dsn;
	if ($opts{no_store})
	{
		push @cmd, '--no-store';
	}
	else
	{
		if (defined $opts{dsn})
		{
			$dsn = $opts{dsn};
		}
		elsif (defined $opts{node})
		{
			my $node = $opts{node};
			my $db = $opts{dbname} // 'calabi_dest';
			(my $lit = $db) =~ s/'/''/g;
			(my $ident = $db) =~ s/"/""/g;
			$node->safe_psql('postgres', qq{CREATE DATABASE "$ident"})
			  unless $node->safe_psql('postgres',
				"SELECT count(*) FROM pg_database WHERE datname = '$lit'") eq '1';
			(my $q = $db) =~ s/(['\\])/\\$1/g;
			$dsn = sprintf("host='%s' port=%d dbname='%s'", $node->host, $node->port, $q);
		}
		else
		{
			die "CalabiReceiver->start: give node (and dbname), dsn, or no_store";
		}
		push @cmd, '--dest-dsn' => $dsn;
	}
	push @cmd, @{ $opts{extra_args} } if $opts{extra_args};

	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', $out) or POSIX::_exit(127);
		open(STDERR, '>&', \*STDOUT);
		exec(@cmd) or POSIX::_exit(127);
	}

	my $self = bless {
		pid => $pid,
		dir => $dir,
		certs => $certs,
		output => $out,
		request_log => $reqlog,
		ingest_path => $ingest_path,
		scheme => $opts{plain_http} ? 'http' : 'https',
		dsn => $dsn,
		http => HTTP::Tiny->new(timeout => 60, keep_alive => 0),
	}, $class;
	$running{$pid} = $self;

	# wait for both port files (written once the servers listen)
	my $deadline = time() + 60;
	while (!(-s "$dir/port" && -s "$dir/admin_port"))
	{
		if (waitpid($pid, WNOHANG) == $pid)
		{
			delete $running{$pid};
			my $log = PostgreSQL::Test::Utils::slurp_file($out);
			die "the receiver exited at start (status $?):\n$log";
		}
		if (time() > $deadline)
		{
			$self->stop;
			die "the receiver did not start listening within 60 s (see $out)";
		}
		usleep(50_000);
	}
	chomp($self->{port} = PostgreSQL::Test::Utils::slurp_file("$dir/port"));
	chomp($self->{admin_port} = PostgreSQL::Test::Utils::slurp_file("$dir/admin_port"));
	return $self;
}

sub port { $_[0]{port} }
sub admin_port { $_[0]{admin_port} }
sub pid { $_[0]{pid} }
sub dsn { $_[0]{dsn} }
sub output_file { $_[0]{output} }
sub request_log_file { $_[0]{request_log} }

# https://localhost:PORT/ingest (http:// with plain_http)
sub url { my $s = shift; "$s->{scheme}://localhost:$s->{port}$s->{ingest_path}" }
sub base_url { my $s = shift; "$s->{scheme}://localhost:$s->{port}" }
sub token_url { my $s = shift; "$s->{scheme}://localhost:$s->{port}/oauth/token" }
sub admin_url { my $s = shift; "http://127.0.0.1:$s->{admin_port}" }

sub ca_file { "$_[0]{certs}/ca.crt" }
sub client_cert { "$_[0]{certs}/client.crt" }
sub client_key { "$_[0]{certs}/client.key" }
sub other_ca_file { "$_[0]{certs}/other-ca.crt" }
sub other_client_cert { "$_[0]{certs}/other-client.crt" }
sub other_client_key { "$_[0]{certs}/other-client.key" }
sub cert_path { "$_[0]{certs}/$_[1]" }

sub _admin
{
	my ($self, $method, $path, $body) = @_;
	my %req;
	if (defined $body)
	{
		$req{content} = JSON::PP->new->canonical->encode($body);
		$req{headers} = { 'content-type' => 'application/json' };
	}
	my $res = $self->{http}->request($method, $self->admin_url . $path, \%req);
	die "receiver admin $method $path: $res->{status} $res->{reason}: $res->{content}"
	  unless $res->{success};
	return JSON::PP->new->decode($res->{content});
}

# Queue a fault (a hash) or several (an array of hashes); returns the queue.
sub fault { my ($s, $f) = @_; $s->_admin('POST', '/faults', $f) }
sub clear_faults { $_[0]->_admin('DELETE', '/faults') }
sub faults { $_[0]->_admin('GET', '/faults') }
# The request log: an array of hashes, oldest first.
sub requests { $_[0]->_admin('GET', '/requests') }
sub clear_requests { $_[0]->_admin('DELETE', '/requests') }
# Invalidate every OAuth token issued so far.
sub revoke_tokens { $_[0]->_admin('DELETE', '/tokens') }
sub health { $_[0]->_admin('GET', '/health') }

sub stop
{
	my $self = shift;
	my $pid = $self->{pid};
	return unless $pid && $running{$pid};
	kill 'TERM', $pid;
	my $deadline = time() + 10;
	while (waitpid($pid, WNOHANG) != $pid)
	{
		if (time() > $deadline)
		{
			kill 'KILL', $pid;
			waitpid($pid, 0);
			last;
		}
		usleep(20_000);
	}
	delete $running{$pid};
	return;
}

END
{
	local $?;
	$_->stop for values %running;
}

1;
