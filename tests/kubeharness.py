"""A throw-away kube-apiserver + etcd control plane for integration tests.

The binaries are built by ``tests/apiserver/build.sh`` (see :func:`find_binaries` for the
lookup order).  :class:`ControlPlane` starts etcd and kube-apiserver on free loopback ports
with a static admin token, its own CA, an audit log for ``nodes`` and a fresh service-account
signing key, and hands out ``kubernetes`` API clients for the admin or for impersonated users.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from kubernetes import client
from urllib3 import HTTPHeaderDict

GO_MOD = Path(__file__).resolve().parent / "apiserver" / "go.mod"
BUILD_SCRIPT = GO_MOD.parent / "build.sh"

ADMIN_USER = "nodefeatures-test-admin"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
# Reserved documentation address (RFC 5737).  kube-apiserver insists on a non-loopback
# advertise address, but with --endpoint-reconciler-type=none nothing ever connects to it,
# and a fixed value keeps startup independent of the host's interfaces and routes.
ADVERTISE_ADDRESS = "198.51.100.10"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    # One event per request (ResponseComplete), so tests can count requests directly.
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "resources": [{"group": "", "resources": ["nodes", "nodes/status"]}]},
        # What the agent reads and writes of NFD's API, and its label namespaces setting.
        {"level": "Metadata", "resources": [{"group": "nfd.k8s-sigs.io",
                                             "resources": ["nodefeatures", "nodefeaturerules"]}]},
        {"level": "Metadata", "resources": [{"group": "", "resources": ["configmaps"]}],
         "namespaces": ["nodefeatures"]},
        {"level": "None"},
    ],
}

_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class BinariesUnavailable(Exception):
    """kube-apiserver or etcd (or openssl, needed for keys) cannot be found."""


class StartupError(RuntimeError):
    """A control-plane process did not become ready; the message carries its log."""


@dataclass(frozen=True)
class Binaries:
    """Paths of the two server executables."""

    kube_apiserver: Path
    etcd: Path


def pinned_versions(go_mod: Path = GO_MOD) -> tuple[str, str]:
    """Return the (kubernetes, etcd) versions the wrapper module pins, e.g. ('v1.34.12', ...)."""
    text = go_mod.read_text()

    def version(module: str) -> str:
        match = re.search(rf"^\s*{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
        if match is None:
            raise BinariesUnavailable(f"{go_mod} does not require {module}")
        return match.group(1)

    return version("k8s.io/kubernetes"), version("go.etcd.io/etcd/server/v3")


def cache_bin_dir() -> Path:
    """Where build.sh puts the binaries for the pinned versions."""
    k8s, etcd = pinned_versions()
    root = os.environ.get("NODEFEATURES_CACHE") or str(Path.home() / ".cache" / "nodefeatures")
    return Path(root) / f"kube-{k8s}-etcd-{etcd}" / "bin"


def find_binaries(env: Mapping[str, str] = os.environ) -> Binaries:
    """Locate the binaries: per-binary env var, then KUBEBUILDER_ASSETS, then the build cache.

    Raises :class:`BinariesUnavailable` with a message that says how to get them.
    """
    assets = env.get("KUBEBUILDER_ASSETS")
    found: dict[str, Path] = {}
    for name, var in (
        ("kube-apiserver", "NODEFEATURES_KUBE_APISERVER"),
        ("etcd", "NODEFEATURES_ETCD"),
    ):
        if env.get(var):
            path, origin = Path(env[var]), var
        elif assets:
            path, origin = Path(assets) / name, "KUBEBUILDER_ASSETS"
        else:
            path, origin = cache_bin_dir() / name, ""
        if not (path.is_file() and os.access(path, os.X_OK)):
            hint = f"set by {origin}" if origin else f"not built yet: run {BUILD_SCRIPT}"
            raise BinariesUnavailable(f"no executable {name} at {path} ({hint})")
        found[name] = path
    return Binaries(kube_apiserver=found["kube-apiserver"], etcd=found["etcd"])


def free_port() -> int:
    """Ask the kernel for a currently unused loopback TCP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # If pytest itself is SIGKILLed, no teardown runs; have the kernel stop the servers
    # instead of leaving orphans that hold ports and /dev/shm space.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(content[-lines:])


class _Process:
    """One server process whose output goes to a log file that survives restarts."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        """Launch the process, appending its output to the log file."""
        self._log = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                # A separate session keeps Ctrl-C on pytest from killing the servers before
                # the fixture's teardown (which prints logs) gets to run.
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except OSError:
            self._log.close()
            self._log = None
            raise

    def running(self) -> bool:
        """Whether the process has been started and has not exited."""
        return self.popen is not None and self.popen.poll() is None

    def stop(self, graceful: bool = True) -> None:
        """SIGTERM, wait, then SIGKILL (or SIGKILL at once); a no-op if not running."""
        if self.popen is not None:
            if self.popen.poll() is None:
                if graceful:
                    self.popen.terminate()
                    try:
                        self.popen.wait(STOP_TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        self.popen.kill()
                else:
                    self.popen.kill()
            self.popen.wait()
            self.popen = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 60) -> str:
        """The end of the log with a header naming the process."""
        return f"----- {self.name} log ({self.log_path}) -----\n{_tail(self.log_path, lines)}"


class _ImpersonatingPool:
    """Wraps a urllib3 pool manager to add impersonation headers to every request.

    ``ApiClient.default_headers`` is a plain dict, so it cannot carry the repeated
    ``Impersonate-Group`` / ``Impersonate-Extra-*`` lines that several groups or values
    need; an ``HTTPHeaderDict`` (urllib3 2.x) sends each value as its own header line.
    """

    def __init__(self, inner: Any, headers: Sequence[tuple[str, str]]) -> None:
        self._inner = inner
        self._headers = list(headers)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        """Forward to the wrapped pool with the impersonation headers added."""
        merged = HTTPHeaderDict(kwargs.pop("headers", None) or {})
        for key, value in self._headers:
            merged.add(key, value)
        return self._inner.request(method, url, *args, headers=merged, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def impersonation_headers(
    user: str, groups: Iterable[str] = (), extra: Mapping[str, str | Sequence[str]] | None = None
) -> list[tuple[str, str]]:
    """Build the header lines that make the server treat a request as ``user``."""
    headers = [("Impersonate-User", user)]
    headers += [("Impersonate-Group", group) for group in groups]
    for key, values in (extra or {}).items():
        # Extra keys such as 'authentication.kubernetes.io/node-name' contain characters
        # that are illegal in header names; the server percent-decodes them.
        header = "Impersonate-Extra-" + urllib.parse.quote(key, safe="")
        for value in [values] if isinstance(values, str) else values:
            headers.append((header, value))
    return headers


class ControlPlane:
    """etcd + kube-apiserver on loopback, with helpers for clients, audit log and restarts.

    Attributes tests use: ``url``, ``admin_token``, ``ca_path``, ``kubeconfig_path``,
    ``audit_log_path``, ``workdir`` and ``last_start_seconds`` (time to /readyz).
    """

    def __init__(self, binaries: Binaries, workdir: Path) -> None:
        self.binaries = binaries
        self.workdir = workdir
        self.admin_token = secrets.token_hex(24)
        self.port = 0
        self.etcd_url = ""
        self.ca_path = workdir / "pki" / "ca.crt"
        self.kubeconfig_path = workdir / "kubeconfig"
        self.audit_log_path = workdir / "audit.log"
        self.last_start_seconds = 0.0
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None

    @property
    def url(self) -> str:
        """Base URL of the API server."""
        return f"https://127.0.0.1:{self.port}"

    # ----- lifecycle -------------------------------------------------------------------

    def setup(self) -> None:
        """Write keys and config, start etcd and kube-apiserver, wait until both are ready."""
        self._write_files()
        self._start_etcd()
        self.port = free_port()
        self.start()
        self._write_kubeconfig()

    def start(self) -> None:
        """Start kube-apiserver (same port, same etcd) and wait for /readyz."""
        if self._apiserver is not None and self._apiserver.running():
            raise RuntimeError("kube-apiserver is already running")
        self._apiserver = _Process(
            "kube-apiserver", self._apiserver_argv(), self.workdir / "kube-apiserver.log"
        )
        started = time.monotonic()
        self._apiserver.start()
        self._wait_ready(started)
        self.last_start_seconds = time.monotonic() - started

    def stop(self, graceful: bool = True) -> None:
        """Stop only kube-apiserver: SIGTERM (or SIGKILL if not graceful); etcd keeps its data."""
        if self._apiserver is not None:
            self._apiserver.stop(graceful=graceful)

    def restart(self, graceful: bool = True) -> None:
        """Stop and start kube-apiserver again on the same port."""
        self.stop(graceful=graceful)
        self.start()

    def close(self) -> None:
        """Stop both processes; the work directory is removed by the caller."""
        for proc in (self._apiserver, self._etcd):
            if proc is not None:
                proc.stop()

    def logs(self, lines: int = 60) -> str:
        """The last lines of both server logs, for failure messages."""
        return "\n".join(
            proc.log_tail(lines) for proc in (self._etcd, self._apiserver) if proc is not None
        )

    # ----- clients ---------------------------------------------------------------------

    def configuration(self, token: str | None = None) -> client.Configuration:
        """A client Configuration for this server with a bearer token (admin by default)."""
        cfg = client.Configuration(host=self.url)
        cfg.ssl_ca_cert = str(self.ca_path)
        # The whole header value under the legacy key: client 36 looks the prefix up only
        # under its new 'BearerToken' key, so a separate api_key_prefix would be dropped
        # and the server would see an anonymous request.
        cfg.api_key = {"authorization": f"Bearer {token or self.admin_token}"}
        return cfg

    def admin_client(self) -> client.ApiClient:
        """A fresh ApiClient authenticated as a system:masters user."""
        return client.ApiClient(self.configuration())

    def client_for_token(self, token: str) -> client.ApiClient:
        """A fresh ApiClient that authenticates with ``token`` (e.g. from TokenRequest)."""
        return client.ApiClient(self.configuration(token))

    def client_as(
        self,
        user: str,
        groups: Iterable[str] = (),
        extra: Mapping[str, str | Sequence[str]] | None = None,
    ) -> client.ApiClient:
        """A fresh ApiClient whose requests the admin makes on behalf of ``user``.

        For ``system:serviceaccount:<ns>:<name>`` without ``groups`` the server adds the
        service-account groups itself.  Impersonation does not check that the user exists.
        """
        api = self.admin_client()
        api.rest_client.pool_manager = _ImpersonatingPool(
            api.rest_client.pool_manager, impersonation_headers(user, groups, extra)
        )
        return api

    def service_account_token(
        self, namespace: str, name: str, node: str | None = None, expiration_seconds: int = 3600
    ) -> str:
        """Issue a real token for an existing ServiceAccount through the TokenRequest API.

        With ``node``, the token is bound to that existing Node, so the server stamps the
        ``authentication.kubernetes.io/node-name`` extra into the authenticated user.
        """
        bound = None
        if node is not None:
            with self.admin_client() as api:
                uid = client.CoreV1Api(api).read_node(node).metadata.uid
            bound = client.V1BoundObjectReference(api_version="v1", kind="Node", name=node, uid=uid)
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[], expiration_seconds=expiration_seconds, bound_object_ref=bound
            )
        )
        with self.admin_client() as api:
            response = client.CoreV1Api(api).create_namespaced_service_account_token(
                name, namespace, request
            )
        return str(response.status.token)

    def audit_events(
        self, verbs: Iterable[str] | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        """Audit events written so far (nodes, NFD's objects and the agent namespace's
        ConfigMaps are audited), optionally filtered.

        ``verbs`` such as ``{"create", "update", "patch", "delete"}`` select write requests;
        ``name`` selects events about one object.  Events are written just after the
        response is sent, so poll briefly before asserting on counts.
        """
        if not self.audit_log_path.exists():
            return []
        wanted = set(verbs) if verbs is not None else None
        events = []
        for line in self.audit_log_path.read_text().splitlines():
            # The server may be mid-write of the last line.
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if wanted is not None and event.get("verb") not in wanted:
                continue
            if name is not None and event.get("objectRef", {}).get("name") != name:
                continue
            events.append(event)
        return events

    # ----- internals -------------------------------------------------------------------

    def _write_files(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(mode=0o700)
        cnf = pki / "openssl.cnf"
        cnf.write_text(_OPENSSL_CNF)

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=pki)

        ec = ("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
        openssl(*ec, "-out", "ca.key")
        openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=nodefeatures-test-ca",
            "-days",
            "7",
            "-config",
            "openssl.cnf",
            "-extensions",
            "ca",
            "-out",
            "ca.crt",
        )
        openssl(*ec, "-out", "server.key")
        openssl(
            "req",
            "-new",
            "-key",
            "server.key",
            "-subj",
            "/CN=kube-apiserver",
            "-config",
            "openssl.cnf",
            "-out",
            "server.csr",
        )
        openssl(
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            f"0x{secrets.token_hex(16)}",
            "-days",
            "7",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            "server",
            "-out",
            "server.crt",
        )
        # A fresh signing key per run: tokens from an earlier run must not verify.
        openssl(
            "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key"
        )
        openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")

        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.admin_token},{ADMIN_USER},{ADMIN_USER}-uid,"system:masters"\n')
        tokens.chmod(0o600)
        (self.workdir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))

    def _etcd_argv(self, client_port: int, peer_port: int) -> list[str]:
        client_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        argv = [
            str(self.binaries.etcd),
            "--name=nodefeatures-test",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=nodefeatures-test={peer_url}",
            "--logger=zap",
            "--log-level=warn",
        ]
        help_text = subprocess.run(
            [str(self.binaries.etcd), "--help"], capture_output=True, text=True, check=False
        )
        # Test data is disposable; etcd 3.4 (e.g. Debian's, via an env override) lacks it.
        if "--unsafe-no-fsync" in help_text.stdout + help_text.stderr:
            argv.append("--unsafe-no-fsync=true")
        return argv

    def _start_etcd(self) -> None:
        # A port picked by free_port() can be taken before etcd binds it: retry.
        for attempt in range(3):
            client_port, peer_port = free_port(), free_port()
            self._etcd = _Process(
                "etcd", self._etcd_argv(client_port, peer_port), self.workdir / "etcd.log"
            )
            self._etcd.start()
            self.etcd_url = f"http://127.0.0.1:{client_port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self._etcd.running():
                if _etcd_healthy(self.etcd_url):
                    return
                time.sleep(0.1)
            self._etcd.stop()
            if attempt < 2 and "address already in use" in _tail(self._etcd.log_path):
                continue
            break
        raise StartupError(f"etcd did not become healthy\n{self.logs()}")

    def _apiserver_argv(self) -> list[str]:
        pki = self.workdir / "pki"
        return [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--advertise-address={ADVERTISE_ADDRESS}",
            # No kubelets or controllers exist, so nothing needs the 'kubernetes' endpoints.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki / 'server.crt'}",
            f"--tls-private-key-file={pki / 'server.key'}",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            # Node before RBAC as in real clusters, so tests can also act as kubelets.
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction,ValidatingAdmissionPolicy",
            # Without kube-controller-manager no 'default' ServiceAccount is ever created.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log_path}",
            "--audit-log-format=json",
            "--profiling=false",
        ]

    def _wait_ready(self, started: float) -> None:
        assert self._apiserver is not None
        context = ssl.create_default_context(cafile=str(self.ca_path))
        last = "no response yet"
        for path in ("/readyz", "/api/v1/namespaces/default"):
            while True:
                if not self._apiserver.running():
                    raise StartupError(f"kube-apiserver exited during startup\n{self.logs()}")
                if time.monotonic() - started > START_TIMEOUT_S:
                    raise StartupError(
                        f"kube-apiserver not ready after {START_TIMEOUT_S:.0f}s "
                        f"(GET {path}: {last})\n{self.logs()}"
                    )
                status, last = _get(self.url + path, self.admin_token, context)
                if status == 200:
                    break
                time.sleep(0.2)

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_path)},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.admin_token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
            "current-context": "test",
        }
        self.kubeconfig_path.write_text(yaml.safe_dump(config))
        self.kubeconfig_path.chmod(0o600)


# Loopback probes must never go through an HTTP(S)_PROXY from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _etcd_healthy(url: str) -> bool:
    try:
        with _opener.open(url + "/health", timeout=2) as response:
            return bool(json.load(response).get("health") == "true")
    except (OSError, ValueError):
        return False


def _get(url: str, token: str, context: ssl.SSLContext) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    https = urllib.request.HTTPSHandler(context=context)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), https)
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.read(200).decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read(300).decode(errors="replace")
    except OSError as err:
        return 0, str(err)


def _scratch_root() -> str | None:
    # tmpfs makes etcd's writes (and so apiserver startup) much cheaper.
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def prerequisites() -> Binaries:
    """Check everything a control plane needs before anything is started.

    Raises :class:`BinariesUnavailable` naming what is missing and how to get it.
    """
    binaries = find_binaries()
    if shutil.which("openssl") is None:
        raise BinariesUnavailable("openssl is needed to create the test CA and keys")
    return binaries


@contextlib.contextmanager
def control_plane(binaries: Binaries | None = None) -> Iterator[ControlPlane]:
    """Run a control plane for the duration of the block.

    Raises :class:`BinariesUnavailable` if prerequisites are missing, and
    :class:`StartupError` (with both logs, also printed to stderr) if a server fails.
    """
    binaries = binaries or prerequisites()
    workdir = Path(tempfile.mkdtemp(prefix="nodefeatures-apiserver-", dir=_scratch_root()))
    plane = ControlPlane(binaries, workdir)
    try:
        try:
            plane.setup()
        except StartupError as err:
            print(err, file=sys.stderr)
            raise
        yield plane
    finally:
        plane.close()
        if os.environ.get("NODEFEATURES_KEEP_APISERVER_DIR"):
            print(f"kept control-plane work directory {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
