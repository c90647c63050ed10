#!/usr/bin/env bash
# Compiles every source file against the server headers of PostgreSQL 17
# and 18 (the machine's own 15 is what test/run builds and tests), with the
# Makefile's flags and warnings as errors.  Debian 12 packages only 15, so
# the headers come from postgresql-server-dev-17 (Debian 13, trixie) and
# postgresql-server-dev-18 (unstable, sid), downloaded with apt from the
# machine's own Debian mirror and unpacked under /tmp, never installed.
# Debian has no server-dev package for 14 or 16 in those suites: they are
# not checked.  Needs the network; not part of test/run.  This checks that
# compat.h covers every API difference the code meets; it does not run
# anything on those versions.
#
#   test/check_versions.sh
#
# The mirror is the one the machine's apt configuration names for its own
# release (apt-get indextargets); no archive host is written here.  apt runs
# on a private configuration under /tmp (its own sources, lists, cache and
# no hooks), so the machine's apt state is never touched; the Release files
# are verified with the machine's Debian archive keyring.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

# suite of the Debian archive that has postgresql-server-dev-VERSION
VERSIONS=("17 trixie" "18 sid")
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# The 17 and 18 server headers include ICU's (utils/pg_locale.h) and
# OpenSSL's (common/openssl.h, libpq/libpq-be.h) headers: installed from
# the machine's own (Debian 12) archive like the other dependencies.
CP_PACKAGES+=(libicu-dev libssl-dev)
cp_install_dependencies

dir=/tmp/calabi_push-versions
adir=$dir/apt
mkdir -p "$dir"

die() { echo "check_versions: $*" >&2; exit 1; }

# The machine's Debian mirror(s): the URIs its apt configuration fetches its
# own release from (Origin Debian, codename of /etc/os-release; not -updates,
# not -security).
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release"
mirrors=$(apt-get indextargets --format '$(TARGET_OF)|$(ORIGIN)|$(RELEASE)|$(CODENAME)|$(REPO_URI)' |
	awk -F'|' -v c="$codename" '$1 == "deb" && $2 == "Debian" && ($3 == c || $4 == c) { print $5 }' |
	sort -u | tr '\n' ' ')
mirrors=${mirrors% }
[ -n "$mirrors" ] || die "the apt configuration names no Debian archive for $codename" \
	"(or its lists were never fetched: run apt-get update)"
[ -s "$KEYRING" ] || die "$KEYRING is missing (package debian-archive-keyring)"

# The private apt configuration: the same mirror with the suites above.
rm -rf "$adir"
mkdir -p "$adir/etc/sources.list.d" "$adir/etc/preferences.d" \
	"$adir/state/lists/partial" "$adir/cache/archives/partial"
: >"$adir/status"
{
	echo "Types: deb"
	echo "URIs: $mirrors"
	echo "Suites: $(for s in "${VERSIONS[@]}"; do echo "${s#* }"; done | sort -u | tr '\n' ' ')"
	echo "Components: main"
	echo "Signed-By: $KEYRING"
} >"$adir/etc/debian.sources"
# The machine's apt.conf.d still applies (proxies, ...), but not its hooks,
# which would act on the machine's own caches.
cat >"$adir/apt.conf" <<'EOF'
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
EOF
apt_opts=(
	-c "$adir/apt.conf"
	-o Dir::State="$adir/state"
	-o Dir::State::status="$adir/status"
	-o Dir::Cache="$adir/cache"
	-o Dir::Etc::SourceList="$adir/etc/debian.sources"
	-o Dir::Etc::SourceParts="$adir/etc/sources.list.d"
	-o Dir::Etc::Preferences="$adir/etc/preferences"
	-o Dir::Etc::PreferencesParts="$adir/etc/preferences.d"
	-o Acquire::AllowInsecureRepositories=false
	# The mirror may be a snapshot of the archive: sid's Release is signed
	# again every few hours with a Valid-Until a week ahead, so a snapshot's
	# is soon past it (trixie's, a stable release, has none).  Only the date
	# check is off: the signature is still verified with $KEYRING.
	-o Acquire::Check-Valid-Until=false
	-q
)
echo "apt: $mirrors, suites $(sed -n 's/^Suites: //p' "$adir/etc/debian.sources")(private configuration in $adir)"
apt-get "${apt_opts[@]}" update >"$adir/update.log" 2>&1 || cat "$adir/update.log" >&2

# headers_of VERSION SUITE: the unpacked server include directory
headers_of() {
	local v=$1 suite=$2 deb out=$dir/pg$v
	if ! ls "$adir/state/lists/"*"_dists_${suite}_InRelease" >/dev/null 2>&1; then
		if grep -E "$suite.*(NO_PUBKEY|EXPKEYSIG|not signed)|(NO_PUBKEY|EXPKEYSIG|not signed).*$suite" \
			"$adir/update.log" >&2; then
			echo "the $suite Release is not signed by a key in $KEYRING (a newer" \
				"debian-archive-keyring has it); verification stays on, so it is not used" >&2
		else
			echo "could not fetch $suite from $mirrors: see $adir/update.log" >&2
		fi
		return 1
	fi
	rm -rf "$dir/deb$v" "$out"
	mkdir -p "$dir/deb$v"
	# as root, apt downloads as its sandbox user _apt
	[ "$(id -u)" -ne 0 ] || chown _apt "$dir/deb$v"
	(cd "$dir/deb$v" && apt-get "${apt_opts[@]}" download "postgresql-server-dev-$v/$suite") >&2 ||
		return 1
	deb=$(ls "$dir/deb$v/"*.deb) || return 1
	dpkg -x "$deb" "$out" || return 1
	echo "$deb" >"$out.source"
	[ -d "$out/usr/include/postgresql/$v/server" ] || return 1
	echo "$out/usr/include/postgresql/$v/server"
}

# The newer glibc of Debian 13 has strlcpy and strlcat (2.38), which the
# 17 and 18 headers therefore do not declare; Debian 12's glibc lacks them.
cat >"$dir/strl.h" <<'EOF'
#include <stddef.h>
#include <features.h>
#if defined(__GLIBC__) && __GLIBC__ == 2 && __GLIBC_MINOR__ < 38
extern size_t strlcpy(char *, const char *, size_t);
extern size_t strlcat(char *, const char *, size_t);
#endif
EOF

# The compiler, CFLAGS and CPPFLAGS the Makefile itself uses (PGXS of the
# machine's PostgreSQL, CP_WERROR=1 as test/run builds, ISA-L when found),
# one argument a line, with the server include directory replaced.
cat >"$dir/flags.mk" <<'EOF'
cp-print-flags:
	@printf '%s\n' $(CC) $(CFLAGS) $(CFLAGS_SL) $(CPPFLAGS)
EOF
compile_flags() {
	make -s -C "$CP_ROOT" -f Makefile -f "$dir/flags.mk" \
		PG_CONFIG="$(cp_pg_bindir)/pg_config" CP_WERROR=1 \
		includedir_server="$1" cp-print-flags
}

cd "$CP_ROOT"
status=0
results=()
for spec in "${VERSIONS[@]}"; do
	set -- $spec
	v=$1 suite=$2
	echo "==> PostgreSQL $v ($suite)"
	if ! inc=$(headers_of "$v" "$suite"); then
		results+=("PostgreSQL $v: NOT CHECKED (no server headers from $suite)")
		status=1
		continue
	fi
	mapfile -t flags < <(compile_flags "$inc")
	if [ ${#flags[@]} -eq 0 ] || printf '%s\n' "${flags[@]}" | grep -q "/$CP_PG_MAJOR/server"; then
		results+=("PostgreSQL $v: NOT CHECKED (could not get the Makefile's flags)")
		status=1
		continue
	fi
	bad=()
	for f in src/*.c; do
		"${flags[@]}" -include "$dir/strl.h" -c -o /dev/null "$f" || bad+=("$f")
	done
	src=$(basename "$(cat "$dir/pg$v.source")")
	if [ ${#bad[@]} -eq 0 ]; then
		results+=("PostgreSQL $v ($src): every file compiles")
	else
		results+=("PostgreSQL $v ($src): ${#bad[@]} file(s) do not compile: ${bad[*]}")
		status=1
	fi
done
echo
printf '%s\n' "${results[@]}"
exit $status
