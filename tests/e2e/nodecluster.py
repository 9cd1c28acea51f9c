"""A one-node Kubernetes cluster in a sandbox, for the e2e tests.

Everything runs inside namespaces and a cgroup this module creates, and nothing of it
outlives :func:`node_cluster`:

* network: one network namespace, held open by a ``sleep`` process.  It has loopback and
  a veth pair whose both ends stay inside (the node's address, 10.201.0.1, and a default
  route that leads nowhere), so the node has a real interface and no way out.  etcd,
  kube-apiserver, the controllers and the node all talk over it; the tests reach it only
  by running kubectl (or the agent's CLI) inside it (``nsenter --net``).
* mounts: the node (containerd, kubelet, kube-proxy) runs in a private mount namespace
  where /run and /var/log are fresh tmpfs, /etc, /var and /opt are overlays whose upper
  layers live in the work directory, and the kernel tunables the kubelet insists on are
  bind-mounted files.  Whatever the node writes outside the work directory lands in those
  layers and vanishes with the namespace.
* processes: every process (and everything they fork: shims, containers) is in the
  cgroup ``nodefeatures-e2e-<id>`` of every hierarchy; teardown kills our own
  processes by PID, then every PID still listed in that cgroup, then removes it.  If
  pytest itself is SIGKILLed, the servers get SIGTERM from the kernel (parent-death
  signal), but containers and their shims can outlive it in that cgroup.

The binaries come from tests/e2e/build.sh (kubelet & co., containerd 2.x, kubectl,
kustomize) and tests/apiserver/build.sh (kube-apiserver, etcd); runc, the CNI plugins,
nftables and mmdebstrap are Debian packages that scripts/test.sh installs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import images
import kubeharness

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
NODE_NAME = "e2e-node"
NODE_IP = "10.201.0.1"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
POD_CIDR = "10.244.0.0/24"
APISERVER_PORT = 6443
CGROUP_ROOT = Path("/sys/fs/cgroup")
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
RUNC_CANDIDATES = ("/usr/sbin/runc", "/usr/bin/runc")
# What the kubelet demands of these host-wide sysctls (pkg/kubelet/cm); the sandbox shows
# it files holding exactly these values, so with protectKernelDefaults it checks and never
# writes the real ones.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
START_TIMEOUT_S = 180.0


class Unavailable(Exception):
    """This machine cannot run the e2e cluster; the message says why."""


def _run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("check", True)
    kwargs.setdefault("capture_output", True)
    return subprocess.run(list(argv), text=True, **kwargs)


def node_bin_dir() -> Path:
    """Where tests/e2e/build.sh leaves its binaries (nothing is built here)."""
    out = _run(["bash", str(BUILD_SCRIPT), "--print-dir"]).stdout.strip().splitlines()
    return Path(out[-1])


def _hierarchies(types: tuple[str, ...] = ("cgroup", "cgroup2")) -> list[Path]:
    """Mounted cgroup hierarchies below /sys/fs/cgroup: each v1 controller set and, on a
    hybrid host, the v2 one beside them (runc puts containers in both)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, target, fstype, *_ = line.split()
        if fstype in types and target.startswith(str(CGROUP_ROOT) + "/"):
            found.append(Path(target))
    return found


def prerequisites() -> dict[str, Path]:
    """Check what the cluster needs; raise :class:`Unavailable` with one clear reason."""
    if sys.platform != "linux":
        raise Unavailable("needs Linux")
    if os.geteuid() != 0:
        raise Unavailable("needs root (it creates namespaces, cgroups and mounts)")
    if not _hierarchies(("cgroup",)):
        raise Unavailable("needs cgroup v1 hierarchies under /sys/fs/cgroup (this harness "
                          "drives the kubelet's cgroupfs driver on v1/hybrid hosts)")
    for tool in ("unshare", "nsenter", "ip", "mount", "nft", "openssl", "chroot", "tar"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} is not installed (scripts/test.sh installs it)")
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        raise Unavailable(f"cannot create namespaces: {probe.stderr.decode().strip()}")
    runc = next((Path(p) for p in RUNC_CANDIDATES if os.access(p, os.X_OK)), None)
    if runc is None:
        raise Unavailable("runc is not installed (apt-get install runc)")
    cni = next((Path(d) for d in CNI_BIN_DIRS if (Path(d) / "bridge").exists()), None)
    if cni is None:
        raise Unavailable("the CNI bridge plugin is missing (apt-get install "
                          "containernetworking-plugins)")
    if not images.base_rootfs_cached() and shutil.which("mmdebstrap") is None:
        raise Unavailable("mmdebstrap is needed to build the agent image once "
                          "(apt-get install mmdebstrap)")
    try:
        control = kubeharness.find_binaries()
    except kubeharness.BinariesUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    bin_dir = node_bin_dir()
    paths = {"runc": runc, "cni": cni, "etcd": control.etcd,
             "kube-apiserver": control.kube_apiserver}
    for name in ("kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy",
                 "kubectl", "kustomize", "containerd", "ctr", "containerd-shim-runc-v2",
                 "pause"):
        path = bin_dir / name
        if not os.access(path, os.X_OK):
            raise Unavailable(f"no {path}: run {BUILD_SCRIPT}")
        paths[name] = path
    return paths


@dataclass
class _Cgroup:
    """One directory of the same name in every hierarchy."""

    name: str
    dirs: list[Path]

    @classmethod
    def create(cls, name: str) -> _Cgroup:
        made: list[Path] = []
        try:
            for hierarchy in _hierarchies():
                path = hierarchy / name
                path.mkdir()
                made.append(path)
                # A new cpuset starts empty and refuses tasks until given its parent's sets.
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    if (hierarchy / knob).exists():
                        (path / knob).write_text((hierarchy / knob).read_text())
        except OSError:
            for path in made:
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise
        return cls(name, made)

    def join(self) -> None:
        """Move the calling process (a child between fork and exec) into the cgroup."""
        for path in self.dirs:
            with open(path / "cgroup.procs", "w") as procs:
                procs.write("0")

    def pids(self) -> set[int]:
        found: set[int] = set()
        for top in self.dirs:
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    found.update(int(p) for p in procs.read_text().split())
        return found

    def kill_all(self, timeout: float = 20.0) -> None:
        """SIGKILL every PID left in the cgroup until none is, then remove it."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids or time.monotonic() > deadline:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for top in self.dirs:
            # Children first; the kubelet made kubepods/... below ours.
            for path in sorted((p for p in top.rglob("*") if p.is_dir()),
                               key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    path.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


class _SandboxProcess(kubeharness._Process):
    """A server process that starts in the sandbox's cgroup, with its own environment."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 preexec: Callable[[], None], env: dict[str, str] | None) -> None:
        super().__init__(name, argv, log_path)
        self._preexec = preexec
        self._env = env

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=self._preexec, env=self._env,
        )


class NodeCluster:
    """The sandboxed cluster; see the module docstring."""

    def __init__(self, paths: dict[str, Path], workdir: Path) -> None:
        self.paths = paths
        self.workdir = workdir
        self.id = secrets.token_hex(4)
        self.cgroup_name = f"nodefeatures-e2e-{self.id}"
        self.admin_token = secrets.token_hex(24)
        self.node_token = secrets.token_hex(24)
        self.kubeconfig = workdir / "kubeconfig"
        self.containerd_sock = workdir / "containerd" / "containerd.sock"
        self.agent_image = ""
        self.cgroup: _Cgroup | None = None
        self.holder: subprocess.Popen[bytes] | None = None
        self.procs: list[kubeharness._Process] = []
        self.start_seconds = 0.0

    # ----- running things inside ---------------------------------------------------------

    def _in(self, argv: Sequence[str], mount: bool) -> list[str]:
        assert self.holder is not None
        prefix = ["nsenter", f"--target={self.holder.pid}", "--net"]
        if mount:
            prefix.append("--mount")
        return [*prefix, "--", *argv]

    def in_network(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run in the cluster's network (host mounts, host files)."""
        return self._in(argv, mount=False)

    def _preexec(self) -> None:
        assert self.cgroup is not None
        self.cgroup.join()
        kubeharness._die_with_parent()

    def _spawn(self, name: str, argv: Sequence[str], mount: bool = False,
               env: dict[str, str] | None = None) -> kubeharness._Process:
        proc = _SandboxProcess(name, self._in(argv, mount), self.workdir / f"{name}.log",
                               self._preexec, env)
        proc.start()
        self.procs.append(proc)
        return proc

    def sh(self, script: str, mount: bool = True, check: bool = True) -> str:
        """Run a shell script inside the sandbox's namespaces; return its stdout."""
        result = subprocess.run(self._in(["sh", "-euc", script], mount), text=True,
                                capture_output=True, preexec_fn=self._preexec)
        if check and result.returncode != 0:
            raise RuntimeError(f"sandbox script failed ({result.returncode}): {script}\n"
                               f"{result.stdout}{result.stderr}")
        return result.stdout

    def kubectl(self, *args: str, token: str | None = None, input: str | None = None,
                check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """kubectl inside the node's network (as the admin, or with ``token``)."""
        argv = [str(self.paths["kubectl"]), f"--kubeconfig={self.kubeconfig}"]
        if token is not None:
            # A kubeconfig's user is replaced, not merged, by --token.
            argv.append(f"--token={token}")
        argv += args
        result = subprocess.run(self._in(argv, mount=False), text=True, input=input,
                                capture_output=True, timeout=timeout,
                                preexec_fn=self._preexec)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")
        return result

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def node(self) -> dict[str, Any]:
        return self.get_json("node", NODE_NAME)  # type: ignore[no-any-return]

    def ctr(self, *args: str) -> str:
        argv = [str(self.paths["ctr"]), f"--address={self.containerd_sock}", "-n", "k8s.io",
                *args]
        return self.sh(" ".join(_quote(a) for a in argv))

    def logs(self, lines: int = 40) -> str:
        return "\n".join(p.log_tail(lines) for p in self.procs)

    # ----- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        archives = [images.pause_archive(self.paths["pause"].parent), images.agent_archive()]
        self.agent_image = images.agent_image_name()
        self.cgroup = _Cgroup.create(self.cgroup_name)
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sleep", "infinity"],
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=self._preexec,
        )
        holder = self.holder.pid
        # unshare has made the namespaces once its net link differs from ours.
        self._wait_for(lambda: os.readlink(f"/proc/{holder}/ns/net")
                       != os.readlink("/proc/self/ns/net"), 10, "the sandbox namespaces")
        self._write_pki()
        self._setup_sandbox()
        self._start_control_plane()
        self._start_node(archives)
        self.start_seconds = time.monotonic() - started

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait()
        if self.cgroup is not None:
            # Shims and containers are not our children; they are in our cgroup.
            self.cgroup.kill_all()
            left = [str(p) for p in self.cgroup.dirs if p.exists()]
            if left:
                raise RuntimeError(f"teardown left cgroups behind: {left}")

    # ----- internals ---------------------------------------------------------------------

    @staticmethod
    def _wait_for(predicate: Any, timeout: float, what: str, logs: Any = None) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except Exception as exc:  # keep polling; report the last failure
                last = exc
            time.sleep(0.25)
        detail = f" (last error: {last})" if last else ""
        raise kubeharness.StartupError(
            f"timed out after {timeout:.0f}s waiting for {what}{detail}\n{logs() if logs else ''}")

    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(mode=0o700)
        sans = f"IP:127.0.0.1, IP:{NODE_IP}, IP:{SERVICE_IP}, DNS:localhost, DNS:kubernetes, " \
               "DNS:kubernetes.default, DNS:kubernetes.default.svc, " \
               "DNS:kubernetes.default.svc.cluster.local"
        cnf = kubeharness._OPENSSL_CNF.replace("subjectAltName = IP:127.0.0.1, DNS:localhost",
                                               f"subjectAltName = {sans}")
        (pki / "openssl.cnf").write_text(cnf)

        def openssl(*args: str) -> None:
            _run(["openssl", *args], cwd=pki)

        ec = ("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
        openssl(*ec, "-out", "ca.key")
        openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=nodefeatures-e2e-ca",
                "-days", "7", "-config", "openssl.cnf", "-extensions", "ca", "-out", "ca.crt")
        openssl(*ec, "-out", "server.key")
        openssl("req", "-new", "-key", "server.key", "-subj", "/CN=kube-apiserver",
                "-config", "openssl.cnf", "-out", "server.csr")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-set_serial", f"0x{secrets.token_hex(16)}", "-days", "7", "-extfile",
                "openssl.cnf", "-extensions", "server", "-out", "server.crt")
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                "-out", "sa.key")
        openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(
            f'{self.admin_token},e2e-admin,e2e-admin-uid,"system:masters"\n'
            f'{self.node_token},system:node:{NODE_NAME},e2e-node-uid,"system:nodes"\n')
        tokens.chmod(0o600)
        for name, token in (("kubeconfig", self.admin_token),
                            ("kubeconfig-node", self.node_token)):
            config = {
                "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
                "clusters": [{"name": "e2e", "cluster": {
                    "server": f"https://{NODE_IP}:{APISERVER_PORT}",
                    "certificate-authority": str(pki / "ca.crt")}}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "u"}}],
            }
            path = self.workdir / name
            path.write_text(yaml.safe_dump(config))
            path.chmod(0o600)

    def _setup_sandbox(self) -> None:
        w = self.workdir
        sysctl_dir = w / "sysctl"
        for key, value in KUBELET_SYSCTLS.items():
            path = sysctl_dir / key.replace("/", "_")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value + "\n")
        binds = "\n".join(f"mount --bind {sysctl_dir / k.replace('/', '_')} /proc/sys/{k}"
                          for k in KUBELET_SYSCTLS)
        overlays = []
        for top in ("etc", "var", "opt"):
            if Path("/", top).is_dir():
                up, wk = w / "overlay" / top / "upper", w / "overlay" / top / "work"
                up.mkdir(parents=True)
                wk.mkdir(parents=True)
                overlays.append(f"mount -t overlay overlay -o lowerdir=/{top},upperdir={up},"
                                f"workdir={wk} /{top}")
        overlay_lines = "\n".join(overlays)
        self.sh(f"""
            ip link set lo up
            ip link add nf0 type veth peer name nf1
            ip addr add {NODE_IP}/24 dev nf0
            ip link set nf0 up
            ip link set nf1 up
            ip route add default dev nf0
            {overlay_lines}
            mount -t tmpfs -o mode=0755 tmpfs /run
            mount -t tmpfs -o mode=0755 tmpfs /var/log
            {binds}
            # The kubelet and containerd expect a shared root (bidirectional volumes,
            # HostToContainer); peers exist only inside this namespace.
            mount --make-rshared /
            """)

    def _start_control_plane(self) -> None:
        w, pki = self.workdir, self.workdir / "pki"
        self._spawn("etcd", [
            str(self.paths["etcd"]), "--name=e2e", f"--data-dir={w / 'etcd'}",
            "--listen-client-urls=http://127.0.0.1:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=e2e=http://127.0.0.1:2380",
            "--unsafe-no-fsync=true", "--log-level=warn",
        ])
        self._spawn("kube-apiserver", [
            str(self.paths["kube-apiserver"]),
            "--etcd-servers=http://127.0.0.1:2379",
            "--bind-address=0.0.0.0", f"--secure-port={APISERVER_PORT}",
            f"--advertise-address={NODE_IP}",
            f"--tls-cert-file={pki / 'server.crt'}",
            f"--tls-private-key-file={pki / 'server.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={w / 'tokens.csv'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={kubeharness.SA_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            # The node's name resolves nowhere: there is no DNS in the sandbox.
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
        ])
        self._wait_for(
            lambda: self.kubectl("get", "--raw=/readyz", check=False, timeout=10).returncode == 0,
            90, "kube-apiserver /readyz", self.logs)
        self._spawn("kube-controller-manager", [
            str(self.paths["kube-controller-manager"]),
            f"--kubeconfig={self.kubeconfig}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=false",
            "--leader-elect=false", "--secure-port=0",
            "--controllers=*,-csrsigning,-csrapproving,-csrcleaner",
        ])
        self._spawn("kube-scheduler", [
            str(self.paths["kube-scheduler"]), f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false", "--secure-port=0",
        ])

    def _start_node(self, archives: list[Path]) -> None:
        w = self.workdir
        for sub in ("containerd/root", "containerd/state", "cni/net.d", "cni/ipam", "kubelet",
                    "pod-logs"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        cni = {
            "cniVersion": "1.0.0", "name": "e2e",
            "plugins": [{
                "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                         "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(w / "cni/ipam")},
            }],
        }
        (w / "cni/net.d/10-e2e.conflist").write_text(json.dumps(cni))
        runtime = '"io.containerd.cri.v1.runtime"'
        (w / "containerd/config.toml").write_text(f"""\
version = 3
root = "{w / 'containerd/root'}"
state = "{w / 'containerd/state'}"
[grpc]
  address = "{self.containerd_sock}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{w / 'containerd/opt'}"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{images.PAUSE_IMAGE}"
[plugins.{runtime}]
  # The bounding set lacks CAP_SYS_RESOURCE: a negative oom_score_adj cannot be set.
  restrict_oom_score_adj = true
  [plugins.{runtime}.cni]
    bin_dirs = ["{self.paths['cni']}"]
    conf_dir = "{w / 'cni/net.d'}"
  [plugins.{runtime}.containerd]
    default_runtime_name = "runc"
    [plugins.{runtime}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.{runtime}.containerd.runtimes.runc.options]
        BinaryName = "{self.paths['runc']}"
        SystemdCgroup = false
    # A stand-in for the NVIDIA container runtime (plain runc, no GPU): the handler a
    # RuntimeClass "nvidia" names, so deploy/gpu's GPU agent can start on this node.
    [plugins.{runtime}.containerd.runtimes.nvidia]
      runtime_type = "io.containerd.runc.v2"
      [plugins.{runtime}.containerd.runtimes.nvidia.options]
        BinaryName = "{self.paths['runc']}"
        SystemdCgroup = false
""")
        env = {"PATH": f"{self.paths['containerd'].parent}:/usr/sbin:/usr/bin:/sbin:/bin"}
        containerd = self._spawn("containerd", [
            str(self.paths["containerd"]), f"--config={w / 'containerd/config.toml'}"],
            mount=True, env=env)
        self._wait_for(lambda: self.containerd_sock.exists() and containerd.running(), 60,
                       "containerd", self.logs)
        for archive in archives:
            self.ctr("images", "import", "--snapshotter=overlayfs", str(archive))

        (w / "resolv.conf").write_text("")
        kubelet_config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # Only the API server (inside the sandbox) can reach it.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_name}",
            "containerRuntimeEndpoint": f"unix://{self.containerd_sock}",
            "failSwapOn": False,
            "protectKernelDefaults": True,
            "podLogsDir": str(w / "pod-logs"),
            "resolvConf": str(w / "resolv.conf"),
            "readOnlyPort": 0,
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "syncFrequency": "5s",
            "nodeStatusReportFrequency": "10s",
            "oomScoreAdj": 0,
        }
        (w / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config))
        self._spawn("kubelet", [
            str(self.paths["kubelet"]), f"--config={w / 'kubelet.yaml'}",
            f"--kubeconfig={w / 'kubeconfig-node'}", f"--root-dir={w / 'kubelet'}",
            f"--cert-dir={w / 'kubelet/pki'}", f"--node-ip={NODE_IP}",
            f"--hostname-override={NODE_NAME}", "--v=1",
        ], mount=True, env=env)
        proxy_config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "nftables",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": POD_CIDR,
            # Leave the host-wide conntrack sysctls and our own OOM score alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s"},
            "oomScoreAdj": 0,
            "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": "127.0.0.1:10256",
        }
        (w / "kube-proxy.yaml").write_text(yaml.safe_dump(proxy_config))
        self._spawn("kube-proxy", [
            str(self.paths["kube-proxy"]), f"--config={w / 'kube-proxy.yaml'}"],
            mount=True, env=env)

        def node_ready() -> bool:
            node = self.node()
            return any(c["type"] == "Ready" and c["status"] == "True"
                       for c in node["status"].get("conditions", []))

        self._wait_for(node_ready, START_TIMEOUT_S, f"Node {NODE_NAME} Ready", self.logs)
        # Pods need their ServiceAccount; the controller creates it shortly after start.
        self._wait_for(lambda: self.kubectl("get", "serviceaccount", "default",
                                            check=False).returncode == 0,
                       60, "the default ServiceAccount", self.logs)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _scratch_root() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


@contextlib.contextmanager
def node_cluster(paths: dict[str, Path] | None = None) -> Iterator[NodeCluster]:
    """Start the sandboxed cluster for the block; always tear everything down."""
    paths = paths or prerequisites()
    workdir = Path(tempfile.mkdtemp(prefix="nodefeatures-e2e-", dir=_scratch_root()))
    cluster = NodeCluster(paths, workdir)
    try:
        try:
            cluster.start()
        except Exception:
            print(cluster.logs(), file=sys.stderr)
            raise
        yield cluster
    finally:
        cluster.close()
        if os.environ.get("NODEFEATURES_KEEP_E2E_DIR"):
            print(f"kept e2e work directory {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
