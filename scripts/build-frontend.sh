#!/usr/bin/env bash
# Build the web frontend (frontend/dist) with the pinned npm packages, only when its sources or
# lock file changed since the last build.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT/frontend"
stamp=dist/.build-stamp
want=$(find package-lock.json index.html vite.config.ts tsconfig.json src -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" && -f dist/index.html ]]; then
  exit 0
fi
log "building the frontend (npm ci && npm run build)"
npm ci --no-audit --no-fund --loglevel=error >&2
npm run build >&2
echo "$want" > "$stamp"
