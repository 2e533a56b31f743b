#!/usr/bin/env bash
# The LiveKit server (the Go SFU) for local runs and tests; prints the binary's path on stdout.
#
# No registry ships it as a binary, so it is built from source through the Go module proxy:
# `go install github.com/livekit/livekit-server/cmd/server@v1.13.5` (that tag's go.mod needs Go
# 1.26 and has no replace directives; HEAD has some, so the tag is pinned). A Go older than 1.26
# fetches the 1.26 toolchain from the same proxy (GOTOOLCHAIN), or lib.sh's ensure_go installs it
# where the Go here predates GOTOOLCHAIN. The build is cached outside the clone: minutes the first
# time, instant after.
set -euo pipefail
VERSION=v1.13.5
CACHE=${VOICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/voice-ai}
BIN=$CACHE/livekit/livekit-server-$VERSION
if [[ -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_go
mkdir -p "$CACHE/livekit" "$CACHE/go"
log "building livekit-server $VERSION with go install (first time only: a few minutes)"
GOPATH=$CACHE/go GOBIN=$CACHE/livekit/gobin GOTOOLCHAIN=go$GO_TOOLCHAIN_VERSION GOFLAGS=-mod=mod \
  go install "github.com/livekit/livekit-server/cmd/server@$VERSION" >&2
mv "$CACHE/livekit/gobin/server" "$BIN"
"$BIN" --version >&2 || true
echo "$BIN"
