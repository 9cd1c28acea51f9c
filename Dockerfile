# syntax=docker/dockerfile:1
# The nodefeatures agent image: the package and its dependencies in a virtual
# environment on a slim Python base, run as an unprivileged user.
#
#   docker build -t nodefeatures:0.1.0 .
#
# tests/deploy/test_image_install.py performs the same wheel build and install
# without a container engine, and tests/deploy/test_dockerfile_lint.py runs hadolint.

# Same Python as the tests run; the final stage must use the same image, because the
# venv's interpreter is a symlink into it.
FROM python:3.11-slim-trixie AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY nodefeatures ./nodefeatures
# The wheel alone (no build tools reach the final image), then a venv holding the wheel
# and its dependencies from the package index. pip compiles bytecode on install, so the
# read-only root filesystem never needs a __pycache__ write; pip and setuptools leave
# the venv afterwards, since the agent never installs anything.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/nodefeatures \
    && /opt/nodefeatures/bin/pip install /wheels/nodefeatures-*.whl \
    && /opt/nodefeatures/bin/pip uninstall --yes pip setuptools


FROM python:3.11-slim-trixie

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="nodefeatures" \
      org.opencontainers.image.description="Node feature discovery labeler for Kubernetes: CPU, OS, kernel, PCI and NVIDIA GPU labels from one small agent" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /opt/nodefeatures /opt/nodefeatures

ENV PATH="/opt/nodefeatures/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The DaemonSet runs as this uid too (runAsNonRoot); no home, no shell login, no files.
USER 65532:65532

ENTRYPOINT ["nodefeatures"]
CMD ["run"]
