#!/bin/sh
# Builds the antivirus starter database (a clamd database folder) without any download:
#   vcr-starter.hsb  SHA-256 hash signatures of every file of clamav-testfiles (sigtool --sha256)
#   vcr-starter.hdb  MD5 hash signatures of the same files (sigtool --md5; older scanners, cross-check)
#   vcr-starter.ndb  the box's own body signatures (config/av/vcr-starter.ndb, copied)
#   and Eicar-Test-Signature: the EICAR test file's SHA-256 and MD5, and its string as a body
#   signature (ClamAV 1.4 has no built-in EICAR detection: without a database it finds nothing).
# Usage: build-starter-db.sh OUTDIR [TESTFILES_DIR]   (default /usr/share/clamav-testfiles)
set -eu
out=${1:?usage: build-starter-db.sh OUTDIR [TESTFILES_DIR]}
src=${2:-/usr/share/clamav-testfiles}
here=$(cd "$(dirname "$0")" && pwd)
command -v sigtool >/dev/null || { echo "sigtool missing: apt-get install clamav" >&2; exit 1; }
[ -d "$src" ] || { echo "$src missing: apt-get install clamav-testfiles" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Signature names: VCR.Test.<file name> (sigtool names each signature after the file).
( cd "$src" && for f in *; do [ -f "$f" ] && sigtool --sha256 "$f"; done ) \
  | awk -F: 'NF>=3 {print $1":"$2":VCR.Test."$3}' >"$tmp/vcr-starter.hsb"
( cd "$src" && for f in *; do [ -f "$f" ] && sigtool --md5 "$f"; done ) \
  | awk -F: 'NF>=3 {print $1":"$2":VCR.Test."$3}' >"$tmp/vcr-starter.hdb"
eicar='X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
printf '%s' "$eicar" >"$tmp/eicar.com"
sigtool --sha256 "$tmp/eicar.com" | awk -F: '{print $1":"$2":Eicar-Test-Signature"}' >>"$tmp/vcr-starter.hsb"
sigtool --md5 "$tmp/eicar.com" | awk -F: '{print $1":"$2":Eicar-Test-Signature"}' >>"$tmp/vcr-starter.hdb"
cp "$here/vcr-starter.ndb" "$tmp/vcr-starter.ndb"
printf 'Eicar-Test-Signature:0:0:%s\n' "$(od -An -tx1 -v "$tmp/eicar.com" | tr -d ' \n')" >>"$tmp/vcr-starter.ndb"
[ -s "$tmp/vcr-starter.hsb" ] || { echo "no signatures made from $src" >&2; exit 1; }
for f in vcr-starter.hsb vcr-starter.hdb vcr-starter.ndb; do install -m 0644 "$tmp/$f" "$out/$f"; done
echo "$out: $(wc -l <"$out/vcr-starter.hsb") sha256 + $(wc -l <"$out/vcr-starter.hdb") md5 + $(grep -c . "$out/vcr-starter.ndb") body signatures"
