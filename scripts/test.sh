#!/usr/bin/env bash
# The whole test suite, real kube-apiserver included, from a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

# The integration tests need kube-apiserver and etcd; they are built once from Go
# modules and cached outside the repository.
KUBEBUILDER_ASSETS=$(bash tests/apiserver/build.sh | tail -n 1)
export KUBEBUILDER_ASSETS

# The e2e tests (tests/e2e) run a one-node cluster in a sandbox of namespaces, which
# needs root. They use Debian's runc, CNI plugins, nftables and mmdebstrap, and node
# binaries (kubelet & co., containerd 2.x, kubectl, kustomize) built from Go modules and
# cached like the apiserver's. Without root they skip (and fail under CI=true).
# qemu-user-static runs the arm64 image check (tests/deploy/test_multiarch.py).
if [[ $(id -u) == 0 ]]; then
    e2e_packages=(runc containernetworking-plugins nftables mmdebstrap iproute2 util-linux
                  qemu-user-static)
    missing=()
    for package in "${e2e_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$package")
    done
    if ((${#missing[@]})) && command -v apt-get >/dev/null; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    fi
    bash tests/e2e/build.sh >/dev/null
else
    # The static manifest tests render deploy/ with the real kustomize.
    bash tests/e2e/build.sh kustomize >/dev/null
fi

# The chart tests (tests/deploy/test_helm_chart.py and the apiserver and e2e ones) run
# the real helm, built once from Go modules like the rest (about 3.5 minutes cold).
bash tests/helm/build.sh >/dev/null
# promtool checks and unit-tests the chart's alert rules (tests/deploy/test_promtool.py),
# built the same way, without the service-discovery plugins (about 7 minutes cold).
bash tests/promtool/build.sh >/dev/null

.venv/bin/ruff check nodefeatures tests bench
.venv/bin/pytest -q "$@"
