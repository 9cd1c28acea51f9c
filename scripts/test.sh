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

.venv/bin/ruff check nodefeatures tests bench
.venv/bin/pytest -q "$@"
