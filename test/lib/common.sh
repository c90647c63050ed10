# Shared by test/run and the demo: install what calabi_push needs on Debian 12,
# build and install it, and run commands as an unprivileged user (PostgreSQL
# refuses to run as root).  Source it; it defines functions only.

CP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CP_PG_MAJOR=${CP_PG_MAJOR:-15}
CP_TEST_USER=${CP_TEST_USER:-calabi}

# Debian packages: build, test and demo dependencies.
CP_PACKAGES=(
	make gcc pkg-config
	"postgresql-$CP_PG_MAJOR" "postgresql-server-dev-$CP_PG_MAJOR"
	libcurl4-openssl-dev libcjson-dev zlib1g-dev libisal-dev
	libipc-run-perl locales
	# the reference receiver (test/receiver) and the TAP tests that talk to it
	python3 python3-psycopg2 openssl libio-socket-ssl-perl
)
# CP_NO_FUZZ_SANITIZE=1 (the Debian roots of test/run --pg, test/lib/pgroot.sh,
# which run pg_regress and TAP only, and whose releases name these packages
# differently): without the fuzz and sanitizer packages.
if [ "${CP_NO_FUZZ_SANITIZE:-}" != 1 ]; then
	CP_PACKAGES+=(
		# the libFuzzer targets (test/fuzz): clang and its fuzzer/sanitizer runtimes
		clang libclang-rt-14-dev
		# the sanitizer pass (test/run sanitize): gcc 12's ASan and UBSan runtimes
		libasan8 libubsan1
	)
fi
# Locales the money tests switch lc_monetary to.
CP_LOCALES=(de_DE.UTF-8 ja_JP.UTF-8)

cp_log() { printf '==> %s\n' "$*" >&2; }

cp_as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	else
		sudo "$@"
	fi
}

cp_install_dependencies() {
	local missing=() pkg
	for pkg in "${CP_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$pkg")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		cp_log "installing Debian packages: ${missing[*]}"
		cp_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
		cp_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends "${missing[@]}"
	fi

	local loc need=0
	for loc in "${CP_LOCALES[@]}"; do
		locale -a 2>/dev/null | grep -qix "${loc/UTF-8/utf8}" || need=1
	done
	if [ $need -eq 1 ]; then
		cp_log "generating locales: ${CP_LOCALES[*]}"
		for loc in "${CP_LOCALES[@]}"; do
			cp_as_root sed -i "s/^# *\(${loc} UTF-8\)/\1/" /etc/locale.gen
			grep -q "^${loc} UTF-8" /etc/locale.gen ||
				echo "${loc} UTF-8" | cp_as_root tee -a /etc/locale.gen >/dev/null
		done
		cp_as_root locale-gen >/dev/null
	fi
}

cp_pg_bindir() {
	echo "/usr/lib/postgresql/$CP_PG_MAJOR/bin"
}

# CP_WERROR=1 (test/run and test/valgrind set it): the project's own builds
# treat every warning as an error; the demo and the benchmarks build as a
# DBA would, warnings shown but not fatal.
cp_build_and_install() {
	local pgc
	pgc="$(cp_pg_bindir)/pg_config"
	cp_log "building calabi_push against $("$pgc" --version)"
	make -C "$CP_ROOT" -s PG_CONFIG="$pgc" CP_WERROR="${CP_WERROR:-}"
	cp_as_root make -C "$CP_ROOT" -s PG_CONFIG="$pgc" CP_WERROR="${CP_WERROR:-}" install
}

# Where the unprivileged user works: a copy of the tree owned by it when we
# are root (root's checkout stays untouched), the tree itself otherwise.
# Sets CP_WORKTREE; call it once, outside any pipeline, before
# cp_run_unprivileged.
cp_prepare_worktree() {
	if [ "$(id -u)" -ne 0 ]; then
		CP_WORKTREE=$CP_ROOT
		return
	fi
	id "$CP_TEST_USER" >/dev/null 2>&1 ||
		useradd --create-home --shell /bin/bash "$CP_TEST_USER"
	CP_WORKTREE=$(mktemp -d /tmp/calabi_push-run.XXXXXX)
	cp -a "$CP_ROOT/." "$CP_WORKTREE/"
	chown -R "$CP_TEST_USER:" "$CP_WORKTREE"
}

# Run "$@" in CP_WORKTREE, as the unprivileged user when we are root.
cp_run_unprivileged() {
	if [ "$(id -u)" -ne 0 ]; then
		(cd "$CP_WORKTREE" && "$@")
	else
		runuser -u "$CP_TEST_USER" -- env -C "$CP_WORKTREE" \
			PATH="$(cp_pg_bindir):$PATH" "$@"
	fi
}

# A throwaway cluster for the demo and the benchmarks: cp_cluster_start DIR
# PORT [CONF_LINE…] initialises DIR (owned by the unprivileged user when we
# are root), configures it as the README says and starts it; cp_psql runs
# psql against it as the superuser "postgres"; cp_cluster_stop stops it.
cp_run_as_server_user() {
	if [ "$(id -u)" -eq 0 ]; then
		id "$CP_TEST_USER" >/dev/null 2>&1 ||
			useradd --create-home --shell /bin/bash "$CP_TEST_USER"
		runuser -u "$CP_TEST_USER" -- "$@"
	else
		"$@"
	fi
}

cp_cluster_start() {
	local dir=$1 port=$2 line
	shift 2
	CP_CLUSTER_DIR=$dir
	CP_CLUSTER_PORT=$port
	rm -rf "$dir"
	mkdir -p "$dir"
	[ "$(id -u)" -eq 0 ] && chown "$CP_TEST_USER:" "$dir"
	cp_run_as_server_user "$(cp_pg_bindir)/initdb" -D "$dir/data" -U postgres \
		-A trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
	{
		echo "port = $port"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$dir'"
		echo "shared_preload_libraries = 'calabi_push'"
		echo "wal_level = logical"
		# the demo's receiver listens on loopback
		echo "calabi_push.allowed_hosts = '127.0.0.0/8, ::1/128'"
		for line in "$@"; do echo "$line"; done
	} | cp_run_as_server_user tee -a "$dir/data/postgresql.conf" >/dev/null
	cp_run_as_server_user "$(cp_pg_bindir)/pg_ctl" -D "$dir/data" \
		-l "$dir/server.log" -w start >/dev/null
}

cp_psql() {
	cp_run_as_server_user "$(cp_pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 \
		-h "$CP_CLUSTER_DIR" -p "$CP_CLUSTER_PORT" -U postgres "$@"
}

# Lets the running cluster decode with the given output plugins besides the
# default ones, on servers that have the output_plugin_libraries allow-list
# (an unknown setting would stop an older server from starting: look first).
cp_allow_output_plugins() {
	local has
	has=$(cp_psql -At -c "SELECT count(*) FROM pg_settings WHERE name = 'output_plugin_libraries'")
	[ "$has" = 1 ] || return 0
	echo "output_plugin_libraries = 'pgoutput, test_decoding, $*'" |
		cp_run_as_server_user tee -a "$CP_CLUSTER_DIR/data/postgresql.conf" >/dev/null
	cp_psql -q -c "SELECT pg_reload_conf()" >/dev/null
	for _ in $(seq 50); do
		[ "$(cp_psql -At -c "SHOW output_plugin_libraries")" != "pgoutput, test_decoding" ] && return 0
		sleep 0.1
	done
}

cp_cluster_stop() {
	cp_run_as_server_user "$(cp_pg_bindir)/pg_ctl" -D "$CP_CLUSTER_DIR/data" \
		-m fast -w stop >/dev/null
}

# A program of a benchmark, in the background as the server's user:
# cp_bench_background PIDFILE LOG COMMAND [ARG…].  Its own pid is written to
# PIDFILE (runuser, when we are root, would not pass a signal on), so that
# cp_bench_stop PIDFILE ends exactly that process.
cp_bench_background() {
	local pidfile=$1 log=$2
	shift 2
	cp_run_as_server_user sh -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >"$log" 2>&1 &
	for _ in $(seq 50); do [ -s "$pidfile" ] && return 0; sleep 0.1; done
	echo "$1 did not start: see $log" >&2
	return 1
}

cp_bench_stop() {
	local pid
	[ -s "$1" ] || return 0
	pid=$(cat "$1")
	kill "$pid" 2>/dev/null || true
	# gone before it returns: a restart may want the same port
	for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	rm -f "$1"
}

# The reference receiver for the benchmarks: cp_bench_receiver DIR PORT
# [ARG…] starts test/receiver/calabi_receiver.py acknowledging without
# storing (--no-store, plus ARG…: the token, --validate, ...) on
# 127.0.0.1:PORT (0: any free port), with certificates in
# DIR/receiver/certs; it writes the port it listens on to
# DIR/receiver/port.  Stopped first if it runs; cp_bench_receiver_stop DIR
# stops it.
cp_bench_receiver() {
	local dir=$1 port=$2
	shift 2
	cp_bench_receiver_stop "$dir"
	cp_run_as_server_user mkdir -p "$dir/receiver"
	cp_run_as_server_user "$CP_ROOT/test/receiver/make-certs.sh" "$dir/receiver/certs"
	rm -f "$dir/receiver/port"
	cp_bench_background "$dir/receiver/pid" "$dir/receiver/output.log" \
		/usr/bin/python3 "$CP_ROOT/test/receiver/calabi_receiver.py" \
		--listen 127.0.0.1:"$port" --port-file "$dir/receiver/port" \
		--admin-listen 127.0.0.1:0 --admin-port-file "$dir/receiver/admin_port" \
		--tls-cert "$dir/receiver/certs/server.crt" --tls-key "$dir/receiver/certs/server.key" \
		--no-store "$@"
	for _ in $(seq 100); do [ -s "$dir/receiver/port" ] && return 0; sleep 0.1; done
	echo "the receiver did not start: see $dir/receiver/output.log" >&2
	return 1
}

cp_bench_receiver_stop() {
	cp_bench_stop "$1/receiver/pid"
}

# The gzip libraries this build has, the default first ("isa-l zlib" or
# "zlib"); cp_bench_gzip_library LIB makes syncs started from now on
# compress with LIB (calabi_push.gzip_library, reloaded and waited for).
cp_bench_gzip_libraries() {
	case "$(cp_psql -At -c 'SELECT calabi_push.version()')" in
		*"gzip by isa-l"*) echo "isa-l zlib" ;;
		*) echo "zlib" ;;
	esac
}
cp_bench_gzip_library() {
	cp_psql -q -c "ALTER SYSTEM SET calabi_push.gzip_library = '$1'" -c 'SELECT pg_reload_conf()' >/dev/null
	for _ in $(seq 100); do
		[ "$(cp_psql -At -c 'SHOW calabi_push.gzip_library')" = "$1" ] && return 0
		sleep 0.05
	done
	echo "calabi_push.gzip_library did not become $1" >&2
	return 1
}

# The sanitizer pass (test/run sanitize, docs/testing.md): calabi_push built
# with AddressSanitizer and UndefinedBehaviorSanitizer into a copy of the
# tree, installed in place of the normal build, and tested with gcc's ASan
# runtime preloaded into every process of the test (PostgreSQL itself is not
# instrumented, so the runtime cannot come from its link line).
CP_SANITIZE_TAP=(test/t/020_full_refresh.pl test/t/021_endpoint_faults.pl
	test/t/030_output_plugin.pl test/t/040_cdc.pl)

cp_sanitize_build_and_install() {
	local pgc
	pgc="$(cp_pg_bindir)/pg_config"
	CP_SANITIZE_TREE=$(mktemp -d /tmp/calabi_push-sanitize.XXXXXX)
	cp -a "$CP_ROOT/." "$CP_SANITIZE_TREE/"
	cp_log "building calabi_push with ASan and UBSan in $CP_SANITIZE_TREE"
	# with_llvm=no: the JIT bitcode is not instrumented anyway; the normal
	# build's stays installed.
	make -C "$CP_SANITIZE_TREE" -s PG_CONFIG="$pgc" clean
	make -C "$CP_SANITIZE_TREE" -s PG_CONFIG="$pgc" SANITIZE=1 with_llvm=no \
		CP_WERROR=1
	cp_as_root make -C "$CP_SANITIZE_TREE" -s PG_CONFIG="$pgc" SANITIZE=1 \
		with_llvm=no CP_WERROR=1 install
}

# LD_PRELOAD for the sanitizer pass.  libasan must initialise before any
# library constructor takes a glibc lock: preloaded first (the usual way),
# it initialises last, lazily inside p11-kit's constructor (newlocale()),
# and the locale locks of every PostgreSQL program are left wedged (postgres
# -V, and so initdb, hangs in bindtextdomain).  So the shared libraries of
# the PostgreSQL programs come first and libasan last, which makes it
# initialise first; it still precedes libc in symbol lookup, so its malloc
# and interceptors are the ones used (verify_asan_link_order=0 silences its
# check that it is first).
cp_sanitize_preload() {
	local asan b
	asan=$(readlink -f "$(gcc -print-file-name=libasan.so)")
	for b in postgres psql initdb pg_ctl; do
		ldd "$(cp_pg_bindir)/$b"
	done | awk '/=> \//{print $3}' |
		grep -vE '/(libc|libm|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so' |
		sort -u | tr '\n' ' '
	echo "$asan"
}

# The environment of the sanitizer pass, as NAME=VALUE words for env(1);
# $1 is the directory the runtimes write their reports to.
cp_sanitize_env() {
	local dir=$1
	echo "LD_PRELOAD=$(cp_sanitize_preload)"
	# detect_leaks=0: PostgreSQL frees nothing at exit on purpose (memory
	# contexts die with the process), and LeakSanitizer would report that
	# from every process, not leaks of ours.
	# detect_stack_use_after_return=0: a fake stack confuses PostgreSQL's
	# stack depth check (max_stack_depth).
	echo "ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0:log_path=$dir/asan"
	echo "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$dir/ubsan"
}
