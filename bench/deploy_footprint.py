"""Memory and CPU of the agent's building blocks, to size the DaemonSet's resources.

    .venv/bin/python bench/deploy_footprint.py

Each line runs in a fresh interpreter and reports its peak RSS and CPU time; the
agent's own number is `nodefeatures run` once it is up, which this cannot start
without a cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys

CASES = {
    "bare interpreter": "pass",
    "discovery pass (all installed sources)": (
        "from nodefeatures.cli import main; import sys; sys.argv=['nodefeatures','dump',"
        "'--format','json']\ntry: main()\nexcept SystemExit: pass"),
    "discovery + prometheus_client + urllib3": (
        "import prometheus_client, urllib3, http.server\n"
        "from nodefeatures.discovery.run import load_sources, run_pass"),
    "... + kubernetes.client (all API models)": (
        "import prometheus_client, urllib3, kubernetes.client\n"
        "from nodefeatures.discovery.run import load_sources, run_pass"),
}


def measure(code: str) -> tuple[float, float]:
    """Peak RSS (MiB) and CPU seconds of one child, from its own rusage."""
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"case failed: {code!r}")
    return usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def main() -> None:
    print(f"{'what':45} {'peak RSS MiB':>12} {'CPU s':>7}")
    for name, code in CASES.items():
        rss, cpu = measure(code)
        print(f"{name:45} {rss:12.1f} {cpu:7.3f}")


if __name__ == "__main__":
    main()
