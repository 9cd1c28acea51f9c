"""Many agents in one process against one real kube-apiserver: convergence and API load.

Each simulated node is a real Node object with its own Agent (the production loop, watch
and reconcile code), its own connection pool and its own source instance; they share one
ServiceAccount token, as a DaemonSet's pods share one ServiceAccount. Not a timed test.

    .venv/bin/python bench/agent_fleet.py --agents 500 --interval 30 --window 120

Reports: time until every node carries its labels after start; steady-state requests
(audit log and the agents' own counters) per node-hour; time until every node shows a
changed label when all agents see the change at once (worst case: the same second) and
when each finds it on its own jittered pass.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import kubeharness  # noqa: E402
import yaml  # noqa: E402
from kubernetes import client, utils  # noqa: E402

from nodefeatures.cluster.agent import Agent, Options  # noqa: E402
from nodefeatures.cluster.kube import NodeApi  # noqa: E402
from nodefeatures.discovery.config import build  # noqa: E402
from nodefeatures.discovery.hostroot import HostRoot  # noqa: E402
from nodefeatures.discovery.labels import Label  # noqa: E402
from nodefeatures.discovery.run import run_pass  # noqa: E402
from nodefeatures.discovery.source import Context, Features, Host, Source  # noqa: E402

F = "feature.node.kubernetes.io/"
SA_USER = "system:serviceaccount:nodefeatures:nodefeatures"
CHANGING = F + "fleet-generation"


class FleetSource(Source):
    """A node's worth of labels (about as many as a real CPU+kernel+PCI node)."""

    name = "fleet"

    def __init__(self, index: int, generation: list[int]) -> None:
        self.index = index
        self.generation = generation  # shared: one change seen by every node

    def discover(self, ctx: Context) -> Features:
        features = Features()
        for n in range(40):
            features.attribute("fake", f"{F}fleet-flag.{n:02d}", "true", "bench")
        features.attribute("fake", "nvidia.com/gpu.count", str(1 + self.index % 8), "bench")
        features.attribute("fake", CHANGING, str(self.generation[0]), "bench")
        return features

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        return [Label(k, f.value) for k, f in features.attributes["fake"].items()]


def agent_requests(plane: kubeharness.ControlPlane) -> dict[str, int]:
    """Distinct audited requests on Nodes made as the agents' ServiceAccount, by verb."""
    seen: dict[str, str] = {}
    for event in plane.audit_events():
        user = (event.get("impersonatedUser") or event["user"])["username"]
        if user == SA_USER:
            seen[event["auditID"]] = event["verb"]
    counts: dict[str, int] = {}
    for verb in seen.values():
        counts[verb] = counts.get(verb, 0) + 1
    return counts


def metric_total(agents: list[Agent], verb: str) -> int:
    total = 0.0
    for agent in agents:
        for metric in agent.metrics.requests.collect():
            total += sum(s.value for s in metric.samples
                         if s.name.endswith("_total") and s.labels["verb"] == verb)
    return int(total)


def nodes_at_generation(plane: kubeharness.ControlPlane, names: set[str], generation: int) -> int:
    with plane.admin_client() as api:
        response = api.call_api("/api/v1/nodes", "GET", auth_settings=["BearerToken"],
                                _preload_content=False)
        items = json.loads(response.data)["items"]
    return sum(1 for node in items if node["metadata"]["name"] in names
               and (node["metadata"].get("labels") or {}).get(CHANGING) == str(generation))


def wait_all(plane: kubeharness.ControlPlane, names: set[str], generation: int,
             timeout: float) -> float:
    started = time.monotonic()
    while nodes_at_generation(plane, names, generation) < len(names):
        if time.monotonic() - started > timeout:
            raise SystemExit(f"not converged after {timeout} s")
        time.sleep(0.25)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--interval", type=float, default=30.0, help="pass interval, seconds")
    parser.add_argument("--window", type=float, default=120.0,
                        help="steady-state measuring window, seconds")
    parser.add_argument("--watch-timeout", type=float, default=3600.0,
                        help="server-side watch timeout (production: 3600 s, jittered 10%%)")
    args = parser.parse_args()

    with kubeharness.control_plane() as plane:
        with plane.admin_client() as api:
            for part in ("namespace.yaml", "rbac.yaml"):
                for document in yaml.safe_load_all((REPO / "deploy/base" / part).read_text()):
                    utils.create_from_dict(api, document)
            core = client.CoreV1Api(api)
            names = [f"fleet-{i:04d}" for i in range(args.agents)]
            for name in names:
                core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
                    name=name, labels={"kubernetes.io/hostname": name})))
        time.sleep(1)  # RBAC caches
        token = plane.service_account_token("nodefeatures", "nodefeatures")
        generation = [1]
        agents = []
        root = Host(root=HostRoot(REPO / "bench"))
        for index, name in enumerate(names):
            sources = {"fleet": FleetSource(index, generation)}
            config = build({}, sources)

            def discover(s: dict[str, Source] = sources, c: Any = config) -> Any:
                return run_pass(root, s, c)

            # No admission policy on the bench server: the agents waive the proof (with
            # it, each would add one dry-run probe per 5 min).
            options = Options(node=name, interval=args.interval,
                              watch_timeout=args.watch_timeout, allow_unconfined=True)
            agents.append(Agent(NodeApi(plane.client_for_token(token), name), discover,
                                ["fleet"], options, rng=random.Random(index)))
        threads = [threading.Thread(target=a.run, daemon=True) for a in agents]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        while not all(a.ready for a in agents):
            time.sleep(0.1)
        startup = time.monotonic() - started
        print(f"{args.agents} agents: every node labelled {startup:.1f} s after start "
              f"({sum(a.writes for a in agents)} patches)")

        time.sleep(3)  # let the audit log settle
        before, gets, patches = agent_requests(plane), metric_total(agents, "get"), \
            metric_total(agents, "patch")
        time.sleep(args.window)
        after = agent_requests(plane)
        extra = {verb: after.get(verb, 0) - before.get(verb, 0) for verb in after}
        total = sum(extra.values())
        per_node_hour = total / args.agents * 3600 / args.window
        print(f"steady state over {args.window:.0f} s: {total} audited node requests by all "
              f"agents {extra or '{}'} = {per_node_hour:.2f} per node-hour; agent counters: "
              f"get +{metric_total(agents, 'get') - gets}, "
              f"patch +{metric_total(agents, 'patch') - patches}")
        if args.watch_timeout != 3600:
            print(f"  (watch timeout {args.watch_timeout:.0f} s; with the default 3600 s that is "
                  f"{per_node_hour * args.watch_timeout / 3600:.2f} per node-hour)")

        node_set = set(names)
        generation[0] = 2
        for agent in agents:
            agent.poke()
        herd = wait_all(plane, node_set, 2, 300)
        conflicts = sum(int(a.metrics.requests.labels("patch", "409")._value.get())
                        for a in agents)
        print(f"label change seen by all {args.agents} agents in the same instant: every node "
              f"updated within {herd:.1f} s ({conflicts} conflicts)")

        generation[0] = 3
        natural = wait_all(plane, node_set, 3, args.interval * 2 + 60)
        print(f"label change found on each agent's own jittered pass (interval "
              f"{args.interval:.0f} s +-10%): every node updated within {natural:.1f} s")

        for agent in agents:
            agent.stop()
        for thread in threads:
            thread.join(10)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"bench process peak RSS {rss:.0f} MiB for {args.agents} agents "
              f"({rss / args.agents:.2f} MiB each, shared interpreter)")


if __name__ == "__main__":
    main()
