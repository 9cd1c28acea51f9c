"""Cost of the nvidia source: one warm pass per GPU fixture, and cold `dump --fixture`.

    .venv/bin/python bench/source_nvidia.py [--passes 300] [--runs 15]

Warm: one source instance replays a fixture pass after pass, as the agent runs it
(run_source: PCI scan, NVML on the worker thread through the real pynvml and the
replayed library, labels, validation). CPU is process time, so the worker thread's
share counts. Targets: <= 5 ms per pass; cold dump <= the 200 ms host budget + 30 ms.
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

from nodefeatures.discovery.config import build
from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.run import run_source
from nodefeatures.sources.nvidia import NvidiaSource

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
WARM = [("dgx-h100", "none"), ("dgx-b200", "none"), ("dgx-a100-mig-mixed", "none"),
        ("dgx-a100-mig-mixed", "mixed"), ("dgx-a100-mig-single", "single"),
        ("mixed-gpu-models", "none"),
        # no NVIDIA PCI function: Tegra from host files (Orin without NVML, Thor with a
        # partial one) and WSL2 through NVML
        ("jetson-agx-orin", "none"), ("jetson-agx-thor", "none"), ("wsl2-rtx4090", "none"),
        ("cpu-only-rocky9", "none")]
COLD = [("dgx-h100", "none"), ("dgx-a100-mig-mixed", "mixed"), ("dgx-b200", "none"),
        ("jetson-agx-orin", "none"), ("jetson-agx-thor", "none"), ("wsl2-rtx4090", "none"),
        ("cpu-only-rocky9", "none")]


def warm(name: str, strategy: str, passes: int) -> tuple[float, float, int]:
    """Median CPU ms, median wall ms and label count of one pass."""
    source = NvidiaSource()
    config = build({"sources": {"nvidia": {"migStrategy": strategy}}}, {"nvidia": source})
    host = replay_host(FIXTURES / name)
    for _ in range(20):
        result = run_source(host, source, config)
    assert result.error is None and result.complete, result.warnings
    cpu, wall = [], []
    for _ in range(passes):
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        run_source(host, source, config)
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started_wall)
    return statistics.median(cpu) * 1000, statistics.median(wall) * 1000, len(result.labels)


def cold(argv: list[str], runs: int) -> float:
    """Median wall ms of `runs` fresh processes."""
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              check=False)
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed")
    return statistics.median(walls) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=300)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    print(f"warm pass of the nvidia source ({os.cpu_count()} CPUs), median of {args.passes}")
    print(f"  {'fixture':<22} {'strategy':<8} {'labels':>6} {'CPU ms':>7} {'wall ms':>8}")
    for name, strategy in WARM:
        cpu, wall, count = warm(name, strategy, args.passes)
        print(f"  {name:<22} {strategy:<8} {count:>6} {cpu:>7.2f} {wall:>8.2f}")
    exe = shutil.which("nodefeatures", path=str(Path(sys.executable).parent)) or "nodefeatures"
    print(f"cold process wall time, median of {args.runs}")
    print(f"  {'python -c pass':<48} {cold([sys.executable, '-c', 'pass'], args.runs):7.1f} ms")
    for name, strategy in COLD:
        argv = [exe, "dump", "--format", "json", "--fixture", str(FIXTURES / name),
                "--mig-strategy", strategy]
        label = f"dump --fixture {name} --mig-strategy {strategy}"
        print(f"  {label:<48} {cold(argv, args.runs):7.1f} ms")


if __name__ == "__main__":
    main()
