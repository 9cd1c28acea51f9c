#!/usr/bin/env bash
# Build (once) the node-side binaries the e2e cluster runs: kubelet,
# kube-controller-manager, kube-scheduler, kube-proxy, kubectl, kustomize,
# containerd 2.x (with ctr and the runc shim) and the sandbox "pause" program.
#
# Versions come from the go.mod files under bins/, so a bump is a go.mod change.
# Kubernetes is pinned to the same version as tests/apiserver/go.mod (a test
# checks it).  containerd 2.x is built rather than taken from Debian because
# Debian's 1.6 silently ignores recursiveReadOnly, which deploy/ relies on.
#
# Binaries land outside the repository, keyed by version:
#   ${NODEFEATURES_CACHE:-$HOME/.cache/nodefeatures}/e2e-<k8s>-containerd-<ver>-kustomize-<ver>/bin/
# All progress goes to stderr; the last (only) stdout line is the bin directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf 'e2e/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mod_version() {
    awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/bins/$1/go.mod"
}

k8s_version="$(mod_version kube k8s.io/kubernetes)"
containerd_version="$(mod_version containerd github.com/containerd/containerd/v2)"
kustomize_version="$(mod_version kustomize sigs.k8s.io/kustomize/kustomize/v5)"
[[ -n "$k8s_version" && -n "$containerd_version" && -n "$kustomize_version" ]] \
    || die "cannot read pinned versions from $here/bins/*/go.mod"

cache_root="${NODEFEATURES_CACHE:-$HOME/.cache/nodefeatures}"
bin_dir="$cache_root/e2e-${k8s_version}-containerd-${containerd_version}-kustomize-${kustomize_version}/bin"

# --print-dir: only say where the binaries go (the test harness asks; it never builds).
if [[ "${1:-}" == "--print-dir" ]]; then
    printf '%s\n' "$bin_dir"
    exit 0
fi

# "kustomize": build only that (the static manifest tests need it, no root needed).
only="${1:-}"
[[ -z "$only" || "$only" == kustomize ]] || die "unknown argument '$only'"
names=(kubelet kube-controller-manager kube-scheduler kube-proxy kubectl kustomize
       containerd ctr containerd-shim-runc-v2 pause)
[[ "$only" == kustomize ]] && names=(kustomize)
missing=0
for n in "${names[@]}"; do [[ -x "$bin_dir/$n" ]] || missing=1; done
if [[ $missing == 0 ]]; then
    log "using existing binaries in $bin_dir"
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
fi

export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"

minor="${k8s_version#v1.}"
minor="${minor%%.*}"
kube_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=${k8s_version} \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=${minor} \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=${k8s_version} \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=${minor} \
 -X k8s.io/client-go/pkg/version.gitTreeState=clean"

# Build to a temporary name and rename, so an interrupted build never leaves a
# truncated binary that the next run would take as done.
build() {
    local mod="$1" out="$bin_dir/$2"; shift 2
    if [[ -x "$out" ]]; then
        log "$out already built"
        return
    fi
    local start=$SECONDS
    log "building $out ($*) ..."
    (cd "$here/bins/$mod" && "$go_bin" build -trimpath -o "$out.tmp" "$@")
    mv -f "$out.tmp" "$out"
    log "built $out in $((SECONDS - start))s"
}

build kustomize kustomize -ldflags "-s -w" sigs.k8s.io/kustomize/kustomize/v5
if [[ "$only" == kustomize ]]; then
    printf '%s\n' "$bin_dir"
    exit 0
fi
build pause pause -ldflags "-s -w" .
ctrd_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=${containerd_version}"
ctrd_tags="no_btrfs,no_devmapper,no_zfs,no_aufs"
for c in containerd ctr containerd-shim-runc-v2; do
    build containerd "$c" -tags "$ctrd_tags" -ldflags "$ctrd_ldflags" \
        "github.com/containerd/containerd/v2/cmd/$c"
done
for c in kubelet kube-controller-manager kube-scheduler kube-proxy kubectl; do
    build kube "$c" -tags selinux,notest -ldflags "$kube_ldflags" "k8s.io/kubernetes/cmd/$c"
done

printf '%s\n' "$bin_dir"
