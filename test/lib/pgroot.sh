# test/run --pg VERSION: the pg_regress and TAP suites against a real
# PostgreSQL VERSION server (17 or 18), which Debian 12 does not package.
# The suites run inside a Debian root made with debootstrap from the
# machine's own Debian mirror (trixie for 17, sid for 18), cached under /tmp
# and reused; inside it, test/run itself (CP_PG_MAJOR=VERSION) installs what
# it still misses, builds, installs and runs the tests, exactly as on a
# fresh Debian 12 machine.  Sourced by test/run after common.sh; defines
# functions only.  Needs root (debootstrap, chroot, mount) and the network
# for the first run of a version.
#
#   test/run --pg 17                  pg_regress, then TAP
#   test/run --pg 18 regress [NAME…]  one suite, or some of its files
#   test/run --pg 17 tap [FILE…]
#   test/run --pg 17 root             only make (or complete) the root
#
# CP_TEST_LOCK=FILE: the suites (not the root's making) run under
# flock FILE, the lock the project's test runs share.  CP_PGROOT_DIR: where
# the roots live (default /tmp; the root is DIR/calabi_push-root-VERSION).
# CP_PGROOT_SRC=DIR: the tree copied into the root and tested (default: this
# checkout), e.g. a worktree with a change being tried.
# CP_PGROOT_REBUILD=1 makes the root again.
#
# Mounts (/proc, /dev, a tmpfs /dev/shm, /dev/pts) exist only in a private
# mount namespace (unshare) around each chroot: they vanish with it, whatever
# happens, and are never seen from the machine's own namespace.  An EXIT
# trap unmounts anything still mounted under the root all the same.

# Debian suite that packages postgresql-VERSION and its server-dev.
cp_pgroot_suite() {
	case $1 in
		17) echo trixie ;;
		18) echo sid ;;
		*) return 1 ;;
	esac
}

# The machine's Debian mirror: the URI its apt configuration fetches its own
# release from (Origin Debian, codename of /etc/os-release; not -updates,
# not -security).  No archive host is
# written in this file.
cp_pgroot_mirror() {
	local codename mirror
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	[ -n "$codename" ] || { cp_log "no VERSION_CODENAME in /etc/os-release"; return 1; }
	mirror=$(apt-get indextargets --format '$(TARGET_OF)|$(ORIGIN)|$(RELEASE)|$(CODENAME)|$(REPO_URI)' |
		awk -F'|' -v c="$codename" '$1 == "deb" && $2 == "Debian" && ($3 == c || $4 == c) { print $5 }' |
		sort -u | head -1)
	if [ -z "$mirror" ]; then
		cp_log "the apt configuration names no Debian archive for $codename" \
			"(or its lists were never fetched: run apt-get update)"
		return 1
	fi
	echo "$mirror"
}

# Unmounts whatever is mounted under ROOT in this namespace, deepest first
# (normally nothing: the mounts live in the chroot's private namespace).
cp_pgroot_umount_all() {
	local root m
	root=$(readlink -f "$1")
	[ -n "$root" ] && [ "$root" != / ] || return 0
	awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts |
		sort -r | while read -r m; do
			umount -l "$m" 2>/dev/null || umount -lf "$m" 2>/dev/null ||
				cp_log "could not unmount $m"
		done
}

# cp_pgroot_chroot ROOT COMMAND [ARG…]: COMMAND inside ROOT, as root, with a
# clean environment plus the CP_* words of the array cp_pgroot_env.  /proc,
# /dev, /dev/pts and a tmpfs /dev/shm (PostgreSQL's dynamic shared memory)
# are mounted in a private mount namespace only, so they go when it ends.
cp_pgroot_chroot() {
	local root=$1
	shift
	unshare --mount --propagation private -- /bin/bash -c '
		r=$1; shift
		mount -t proc proc "$r/proc" &&
			mount --bind /dev "$r/dev" &&
			mount --bind /dev/pts "$r/dev/pts" &&
			mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/dev/shm" || exit 1
		trap "umount -l \"\$r/dev/shm\" \"\$r/dev/pts\" \"\$r/dev\" \"\$r/proc\" 2>/dev/null" EXIT
		chroot "$r" "$@"
	' cp-pgroot "$root" /usr/bin/env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root TERM=dumb LANG="${LANG:-C.UTF-8}" ${LC_ALL:+LC_ALL="$LC_ALL"} \
		DEBIAN_FRONTEND=noninteractive "${cp_pgroot_env[@]}" "$@"
}

# Copies the working tree (CP_PGROOT_SRC or this checkout; as test/run's own copy does, without the build
# products and logs of the machine's build) to ROOT/src.
cp_pgroot_copy_tree() {
	local root=$1
	rm -rf "${root:?}/src"
	mkdir -p "$root/src"
	tar -C "${CP_PGROOT_SRC:-$CP_ROOT}" --exclude=./.git --exclude=./test/log --exclude=./tmp_check \
		--exclude=./tmp_regress --exclude=./results --exclude=./test/fuzz/build \
		--exclude='*.o' --exclude='*.so' --exclude='*.bc' --exclude=./src/cflags.stamp \
		-cf - . | tar -C "$root/src" -xf -
}

# The packages of the root of VERSION: what test/run installs (common.sh's
# CP_PACKAGES for CP_PG_MAJOR=VERSION, without the fuzz and sanitizer
# packages: CP_NO_FUZZ_SANITIZE), the libraries the 17 and 18 server
# headers include (ICU, Kerberos, OpenSSL: pg_config --cflags and the
# headers name them), and ca-certificates: libcurl's default CA bundle,
# which the TLS tests verify against (a minbase root has none; Debian 12
# machines do).
cp_pgroot_packages() {
	CP_PG_MAJOR=$1 CP_NO_FUZZ_SANITIZE=1 bash -c \
		'. "$1/test/lib/common.sh"; printf "%s\n" "${CP_PACKAGES[@]}"' _ "$CP_ROOT" | tr '\n' ' '
	echo "libicu-dev libkrb5-dev libssl-dev ca-certificates"
}

# cp_pgroot_build VERSION ROOT: makes the root unless ROOT/.calabi_push-root
# (written last) says it is complete.
cp_pgroot_build() {
	local v=$1 root=$2 suite mirror start
	local stamp=$root/.calabi_push-root
	suite=$(cp_pgroot_suite "$v")
	if [ -f "$stamp" ] && [ "${CP_PGROOT_REBUILD:-}" != 1 ]; then
		cp_log "reusing $root ($(cat "$stamp"))"
		# packages added to the list since the root was made
		local missing
		missing=$(for p in $(cp_pgroot_packages "$v"); do
			chroot "$root" dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
				grep -q 'install ok installed' || echo "$p"
		done | tr '\n' ' ')
		[ -z "${missing// /}" ] && return 0
		cp_log "installing in the root: $missing"
		local cp_pgroot_env=()
		cp_pgroot_chroot "$root" /bin/bash -c \
			'apt-get update -q && apt-get install -y -q --no-install-recommends $0 && apt-get clean' \
			"$missing" >>"$root.apt.log" 2>&1 || {
			tail -30 "$root.apt.log" >&2
			cp_log "apt failed in the root: see $root.apt.log"
			return 1
		}
		return 0
	fi
	command -v debootstrap >/dev/null || {
		cp_log "installing debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap ||
			return 1
	}
	mirror=$(cp_pgroot_mirror) || return 1
	start=$SECONDS
	cp_log "making $root: Debian $suite from $mirror (debootstrap)"
	cp_pgroot_umount_all "$root"
	local real
	real=$(readlink -f "$root")
	if [ -z "$real" ] || [ "$real" = / ]; then
		cp_log "cannot resolve $root"
		return 1
	fi
	if awk -v r="$real" 'index($2, r "/") == 1 { f = 1 } END { exit !f }' /proc/self/mounts; then
		cp_log "something is still mounted under $root: not removing it"
		return 1
	fi
	# (--one-file-system: never into a mount, should one appear regardless)
	rm -rf --one-file-system "${root:?}"
	mkdir -p "$root"
	if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.debootstrap.log" 2>&1; then
		tail -20 "$root.debootstrap.log" >&2
		cp_log "debootstrap failed: see $root.debootstrap.log"
		return 1
	fi
	cp /etc/hosts /etc/resolv.conf "$root/etc/"
	if [ "$suite" = sid ]; then
		# The mirror may be a snapshot of the archive: sid's Release is
		# signed again every few hours with a Valid-Until a week ahead, so
		# a snapshot's is soon past it and apt would refuse the suite.  Only
		# the date check is off: apt still verifies the signature.
		echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99calabi-push-valid-until"
	fi
	# no service starts inside the root, and installing postgresql-VERSION
	# creates no cluster: the tests make their own
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
	chmod 755 "$root/usr/sbin/policy-rc.d"
	mkdir -p "$root/etc/postgresql-common"
	echo 'create_main_cluster = false' >"$root/etc/postgresql-common/createcluster.conf"
	echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/99calabi-push-no-recommends"

	local pkgs
	pkgs=$(cp_pgroot_packages "$v")
	cp_log "installing in the root: $pkgs"
	local cp_pgroot_env=()
	if ! cp_pgroot_chroot "$root" /bin/bash -c \
		'apt-get update -q && apt-get install -y -q --no-install-recommends $0' \
		"$pkgs" >"$root.apt.log" 2>&1; then
		tail -30 "$root.apt.log" >&2
		cp_log "apt failed in the root: see $root.apt.log"
		return 1
	fi
	# the rest of test/run's preparation (locales), by its own function
	cp_pgroot_copy_tree "$root"
	cp_pgroot_env=(CP_PG_MAJOR="$v" CP_NO_FUZZ_SANITIZE=1)
	cp_pgroot_chroot "$root" /bin/bash -c '. /src/test/lib/common.sh && cp_install_dependencies' ||
		return 1
	apt-get clean -o Dir="$root" 2>/dev/null
	rm -rf "$root"/var/cache/apt/archives/*.deb
	echo "Debian $suite, PostgreSQL $v, made $(date -u +%FT%TZ)" >"$stamp"
	cp_log "made $root in $((SECONDS - start)) s"
}

# cp_pgroot_main VERSION [regress [NAME…] | tap [FILE…]]: the closing line
# "calabi_push (PostgreSQL VERSION): N passed, M failed"; non-zero on any
# failure.
cp_pgroot_main() {
	local v=${1:-} what=${2:-both} root line n m passed=0 failed=0 status=0 t
	[ $# -gt 0 ] && shift
	[ $# -gt 0 ] && shift
	if ! cp_pgroot_suite "$v" >/dev/null; then
		cp_log "test/run --pg: version 17 or 18, not '$v'"
		return 2
	fi
	case $what in
		both | regress | tap | root) ;;
		*) cp_log "test/run --pg $v runs regress, tap or root only, not '$what'"; return 2 ;;
	esac
	if [ "$(id -u)" -ne 0 ]; then
		cp_log "test/run --pg needs root (debootstrap, chroot, mount): run it with sudo"
		return 2
	fi
	root=${CP_PGROOT_DIR:-/tmp}/calabi_push-root-$v
	# (the directory must exist: readlink -f of a path under a missing
	# one is empty, and the mount checks would take it for /)
	mkdir -p "${CP_PGROOT_DIR:-/tmp}"
	# (global: the trap runs after this function has returned)
	CP_PGROOT=$root
	trap 'cp_pgroot_umount_all "$CP_PGROOT"' EXIT
	trap 'exit 130' INT TERM

	cp_pgroot_build "$v" "$root" || {
		echo
		echo "calabi_push (PostgreSQL $v): 0 passed, 1 failed (the root could not be made)"
		return 1
	}
	# "root": only make it (test/run makes the roots while the machine's own
	# suites run, cp_pgroot_matrix_start)
	[ "$what" = root ] && return 0
	cp_pgroot_copy_tree "$root"
	rm -rf "$root"/tmp/calabi_push-run.*

	local parts=()
	[ "$what" = both ] && parts=(regress tap) || parts=("$what")
	local logdir=$CP_ROOT/test/log/pg$v lockfd=
	local cp_pgroot_env=(CP_PG_MAJOR="$v" CP_NO_FUZZ_SANITIZE=1)
	rm -rf "$logdir"
	mkdir -p "$logdir"
	local times=()
	for part in "${parts[@]}"; do
		# the shared lock, for this part only (explicitly released: a
		# process left behind inheriting the descriptor cannot keep it)
		if [ -n "${CP_TEST_LOCK:-}" ]; then
			exec {lockfd}>>"$CP_TEST_LOCK"
			cp_log "waiting for $CP_TEST_LOCK"
			flock "$lockfd"
		fi
		cp_log "PostgreSQL $v: test/run $part $* (in $root)"
		t=$SECONDS
		cp_pgroot_chroot "$root" /bin/bash -c 'cd /src && exec test/run "$@"' test/run "$part" "$@" 2>&1 |
			tee "$logdir/$part.out"
		status=${PIPESTATUS[0]}
		if [ -n "$lockfd" ]; then
			flock -u "$lockfd"
			exec {lockfd}>&-
			lockfd=
		fi
		times+=("$part $((SECONDS - t)) s")
		line=$(grep -E '^calabi_push: [0-9]+ passed, [0-9]+ failed$' "$logdir/$part.out" | tail -1)
		if [ -z "$line" ]; then
			cp_log "test/run $part ended without its closing line"
			failed=$((failed + 1))
		else
			n=$(echo "$line" | sed 's/^calabi_push: \([0-9]*\) passed.*/\1/')
			m=$(echo "$line" | sed 's/.* \([0-9]*\) failed$/\1/')
			passed=$((passed + n))
			failed=$((failed + m))
			# an exit status that contradicts the line counts as a failure
			[ "$status" -ne 0 ] && [ "$m" -eq 0 ] && failed=$((failed + 1))
		fi
		# the logs of the run inside the root, beside the machine's own
		cp -r "$root/src/test/log/." "$logdir/" 2>/dev/null
	done
	echo
	cp_log "times: ${times[*]}; logs in test/log/pg$v/"
	echo "calabi_push (PostgreSQL $v): $passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}

# test/run (everything) tests the machine's own PostgreSQL and then the
# versions of CP_PG_VERSIONS, each in its root.  The roots are made in the
# background while the machine's own suites run (downloads and dpkg, a
# minute or a few each); the versions' suites start once the machine's own
# TAP suite is done and run side by side, one chroot each, beside the
# machine's sanitizer pass and fuzz targets: a TAP suite mostly waits
# (servers starting, workers polling, timeouts), so running them together
# on two CPUs takes far less than one after the other, and CI's time limit
# holds.  Their ports cannot collide for long: PostgreSQL::Test::Cluster
# binds a port to check it is free before using it, and the reference
# receiver binds port 0.  As a user with sudo, these run under sudo like
# test/run --pg does.

# cp_pgroot_matrix_start LOGDIR VERSION…: starts making the roots; sets
# cp_pgroot_jobs to the background jobs' PIDs.
cp_pgroot_matrix_start() {
	local logdir=$1 v
	shift
	cp_pgroot_jobs=()
	for v in "$@"; do
		cp_log "making the Debian root of PostgreSQL $v in the background (test/log/pg$v-root.log)"
		cp_as_root "$CP_ROOT/test/run" --pg "$v" root >"$logdir/pg$v-root.log" 2>&1 </dev/null &
		cp_pgroot_jobs+=("$!")
	done
}

# cp_pgroot_matrix_launch LOGDIR VERSION…: waits for the roots, then starts
# each version's suites (test/run --pg VERSION) in the background, their
# lines prefixed with "[pgVERSION] " and kept in LOGDIR/pgVERSION.log.  The
# caller's test lock (CP_TEST_LOCK, its descriptor lockfd) is not theirs:
# they use no PostgreSQL of the machine.
cp_pgroot_matrix_launch() {
	local logdir=$1 v
	shift
	[ ${#cp_pgroot_jobs[@]} -gt 0 ] && wait "${cp_pgroot_jobs[@]}"
	# (a root that could not be made is made again, or reported, by the run)
	# sudo asks here, on the terminal, if it must: not in the background
	cp_as_root true
	cp_pgroot_runs=()
	cp_pgroot_launched=$SECONDS
	for v in "$@"; do
		cp_log "PostgreSQL $v: pg_regress and TAP in its Debian root, in the background (test/log/pg$v.log)"
		# (sed writes whole lines, each in one write: the streams
		# interleave by lines on the terminal)
		(
			[ -n "${lockfd:-}" ] && exec {lockfd}>&-
			cp_as_root env -u CP_TEST_LOCK "$CP_ROOT/test/run" --pg "$v" </dev/null 2>&1 |
				sed -u "s/^/[pg$v] /" | tee "$logdir/pg$v.log"
		) &
		cp_pgroot_runs+=("$!")
	done
}

# cp_pgroot_matrix_collect LOGDIR VERSION…: waits for the versions' suites;
# sets cp_pgroot_matrix_lines to their closing lines and adds their counts
# to the caller's passed and failed.
cp_pgroot_matrix_collect() {
	local logdir=$1 v line n m
	shift
	[ ${#cp_pgroot_runs[@]} -gt 0 ] && wait "${cp_pgroot_runs[@]}"
	echo
	cp_log "PostgreSQL $*: $((SECONDS - cp_pgroot_launched)) s side by side"
	cp_pgroot_matrix_lines=()
	for v in "$@"; do
		line=$(grep -E "^\[pg$v\] calabi_push \(PostgreSQL $v\): [0-9]+ passed, [0-9]+ failed" \
			"$logdir/pg$v.log" | tail -1)
		line=${line#"[pg$v] "}
		if [ -z "$line" ]; then
			line="calabi_push (PostgreSQL $v): 0 passed, 1 failed (no closing line: see test/log/pg$v.log)"
		fi
		n=$(echo "$line" | sed 's/^[^:]*: \([0-9]*\) passed.*/\1/')
		m=$(echo "$line" | sed 's/^[^:]*: [0-9]* passed, \([0-9]*\) failed.*/\1/')
		passed=$((passed + n))
		failed=$((failed + m))
		cp_pgroot_matrix_lines+=("$line")
	done
}
