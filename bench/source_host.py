"""Per-pass CPU time of the kernel, memory, storage and network sources in a warm process.

    .venv/bin/python bench/source_host.py [--root /] [--passes 2000]

Each source runs as the agent runs it (run_source: discover, label, validate) against
the live host, after a few warm-up passes so caches and imports are settled.
"""

from __future__ import annotations

import argparse
import statistics
import time

from nodefeatures.discovery.config import build
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.run import run_source
from nodefeatures.discovery.source import Host
from nodefeatures.sources.kernel import KernelSource
from nodefeatures.sources.memory import MemorySource
from nodefeatures.sources.network import NetworkSource
from nodefeatures.sources.storage import StorageSource

WARM_UP = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/")
    parser.add_argument("--passes", type=int, default=2000)
    args = parser.parse_args()

    sources = {s.name: s for s in (KernelSource(), MemorySource(), StorageSource(),
                                   NetworkSource())}
    config = build({}, sources)
    host = Host(root=HostRoot(args.root))
    print(f"{'source':<10} {'labels':>6} {'mean us':>9} {'median us':>10} {'p99 us':>8}")
    total = 0.0
    for name, source in sources.items():
        for _ in range(WARM_UP):
            run_source(host, source, config)
        samples = []
        for _ in range(args.passes):
            started = time.thread_time_ns()
            result = run_source(host, source, config)
            samples.append((time.thread_time_ns() - started) / 1000)
        samples.sort()
        mean = statistics.fmean(samples)
        total += mean
        p99 = samples[int(len(samples) * 0.99) - 1]
        print(f"{name:<10} {len(result.labels):>6} {mean:>9.1f} "
              f"{statistics.median(samples):>10.1f} {p99:>8.1f}")
    print(f"{'all four':<10} {'':>6} {total:>9.1f}")


if __name__ == "__main__":
    main()
