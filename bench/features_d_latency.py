"""From a file dropped into features.d to the label on the Node: latency and writes.

Runs `nodefeatures run` as a real process (local and system sources, a host root in a
scratch directory, a one-hour interval so that only the file notification can explain
a prompt label) against a real kube-apiserver, as the agent's ServiceAccount. Each
round writes one feature file and times until a watch on the Node shows its label. A
burst round then writes 100 files as fast as it can and counts the patches it cost.
Not a timed test.

    .venv/bin/python bench/features_d_latency.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import kubeharness  # noqa: E402
import yaml  # noqa: E402
from kubernetes import client, utils, watch  # noqa: E402

FEATURES_D = "etc/kubernetes/node-feature-discovery/features.d"
PREFIX = "feature.node.kubernetes.io/"


def patches(port: int) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    found = re.findall(r'nodefeatures_api_requests_total\{code="200",verb="patch"\} ([0-9.e+]+)',
                       text)
    return int(float(found[0])) if found else 0


def wait_label(core: client.CoreV1Api, key: str, value: str, timeout: float = 30) -> float:
    """Seconds until the Node carries key=value, seen through a watch."""
    started = time.monotonic()
    stream = watch.Watch()
    for event in stream.stream(core.list_node, field_selector="metadata.name=bench-node",
                               timeout_seconds=int(timeout)):
        labels = event["object"].metadata.labels or {}
        if labels.get(key) == value:
            stream.stop()
            return time.monotonic() - started
    raise SystemExit(f"{key}={value} did not arrive within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    host = Path(tempfile.mkdtemp(prefix="nodefeatures-bench-"))
    (host / FEATURES_D).mkdir(parents=True)
    (host / "etc/os-release").write_text("ID=debian\nVERSION_ID=12\n")
    with kubeharness.control_plane() as plane:
        with plane.admin_client() as api:
            for part in ("namespace.yaml", "rbac.yaml"):
                for document in yaml.safe_load_all((REPO / "deploy/base" / part).read_text()):
                    utils.create_from_dict(api, document)
            client.CoreV1Api(api).create_node(
                client.V1Node(metadata=client.V1ObjectMeta(name="bench-node")))
        time.sleep(1)
        token = plane.service_account_token("nodefeatures", "nodefeatures")
        kubeconfig = plane.workdir / "agent.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "a",
            "clusters": [{"name": "t", "cluster": {"server": plane.url,
                                                   "certificate-authority": str(plane.ca_path)}}],
            "users": [{"name": "a", "user": {"token": token}}],
            "contexts": [{"name": "a", "context": {"cluster": "t", "user": "a"}}]}))
        port = kubeharness.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        process = subprocess.Popen(
            [sys.executable, "-m", "nodefeatures", "run", "--node", "bench-node",
             "--kubeconfig", str(kubeconfig), "--root", str(host), "--source", "local",
             "--source", "system", "--interval", "1h", "--metrics-port", str(port),
             "--metrics-address", "127.0.0.1", "--allow-unconfined"],  # no policy installed
            env=env, stderr=subprocess.DEVNULL)
        try:
            with plane.admin_client() as api:
                core = client.CoreV1Api(api)
                wait_label(core, f"{PREFIX}system-os_release.ID", "debian")
                time.sleep(1)  # the watches are set up just after the first pass
                latencies = []
                for index in range(args.rounds):
                    started = time.monotonic()
                    (host / FEATURES_D / f"round{index}").write_text(f"round{index}=yes\n")
                    wait_label(core, f"{PREFIX}round{index}", "yes")
                    latencies.append(time.monotonic() - started)
                before = patches(port)
                for index in range(100):
                    (host / FEATURES_D / f"burst{index}").write_text(f"burst{index}=yes\n")
                wait_label(core, f"{PREFIX}burst99", "yes")
                time.sleep(2)
                burst = patches(port) - before
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(10)
    print(f"{args.rounds} files dropped into features.d, interval 1 h: label on the Node "
          f"after median {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms, min {min(latencies) * 1000:.0f} ms")
    print(f"100 files written in a burst: {burst} patches")


if __name__ == "__main__":
    main()
