"""Many agents following NodeFeatureRules on one real kube-apiserver: reach and load.

Each simulated node is a real Node with its own Agent, its own ClusterObjects (a list and
a watch of NodeFeatureRules and of its NodeFeatures, as in production) and its own
connection pool; they share the agents' ServiceAccount token. Not a timed test.

    .venv/bin/python bench/nfd_rules_fleet.py --agents 500 --rules 50 --window 60

Reports: time until every node carries every rule's label; the watches open on the
server; requests beyond the watches in a steady window; the time until a changed rule
reaches every node (seen on one watch of the Nodes), with the CPU the agents spent on it
per node and the server's in all; the kube-apiserver's resident memory before and
after the agents. All agents share this one interpreter and the machine's cores with
the server: on a cluster each agent has its node's CPU, so there the reach is bounded
by the server's part.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import kubeharness  # noqa: E402
import yaml  # noqa: E402
from kubernetes import client, utils  # noqa: E402

from nodefeatures.cluster.agent import Agent, Options  # noqa: E402
from nodefeatures.cluster.kube import NodeApi  # noqa: E402
from nodefeatures.cluster.nfdapi import ClusterObjects  # noqa: E402
from nodefeatures.discovery.config import build  # noqa: E402
from nodefeatures.discovery.hostroot import HostRoot  # noqa: E402
from nodefeatures.discovery.labels import Label  # noqa: E402
from nodefeatures.discovery.run import run_pass  # noqa: E402
from nodefeatures.discovery.source import Context, Features, Host, Source  # noqa: E402

F = "feature.node.kubernetes.io/"
SA_USER = "system:serviceaccount:nodefeatures:nodefeatures"
GROUP, VERSION = "nfd.k8s-sigs.io", "v1alpha1"
CHANGING = F + "rules-generation"


class FleetSource(Source):
    """The features the rules match: an accelerator model per node."""

    name = "fleet"

    def __init__(self, index: int) -> None:
        self.index = index

    def discover(self, ctx: Context) -> Features:
        features = Features()
        features.attribute("accel", "model", f"x{self.index % 4}", "bench")
        return features

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        return [Label(F + "fleet-model", features.attributes["accel"]["model"].value)]


def rule_object(index: int, generation: int) -> dict[str, Any]:
    """One NodeFeatureRule of three rules, one of which matches every node."""
    rules = [
        {"name": f"r{index}-any", "labels": {f"{F}rule-{index:02d}": "true"},
         "matchFeatures": [{"feature": "fleet.accel",
                            "matchExpressions": {"model": {"op": "Exists"}}}]},
        {"name": f"r{index}-x1", "labels": {f"{F}rule-{index:02d}-x1": "true"},
         "matchFeatures": [{"feature": "fleet.accel",
                            "matchExpressions": {"model": {"op": "In", "value": ["x1"]}}}]},
        {"name": f"r{index}-none", "labels": {f"{F}rule-{index:02d}-never": "true"},
         "matchFeatures": [{"feature": "fleet.accel",
                            "matchExpressions": {"model": {"op": "In", "value": ["zz"]}}}]},
    ]
    if index == 0:
        rules.append({"name": "generation", "labels": {CHANGING: str(generation)}})
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NodeFeatureRule",
            "metadata": {"name": f"bench-{index:02d}"}, "spec": {"rules": rules}}


def labelled(plane: kubeharness.ControlPlane, names: set[str], key: str, value: str) -> int:
    with plane.admin_client() as api:
        response = api.call_api("/api/v1/nodes", "GET", auth_settings=["BearerToken"],
                                _preload_content=False)
        items = json.loads(response.data)["items"]
    return sum(1 for node in items if node["metadata"]["name"] in names
               and (node["metadata"].get("labels") or {}).get(key) == value)


def wait_for(plane: kubeharness.ControlPlane, names: set[str], key: str, value: str,
             timeout: float) -> float:
    started = time.monotonic()
    while labelled(plane, names, key, value) < len(names):
        if time.monotonic() - started > timeout:
            found = labelled(plane, names, key, value)
            raise SystemExit(f"{found}/{len(names)} nodes after {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - started


def reach_by_watch(plane: kubeharness.ControlPlane, names: set[str], key: str, value: str,
                   change: Any, timeout: float) -> float:
    """Seconds from `change()` until every Node in `names` has `key`=`value`, seen on one
    watch of the Nodes opened before the change. Polling full Node lists instead costs
    the server and this process (whose interpreter the agents share) more than the
    agents' own work, and slows what it measures."""
    with plane.admin_client() as api:
        listed = api.call_api("/api/v1/nodes", "GET", auth_settings=["BearerToken"],
                              query_params=[("limit", "1")], _preload_content=False)
        version = json.loads(listed.data)["metadata"]["resourceVersion"]
        response = api.call_api(
            "/api/v1/nodes", "GET", auth_settings=["BearerToken"], _preload_content=False,
            query_params=[("watch", "true"), ("resourceVersion", version),
                          ("timeoutSeconds", str(int(timeout)))])
        started = time.monotonic()
        change()
        missing = set(names)
        buffer = b""
        for chunk in response.stream(65536):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                node = json.loads(line)["object"]
                meta = node.get("metadata") or {}
                if (meta.get("labels") or {}).get(key) == value:
                    missing.discard(meta.get("name"))
            if not missing:
                response.release_conn()
                return time.monotonic() - started
        raise SystemExit(f"{len(names) - len(missing)}/{len(names)} nodes after {timeout} s")


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process `pid` (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_metric(plane: kubeharness.ControlPlane, name: str) -> dict[str, float]:
    """Samples of one kube-apiserver metric, by their label text."""
    with plane.admin_client() as api:
        response = api.call_api("/metrics", "GET", auth_settings=["BearerToken"],
                                _preload_content=False)
    found: dict[str, float] = {}
    for line in response.data.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            found[head[len(name):]] = float(value)
    return found


def apiserver_rss_mib(plane: kubeharness.ControlPlane) -> float:
    pid = plane._apiserver.popen.pid  # type: ignore[union-attr]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def audited(plane: kubeharness.ControlPlane) -> dict[str, str]:
    seen: dict[str, str] = {}
    for event in plane.audit_events():
        user = (event.get("impersonatedUser") or event["user"])["username"]
        if user == SA_USER:
            seen[event["auditID"]] = event["verb"]
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--changes", type=int, default=3,
                        help="how many times the reach of a changed rule is measured")
    args = parser.parse_args()

    from nfdkit import crd_documents

    with kubeharness.control_plane() as plane:
        with plane.admin_client() as api:
            for part in ("namespace.yaml", "rbac.yaml"):
                for document in yaml.safe_load_all((REPO / "deploy/base" / part).read_text()):
                    utils.create_from_dict(api, document)
            for document in crd_documents():
                client.ApiextensionsV1Api(api).create_custom_resource_definition(document)
            time.sleep(3)  # established and served
            objects_api = client.CustomObjectsApi(api)
            for index in range(args.rules):
                objects_api.create_cluster_custom_object(GROUP, VERSION, "nodefeaturerules",
                                                         rule_object(index, 1))
            core = client.CoreV1Api(api)
            names = [f"rules-{i:04d}" for i in range(args.agents)]
            for name in names:
                core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
                    name=name, labels={"kubernetes.io/hostname": name})))
        idle_rss = apiserver_rss_mib(plane)
        time.sleep(1)
        token = plane.service_account_token("nodefeatures", "nodefeatures")
        root = Host(root=HostRoot(REPO / "bench"))
        agents: list[Agent] = []
        followers: list[ClusterObjects] = []
        for index, name in enumerate(names):
            sources = {"fleet": FleetSource(index)}
            config = build({}, sources)

            def discover(s: dict[str, Source] = sources, c: Any = config) -> Any:
                return run_pass(root, s, c)

            api_client = plane.client_for_token(token)
            box: list[Agent] = []
            objects = ClusterObjects(api_client, name, "nodefeatures",
                                     lambda b=box: b[0].refresh() if b else None)
            agent = Agent(NodeApi(api_client, name), discover, ["fleet"],
                          Options(node=name, interval=args.interval, allow_unconfined=True),
                          rng=random.Random(index), extend=objects.extend)
            box.append(agent)
            agents.append(agent)
            followers.append(objects)
        started = time.monotonic()
        for objects in followers:
            objects.start()
        threads = [threading.Thread(target=a.run, daemon=True) for a in agents]
        for thread in threads:
            thread.start()
        node_set = set(names)
        last = f"{F}rule-{args.rules - 1:02d}"
        wait_for(plane, node_set, last, "true", 600)
        wait_for(plane, node_set, CHANGING, "1", 60)
        print(f"{args.agents} agents, {args.rules} NodeFeatureRules ({args.rules * 3 + 1} "
              f"rules): every node labelled {time.monotonic() - started:.1f} s after start")
        time.sleep(5)
        # Open watches: long-running WATCH requests, by resource.
        running = server_metric(plane, "apiserver_longrunning_requests")
        watches: dict[str, int] = {}
        for labels, value in running.items():
            if 'verb="WATCH"' in labels and value:
                resource = labels.split('resource="', 1)[1].split('"', 1)[0]
                watches[resource] = watches.get(resource, 0) + int(value)
        print(f"watches open on the server: {sum(watches.values())} "
              f"({', '.join(f'{k}={v}' for k, v in sorted(watches.items()))})")
        before = audited(plane)
        time.sleep(args.window)
        after = audited(plane)
        extra: dict[str, int] = {}
        for audit_id, verb in after.items():
            if audit_id not in before and verb != "watch":
                extra[verb] = extra.get(verb, 0) + 1
        print(f"steady state over {args.window:.0f} s: {sum(extra.values())} requests beyond "
              f"the watches {extra or '{}'}")
        for generation in range(2, 2 + args.changes):
            with plane.admin_client() as api:
                objects_api = client.CustomObjectsApi(api)
                current = objects_api.get_cluster_custom_object(
                    GROUP, VERSION, "nodefeaturerules", "bench-00")
                current["spec"] = rule_object(0, generation)["spec"]

                def change(o: Any = objects_api, c: Any = current) -> None:
                    o.replace_cluster_custom_object(GROUP, VERSION, "nodefeaturerules",
                                                    "bench-00", c)

                agents_cpu = time.process_time()
                server_pids = [plane._apiserver.popen.pid,  # type: ignore[union-attr]
                               plane._etcd.popen.pid]  # type: ignore[union-attr]
                server_cpu = sum(process_cpu_seconds(pid) for pid in server_pids)
                reach = reach_by_watch(plane, node_set, CHANGING, str(generation), change,
                                       120)
                agents_cpu = time.process_time() - agents_cpu
                server_cpu = sum(process_cpu_seconds(pid) for pid in server_pids) - server_cpu
            print(f"a changed NodeFeatureRule reached all {args.agents} nodes in {reach:.1f} s "
                  f"(agents {agents_cpu / args.agents * 1000:.1f} ms CPU per node, "
                  f"kube-apiserver and etcd {server_cpu:.1f} s CPU in all)")
            time.sleep(5)
        print(f"kube-apiserver RSS: {idle_rss:.0f} MiB before the agents, "
              f"{apiserver_rss_mib(plane):.0f} MiB with them")
        for agent in agents:
            agent.stop()
        for objects in followers:
            objects.stop()


if __name__ == "__main__":
    main()
