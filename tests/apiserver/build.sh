#!/usr/bin/env bash
# Build (once) the kube-apiserver and etcd binaries the integration tests run.
#
# Versions come from go.mod next to this script, so bumping Kubernetes is a go.mod
# change only.  The binaries land in a cache outside the repository, keyed by version:
#   ${NODEFEATURES_CACHE:-$HOME/.cache/nodefeatures}/kube-<k8s>-etcd-<etcd>/bin/
# Nothing is built when binaries are already there, or when KUBEBUILDER_ASSETS or
# NODEFEATURES_KUBE_APISERVER / NODEFEATURES_ETCD point at existing ones.
#
# All progress goes to stderr; the last (only) stdout line is the bin directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Read a required module's version from go.mod; awk avoids needing Go when
# the cache is already warm.
mod_version() {
    awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod"
}

k8s_version="$(mod_version k8s.io/kubernetes)"
etcd_version="$(mod_version go.etcd.io/etcd/server/v3)"
[[ -n "$k8s_version" && -n "$etcd_version" ]] || die "cannot read pinned versions from $here/go.mod"

cache_root="${NODEFEATURES_CACHE:-$HOME/.cache/nodefeatures}"
bin_dir="$cache_root/kube-${k8s_version}-etcd-${etcd_version}/bin"

# Same lookup order as tests/kubeharness.py: explicit file, then envtest-style
# asset directory, then our own cache.
resolve() {
    local name="$1" override="$2"
    if [[ -n "$override" ]]; then
        [[ -x "$override" ]] || die "$name override '$override' is not an executable file"
        printf '%s\n' "$override"
    elif [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
        [[ -x "$KUBEBUILDER_ASSETS/$name" ]] || die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $name"
        printf '%s\n' "$KUBEBUILDER_ASSETS/$name"
    else
        printf '%s\n' "$bin_dir/$name"
    fi
}

apiserver="$(resolve kube-apiserver "${NODEFEATURES_KUBE_APISERVER:-}")"
etcd="$(resolve etcd "${NODEFEATURES_ETCD:-}")"

if [[ -x "$apiserver" && -x "$etcd" ]]; then
    log "using existing $apiserver and $etcd"
    dirname "$apiserver"
    exit 0
fi

if [[ "$apiserver" != "$bin_dir/kube-apiserver" || "$etcd" != "$bin_dir/etcd" ]]; then
    # An override covers only one binary: build the other into the cache anyway.
    log "one binary is overridden, building the rest into $bin_dir"
fi

go_bin="${GO:-$(command -v go || true)}"
[[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
[[ -x "$go_bin" ]] || die "no Go toolchain found (set GO=/path/to/go); it is needed to build kube-apiserver $k8s_version"

mkdir -p "$bin_dir"

# Serialise concurrent builds (two pytest sessions, or CI jobs sharing a cache).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$bin_dir/../.build.lock"
    flock 9
fi

# Never fetch another toolchain, never honour a go.work above us, keep go.sum
# authoritative, and produce static binaries as the upstream release does.
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"

minor="${k8s_version#v1.}"
minor="${minor%%.*}"
apiserver_ldflags="-s -w \
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
    local out="$1"; shift
    if [[ -x "$out" ]]; then
        log "$out already built"
        return
    fi
    local start=$SECONDS
    log "building $out ($*) ..."
    (cd "$here" && "$go_bin" build -trimpath -o "$out.tmp" "$@")
    mv -f "$out.tmp" "$out"
    log "built $out in $((SECONDS - start))s"
}

if [[ "$etcd" == "$bin_dir/etcd" ]]; then
    build "$bin_dir/etcd" -ldflags "-s -w" go.etcd.io/etcd/server/v3
fi
if [[ "$apiserver" == "$bin_dir/kube-apiserver" ]]; then
    build "$bin_dir/kube-apiserver" -tags selinux,notest -ldflags "$apiserver_ldflags" \
        k8s.io/kubernetes/cmd/kube-apiserver
fi

printf '%s\n' "$bin_dir"
