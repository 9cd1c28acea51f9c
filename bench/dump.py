"""Cold `nodefeatures dump --format json` wall time, CPU time and peak RSS, and warm pass CPU.

CPU time (user + system of the child) is printed beside the wall time because it is what
a busy machine disturbs least: compare it when other work shares the cores.

Budgets: cold median <= 200 ms and peak RSS <= 40 MiB on a 2-core machine; one discovery
pass in a running process <= 5 ms of CPU.

    .venv/bin/python bench/dump.py [--runs 21] [--fixture DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def cold(argv: list[str], runs: int) -> tuple[float, float, float]:
    """Median wall seconds, median CPU seconds and max peak RSS (MiB) of `runs` processes."""
    walls: list[float] = []
    cpus: list[float] = []
    peak = 0.0
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - started)
        cpus.append(usage.ru_utime + usage.ru_stime)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(argv)} failed")
        peak = max(peak, usage.ru_maxrss / 1024)
    return statistics.median(walls), statistics.median(cpus), peak


def warm(fixture: str | None, passes: int = 200) -> float:
    """Median CPU milliseconds of one discovery pass in an already-running process."""
    from nodefeatures.discovery.config import build
    from nodefeatures.discovery.fixture import replay_host
    from nodefeatures.discovery.hostroot import HostRoot
    from nodefeatures.discovery.run import load_sources, run_pass
    from nodefeatures.discovery.source import Host

    sources, _ = load_sources()
    config = build({}, sources)
    host = replay_host(fixture) if fixture else Host(root=HostRoot("/"))
    run_pass(host, sources, config)  # first pass imports and caches what a process keeps
    samples = []
    for _ in range(passes):
        started = time.process_time()
        run_pass(host, sources, config)
        samples.append(time.process_time() - started)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--fixture", default=None)
    args = parser.parse_args()
    exe = shutil.which("nodefeatures", path=str(Path(sys.executable).parent)) or "nodefeatures"
    dump = [exe, "dump", "--format", "json"]
    if args.fixture:
        dump += ["--fixture", args.fixture]
    base_wall, base_cpu, base_rss = cold([sys.executable, "-c", "pass"], args.runs)
    wall, cpu, rss = cold(dump, args.runs)
    print(f"python -c pass      median {base_wall * 1000:6.1f} ms  CPU {base_cpu * 1000:6.1f} ms"
          f"  peak RSS {base_rss:5.1f} MiB")
    print(f"{' '.join(dump[1:]):19} median {wall * 1000:6.1f} ms  CPU {cpu * 1000:6.1f} ms"
          f"  peak RSS {rss:5.1f} MiB  ({wall / base_wall:.1f}x python -c pass)"
          f"   budget 200 ms / 40 MiB")
    print(f"warm discovery pass median {warm(args.fixture):.2f} ms CPU   budget 5 ms")


if __name__ == "__main__":
    main()
