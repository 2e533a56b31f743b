#!/usr/bin/env bash
# Validate everything under deploy/ offline (no cluster, no Docker): render every overlay with
# `kubectl kustomize`, then check the output and the sources with independent tools, each catching
# what the others miss (shared/docs/K8S-VALIDATION.md):
#
#   render           kubectl kustomize: base, overlays gpu/cpu/hybrid/full, platform/gpu-operator
#   yamllint         sources (deploy/tools/yamllint.yaml) and rendered output (syntax, duplicate keys)
#   k8s-validate     kubernetes-validate --strict, Kubernetes 1.33 (K3s pin) and 1.37; unknown kinds
#                    fail except the CRDs in CRD_ALLOW (their schemas: kubernetes-models below)
#   k8s-models       kubernetes-models + prometheus-operator + traefik models (ajv: enums,
#                    quantities, formats, the CRDs' schemas)
#   promql           every alert, dashboard and adapter expression parses; metric names exist
#   dashboards       the committed dashboard JSON is what generate.py writes
#   checkov          security policy on the rendered manifests and the Dockerfiles (explained skips:
#                    deploy/tools/checkov*.yaml)
#   shell-lint       shellcheck on every script under deploy/ and tests/deploy
#   hadolint         the Dockerfiles
#   rust             cargo test -p voice-deploy-tests (strict k8s-openapi deserialization + rules)
#   script-tests     pytest tests/deploy (the scripts against fake kubectl/nvidia-smi/k3s/helm)
#
# Tools are pinned (deploy/tools/requirements-*.txt, package-lock.json) and installed on first use
# into ${XDG_CACHE_HOME:-~/.cache}/voice-ai/{venv-k8s-validate,venv-k8s-checkov,node-k8s-validate}.
#
# Usage: deploy/validate.sh [--skip step,step] [--keep]    (--keep: leave the rendered YAML)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"

# CRDs kubernetes-validate has no schema for; kubernetes-models and tests/k8s check them.
CRD_ALLOW=(
  "monitoring.coreos.com/v1 ServiceMonitor"
  "monitoring.coreos.com/v1 PrometheusRule"
  "traefik.io/v1alpha1 IngressRoute"
  "traefik.io/v1alpha1 Middleware"
  "traefik.io/v1alpha1 TLSOption"
)
K8S_VERSIONS=(1.33.0 1.37.0)
VENV="$CACHE_ROOT/venv-k8s-validate"
CHECKOV_VENV="$CACHE_ROOT/venv-k8s-checkov"
NODE_DIR="$CACHE_ROOT/node-k8s-validate"

skip="" keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --skip) [ $# -ge 2 ] || { echo "--skip needs a list" >&2; exit 2; }; skip=",$2,"; shift ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# ------------------------------------------------------------------------------ tools
t0=$(date +%s)
ensure_kubectl   # also makes $VENV (scripts/lib.sh)
if [[ "$skip" != *",checkov,"* ]]; then ensure_venv "$CHECKOV_VENV" deploy/tools/requirements-checkov.txt; fi
if [[ "$skip" != *",k8s-models,"* ]]; then
  command -v node >/dev/null || { echo "node (>= 20) not found: apt-get install nodejs npm" >&2; exit 1; }
  want="$(sha256sum deploy/tools/package-lock.json | cut -d' ' -f1)"
  if [ "$(cat "$NODE_DIR/.lock.sha256" 2>/dev/null)" != "$want" ] || [ ! -d "$NODE_DIR/node_modules" ]; then
    log "installing the pinned npm packages into $NODE_DIR"
    rm -rf "$NODE_DIR" && mkdir -p "$NODE_DIR"
    cp deploy/tools/package.json deploy/tools/package-lock.json "$NODE_DIR/"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$NODE_DIR/.lock.sha256"
  fi
fi
log "tools ready ($(( $(date +%s) - t0 )) s); kubectl: $KUBECTL ($("$KUBECTL" version --client 2>/dev/null | head -n1))"

work="$(mktemp -d -t voice-validate.XXXXXX)"
if [ "$keep" = 1 ]; then log "rendered YAML kept in $work"; else trap 'rm -rf "$work"' EXIT; fi

# ------------------------------------------------------------------------------ steps
results=()
failed=0
step() { # name command...
  local name="$1" start rc
  shift
  if [[ "$skip" == *",$name,"* ]]; then
    results+=("$(printf '%-13s %-7s %s' "$name" skipped -)")
    return 0
  fi
  log "$name"
  start=$(date +%s)
  if "$@"; then rc=0; else rc=$?; fi
  local secs=$(( $(date +%s) - start ))
  if [ "$rc" -eq 0 ]; then
    results+=("$(printf '%-13s %-7s %3ss' "$name" ok "$secs")")
  else
    results+=("$(printf '%-13s %-7s %3ss' "$name" FAILED "$secs")")
    failed=$((failed + 1))
  fi
}

RENDERS=(base overlays/gpu overlays/cpu overlays/hybrid overlays/full platform/gpu-operator)
rendered_files() { for r in "${RENDERS[@]}"; do printf '%s\n' "$work/rendered/${r//\//-}.yaml"; done; }

do_render() {
  mkdir -p "$work/rendered"
  local r
  for r in "${RENDERS[@]}"; do
    "$KUBECTL" kustomize "deploy/$r" >"$work/rendered/${r//\//-}.yaml" || { echo "kubectl kustomize deploy/$r failed" >&2; return 1; }
    printf '  %-24s %3d objects\n' "$r" "$(grep -c '^kind:' "$work/rendered/${r//\//-}.yaml")"
  done
}

do_yamllint() {
  "$VENV/bin/yamllint" --strict -c deploy/tools/yamllint.yaml deploy/ \
    && mapfile -t files < <(rendered_files) \
    && "$VENV/bin/yamllint" -c deploy/tools/yamllint-rendered.yaml "${files[@]}"
}

do_k8s_validate() {
  local f v out bad=0 line allowed a
  for v in "${K8S_VERSIONS[@]}"; do
    while read -r f; do
      out="$("$VENV/bin/kubernetes-validate" --strict -k "$v" "$f" 2>&1)" || { echo "$out" | grep -v '^INFO' >&2; bad=1; }
      while IFS= read -r line; do
        allowed=0
        for a in "${CRD_ALLOW[@]}"; do
          [[ "$line" == *"kind ${a#* } with api version ${a%% *} "* ]] && allowed=1
        done
        if [ "$allowed" = 0 ]; then echo "not allowed: $line" >&2; bad=1; fi
      done < <(grep "Couldn't find schema" <<<"$out" || true)
      printf '  k8s %s %-34s %3d passed\n' "$v" "$(basename "$f")" "$(grep -c '^INFO .* passed' <<<"$out" || true)"
    done < <(rendered_files)
  done
  return "$bad"
}

do_k8s_models() {
  mapfile -t files < <(rendered_files)
  node deploy/tools/validate-models.mjs "$NODE_DIR/node_modules" "${files[@]}"
}

do_promql() {
  mapfile -t files < <(rendered_files)
  "$VENV/bin/python" deploy/tools/check_promql.py deploy/platform/helm/prometheus-adapter-values.yaml "${files[@]}"
}

do_dashboards() {
  "$VENV/bin/python" deploy/base/monitoring/dashboards/generate.py --check
}

do_checkov() {
  mkdir -p "$work/checkov"
  cp "$work"/rendered/overlays-*.yaml "$work/rendered/platform-gpu-operator.yaml" "$work/checkov/"
  "$CHECKOV_VENV/bin/checkov" --config-file deploy/tools/checkov.yaml -d "$work/checkov" \
    && "$CHECKOV_VENV/bin/checkov" --config-file deploy/tools/checkov-docker.yaml -d deploy/docker
}

do_shellcheck() {
  mapfile -t scripts < <(find deploy tests/deploy -name '*.sh' -type f | sort)
  "$VENV/bin/shellcheck" -x "${scripts[@]}" && echo "  shellcheck: ${#scripts[@]} scripts clean"
}

do_hadolint() {
  "$VENV/bin/hadolint" deploy/docker/Dockerfile deploy/docker/Dockerfile.frontend && echo "  hadolint: 2 Dockerfiles clean"
}

do_rust() {
  ensure_rust
  cargo test --release -p voice-deploy-tests --locked -q   # the profile scripts/test.sh builds
}

do_script_tests() {
  "$VENV/bin/python" -m pytest -q tests/deploy
}

step render do_render
step yamllint do_yamllint
step k8s-validate do_k8s_validate
step k8s-models do_k8s_models
step promql do_promql
step dashboards do_dashboards
step checkov do_checkov
step shell-lint do_shellcheck
step hadolint do_hadolint
step rust do_rust
step script-tests do_script_tests

printf '\n%-13s %-7s %s\n' step result time
printf '%s\n' "${results[@]}"
total=$(( $(date +%s) - t0 ))
if [ "$failed" -gt 0 ]; then
  printf 'deploy/validate.sh: %s step(s) FAILED (%s s)\n' "$failed" "$total"
  exit 1
fi
printf 'deploy/validate.sh: all steps passed (%s s)\n' "$total"
