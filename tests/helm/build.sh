#!/usr/bin/env bash
# Build (once) the helm binary the chart tests run (tests/deploy/test_helm_chart.py,
# tests/integration/test_deploy_helm.py, tests/e2e/test_helm.py).
#
# The version comes from go.mod next to this script (a Helm 3 release whose Kubernetes
# modules are v0.34, the same minor as tests/apiserver/go.mod), so a bump is a go.mod
# change. The binary lands outside the repository, keyed by version:
#   ${NODEFEATURES_CACHE:-$HOME/.cache/nodefeatures}/helm-<ver>/bin/helm
# --print-dir only says where (the tests ask; they never build).
# All progress goes to stderr; the last (only) stdout line is the bin directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf 'helm/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mod_version() {
    awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod"
}

helm_version="$(mod_version helm.sh/helm/v3)"
k8s_modules="$(mod_version k8s.io/client-go)"
[[ -n "$helm_version" && -n "$k8s_modules" ]] || die "cannot read pinned versions from $here/go.mod"

cache_root="${NODEFEATURES_CACHE:-$HOME/.cache/nodefeatures}"
bin_dir="$cache_root/helm-${helm_version}/bin"

if [[ "${1:-}" == "--print-dir" ]]; then
    printf '%s\n' "$bin_dir"
    exit 0
fi
[[ -z "${1:-}" ]] || die "unknown argument '$1'"

if [[ -x "$bin_dir/helm" ]]; then
    log "using existing $bin_dir/helm"
    printf '%s\n' "$bin_dir"
    exit 0
fi

go_bin="${GO:-$(command -v go || true)}"
[[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
[[ -x "$go_bin" ]] || die "no Go toolchain found (set GO=/path/to/go)"

mkdir -p "$bin_dir"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$bin_dir/../.build.lock"
    flock 9
    if [[ -x "$bin_dir/helm" ]]; then
        printf '%s\n' "$bin_dir"
        exit 0
    fi
fi

export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"

# Helm's own Makefile stamps these: without them `helm version` says v3 "unreleased" and
# the default .Capabilities.KubeVersion (helm template, helm lint) is v1.20.
minor="${k8s_modules#v0.}"
minor="${minor%%.*}"
ldflags="-s -w \
 -X helm.sh/helm/v3/internal/version.version=${helm_version} \
 -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${minor} \
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${minor}"

start=$SECONDS
log "building $bin_dir/helm (helm ${helm_version}) ..."
# A temporary name and a rename: an interrupted build never leaves a truncated binary.
(cd "$here" && "$go_bin" build -trimpath -ldflags "$ldflags" -o "$bin_dir/helm.tmp" \
    helm.sh/helm/v3/cmd/helm)
mv -f "$bin_dir/helm.tmp" "$bin_dir/helm"
log "built $bin_dir/helm in $((SECONDS - start))s"
printf '%s\n' "$bin_dir"
