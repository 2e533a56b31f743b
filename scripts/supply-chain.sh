#!/usr/bin/env bash
# Supply-chain checks of the Rust dependency tree with cargo-deny (pinned): licenses, banned and
# duplicate crates, sources (crates.io only). Offline. With --advisories (needs network to
# GitHub for the RustSec database) it also runs `cargo deny check advisories` and cargo-audit.
# Model files are checked separately: every fetched file's sha256 is in models/manifest.toml and
# a mismatch fails the fetch (crates/models).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

CARGO_DENY_VERSION=0.20.2
CARGO_AUDIT_VERSION=0.22.2
TOOLS=$CACHE_ROOT/tools
export PATH=$TOOLS/bin:$PATH
install_tool() { # crate version
  if ! "$1" --version 2>/dev/null | grep -qw "$2"; then
    log "installing $1 $2 into $TOOLS"
    CARGO_TARGET_DIR=$CACHE_ROOT/tools-build cargo install --locked --quiet --version "$2" --root "$TOOLS" "$1"
  fi
}
install_tool cargo-deny "$CARGO_DENY_VERSION"
log "cargo deny check licenses bans sources"
cargo deny --log-level error check licenses bans sources
if [[ ${1:-} == --advisories ]]; then
  install_tool cargo-audit "$CARGO_AUDIT_VERSION"
  cargo deny check advisories
  cargo audit
fi
log "supply chain: ok"
