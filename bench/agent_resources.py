"""`nodefeatures run` as a real process: RSS after 100 passes and CPU per steady pass.

Runs the CLI with every installed source on this machine (`--root /`), against a real
kube-apiserver, authenticated as the agent's ServiceAccount, one pass a second. CPU is
the whole process (discovery, the idle watch, the metrics server) divided by passes.
Not a timed test.

    .venv/bin/python bench/agent_resources.py [--passes 100]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import kubeharness  # noqa: E402
import yaml  # noqa: E402
from kubernetes import client, utils  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def passes(port: int) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0
    match = re.search(r'nodefeatures_passes_total\{result="ok"\} ([0-9.e+]+)', text)
    return int(float(match.group(1))) if match else 0


def wait_passes(port: int, count: int, process: subprocess.Popen[bytes]) -> int:
    # Scrape rarely: rendering /metrics costs the agent CPU too.
    while (done := passes(port)) < count:
        if process.poll() is not None:
            raise SystemExit(f"agent exited with {process.returncode}")
        time.sleep(max(1.0, min(10.0, count - done - 1)))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=100)
    args = parser.parse_args()
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
             "--kubeconfig", str(kubeconfig), "--interval", "1s", "--metrics-port", str(port),
             "--metrics-address", "127.0.0.1", "--allow-unconfined"],  # no policy installed
            env=env, stderr=subprocess.DEVNULL)
        try:
            warm = wait_passes(port, 10, process)
            cpu_start, wall_start = cpu_seconds(process.pid), time.monotonic()
            done = wait_passes(port, args.passes, process)
            cpu = cpu_seconds(process.pid) - cpu_start
            wall = time.monotonic() - wall_start
            rss = rss_mib(process.pid)
            steady = done - warm
            with plane.admin_client() as api:
                labels = client.CoreV1Api(api).read_node("bench-node").metadata.labels or {}
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(10)
        print(f"{len(labels)} labels on the node; after {done} passes: RSS {rss:.1f} MiB")
        print(f"CPU over {steady} steady passes: {cpu * 1000:.0f} ms total, "
              f"{cpu * 1000 / steady:.2f} ms per pass ({wall:.0f} s wall, whole process)")


if __name__ == "__main__":
    main()
