#!/usr/bin/env bash
# Build (once) promtool, which tests/deploy/test_promtool.py runs on the chart's alert
# rules (`promtool check rules`, `promtool test rules`).
#
# The version comes from go.mod next to this script (github.com/prometheus/prometheus
# v0.3XX.Y is Prometheus 3.XX.Y), so a bump is a go.mod change. The build leaves out the
# service-discovery plugins (build tag remove_all_sd), which promtool's rule commands
# do not use. The binary lands outside the repository, keyed by version:
#   ${NODEFEATURES_CACHE:-$HOME/.cache/nodefeatures}/promtool-<ver>/bin/promtool
# --print-dir only says where (the tests ask; they never build).
# All progress goes to stderr; the last (only) stdout line is the bin directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf 'promtool/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

version="$(awk '$1 == "github.com/prometheus/prometheus" && $2 ~ /^v/ { print $2; exit }' \
    "$here/go.mod")"
[[ -n "$version" ]] || die "cannot read the pinned version from $here/go.mod"

cache_root="${NODEFEATURES_CACHE:-$HOME/.cache/nodefeatures}"
bin_dir="$cache_root/promtool-${version}/bin"

if [[ "${1:-}" == "--print-dir" ]]; then
    printf '%s\n' "$bin_dir"
    exit 0
fi
[[ -z "${1:-}" ]] || die "unknown argument '$1'"

if [[ -x "$bin_dir/promtool" ]]; then
    log "using existing $bin_dir/promtool"
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
    if [[ -x "$bin_dir/promtool" ]]; then
        printf '%s\n' "$bin_dir"
        exit 0
    fi
fi

export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"

start=$SECONDS
log "building $bin_dir/promtool (prometheus ${version}) ..."
(cd "$here" && "$go_bin" build -trimpath -tags remove_all_sd -ldflags "-s -w" \
    -o "$bin_dir/promtool.tmp" github.com/prometheus/prometheus/cmd/promtool)
mv -f "$bin_dir/promtool.tmp" "$bin_dir/promtool"
log "built $bin_dir/promtool in $((SECONDS - start))s"
printf '%s\n' "$bin_dir"
