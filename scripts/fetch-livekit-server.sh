#!/usr/bin/env bash
# The LiveKit server (the Go SFU) for local runs and tests; prints the binary's path on stdout.
#
# No registry ships it as a binary, so it is built from source through the Go module proxy:
# `go install github.com/livekit/livekit-server/cmd/server@v1.13.5` (that tag's go.mod needs Go
# 1.26 and has no replace directives; HEAD has some, so the tag is pinned). A Go older than 1.26
# fetches the 1.26 toolchain from the same proxy (GOTOOLCHAIN). The build is cached outside the
# clone: minutes the first time, instant after.
set -euo pipefail
VERSION=v1.13.5
GO_TOOLCHAIN=go1.26.8
CACHE=${VOICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/voice-ai}
BIN=$CACHE/livekit/livekit-server-$VERSION
if [[ -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
if ! command -v go >/dev/null; then
  if [[ -x /usr/local/go/bin/go ]]; then
    export PATH=/usr/local/go/bin:$PATH
  else
    log "installing Go (Debian golang-go; the $GO_TOOLCHAIN toolchain comes from the Go proxy)"
    if [[ $(id -u) == 0 ]]; then apt-get update -qq || true; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null
    else sudo apt-get update -qq || true; sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null; fi
  fi
fi
mkdir -p "$CACHE/livekit" "$CACHE/go"
log "building livekit-server $VERSION with go install (first time only: a few minutes)"
GOPATH=$CACHE/go GOBIN=$CACHE/livekit/gobin GOTOOLCHAIN=$GO_TOOLCHAIN GOFLAGS=-mod=mod \
  go install "github.com/livekit/livekit-server/cmd/server@$VERSION" >&2
mv "$CACHE/livekit/gobin/server" "$BIN"
"$BIN" --version >&2 || true
echo "$BIN"
