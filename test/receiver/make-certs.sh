#!/usr/bin/env bash
# make-certs.sh DIR: test certificates for the reference receiver, made with
# the openssl CLI (EC P-256 keys, so it takes well under a second).
#
#   ca.crt ca.key                  the test CA
#   server.crt server.key          signed by it; subjectAltName localhost,
#                                  127.0.0.1, ::1
#   client.crt client.key          signed by it, for mutual TLS
#   other-ca.crt other-ca.key      a second CA that has nothing to do with
#                                  the first ("unknown CA must fail" tests)
#   other-client.crt other-client.key   a client certificate signed by the
#                                  other CA (refused by a receiver that
#                                  trusts ca.crt only)
#
# Idempotent and quiet: when DIR already holds a complete set, nothing is
# done.  The set is built in a scratch directory and renamed into place, so
# that concurrent callers never see half of it.  DIR is dedicated to this:
# it must be absent, empty, or a set made earlier by this script.
set -euo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
dir=$1
files=(ca.crt ca.key server.crt server.key client.crt client.key
	other-ca.crt other-ca.key other-client.crt other-client.key)

complete() {
	local f
	for f in "${files[@]}"; do
		[ -s "$1/$f" ] || return 1
	done
}

complete "$dir" && exit 0

parent=$(dirname "$dir")
mkdir -p "$parent"
work=$(mktemp -d "$parent/.certs.XXXXXX")
trap 'rm -rf "$work"' EXIT
umask 077

days=3650
key() { openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/$1.key"; }

# ca NAME SUBJECT
ca() {
	key "$1"
	openssl req -x509 -new -key "$work/$1.key" -subj "$2" -days "$days" -sha256 \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-out "$work/$1.crt" 2>/dev/null
}

# leaf NAME CA SUBJECT EXTENSIONS…
leaf() {
	local name=$1 issuer=$2 subject=$3
	shift 3
	key "$name"
	printf '%s\n' "$@" >"$work/$name.ext"
	openssl req -new -key "$work/$name.key" -subj "$subject" -out "$work/$name.csr" 2>/dev/null
	openssl x509 -req -in "$work/$name.csr" -CA "$work/$issuer.crt" -CAkey "$work/$issuer.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days "$days" -sha256 \
		-extfile "$work/$name.ext" -out "$work/$name.crt" 2>/dev/null
	rm -f "$work/$name.csr" "$work/$name.ext"
}

ca ca "/CN=calabi_push test CA"
ca other-ca "/CN=calabi_push unrelated test CA"
leaf server ca "/CN=localhost" \
	"basicConstraints=critical,CA:FALSE" \
	"keyUsage=critical,digitalSignature" \
	"extendedKeyUsage=serverAuth" \
	"subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
leaf client ca "/CN=calabi_push test client" \
	"basicConstraints=critical,CA:FALSE" \
	"keyUsage=critical,digitalSignature" \
	"extendedKeyUsage=clientAuth"
leaf other-client other-ca "/CN=calabi_push unknown client" \
	"basicConstraints=critical,CA:FALSE" \
	"keyUsage=critical,digitalSignature" \
	"extendedKeyUsage=clientAuth"
chmod 644 "$work"/*.crt
chmod 755 "$work"

# Rename the set into place: rename(2) replaces an absent or empty DIR
# atomically.  If another caller won the race, its set is as good as ours.
if ! mv -T "$work" "$dir" 2>/dev/null; then
	complete "$dir" || {
		echo "make-certs.sh: $dir exists and is not a certificate set made by this script" >&2
		exit 1
	}
fi
trap - EXIT
rm -rf "$work"
