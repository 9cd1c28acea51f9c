"""Time the cpu source: a cold first pass in a fresh process, then warm passes.

    .venv/bin/python bench/source_cpu.py [--passes N] [--root /]

Cold: import of the source, building the CPUID executor, decoding, first labels.
Warm: CPU time (time.process_time) per pass in a running process, which is what the
agent pays every interval: the source alone, and through run_source with the central
label validation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def cold(root: str) -> None:
    started = time.perf_counter()
    from nodefeatures.discovery.config import build
    from nodefeatures.discovery.hostroot import HostRoot
    from nodefeatures.discovery.run import run_source
    from nodefeatures.discovery.source import Host

    core = time.perf_counter()
    from nodefeatures.sources.cpu import CpuSource

    imported = time.perf_counter()
    cpu = time.process_time()
    source = CpuSource()
    result = run_source(Host(root=HostRoot(root)), source, build({}, {"cpu": source}))
    print(json.dumps({
        "core_import_ms": (core - started) * 1000,
        "cpu_import_ms": (imported - core) * 1000,
        "first_pass_wall_ms": (time.perf_counter() - imported) * 1000,
        "first_pass_cpu_ms": (time.process_time() - cpu) * 1000,
        "labels": len(result.labels),
        "warnings": result.warnings,
    }))


def warm(root: str, passes: int) -> dict[str, float]:
    from nodefeatures.discovery.config import build
    from nodefeatures.discovery.hostroot import HostRoot
    from nodefeatures.discovery.run import run_source
    from nodefeatures.discovery.source import Context, Host
    from nodefeatures.sources.cpu import CpuSource

    source = CpuSource()
    config = build({}, {"cpu": source})
    host = Host(root=HostRoot(root))
    run_source(host, source, config)  # the first pass pays for CPUID; not counted
    options = config.options("cpu")

    def own() -> None:
        source.labels(source.discover(Context(host, options, "cpu")), options)

    def full() -> None:
        run_source(host, source, config)

    timings = {}
    for name, step in (("source_us", own), ("run_source_us", full)):
        started = time.process_time()
        for _ in range(passes):
            step()
        timings[name] = (time.process_time() - started) / passes * 1e6
    return {"passes": passes, **timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=5000)
    parser.add_argument("--root", default="/")
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold:
        cold(args.root)
        return
    runs = [json.loads(subprocess.run([sys.executable, __file__, "--cold", "--root", args.root],
                                      check=True, capture_output=True, text=True).stdout)
            for _ in range(5)]
    best = min(runs, key=lambda r: r["cpu_import_ms"] + r["first_pass_wall_ms"])
    print(f"cold (best of 5 fresh processes): importing the cpu source "
          f"{best['cpu_import_ms']:.2f} ms, first pass {best['first_pass_wall_ms']:.2f} ms "
          f"wall / {best['first_pass_cpu_ms']:.2f} ms CPU (executor, CPUID, decode, labels); "
          f"core imports before it {best['core_import_ms']:.1f} ms; {best['labels']} labels")
    if best["warnings"]:
        print(f"warnings: {best['warnings']}")
    result = warm(args.root, args.passes)
    print(f"warm pass, CPU per pass over {result['passes']} passes (time.process_time): "
          f"{result['source_us']:.1f} us in the source (discover + labels), "
          f"{result['run_source_us']:.1f} us through run_source (+ central label checks)")

if __name__ == "__main__":
    main()
