"""Cold start of the command line: `nodefeatures --help` and `nodefeatures --version`
wall time, beside a bare `python -c pass`, and what the CLI imports before it runs a
command.

The aim: the command line itself adds at most 60 ms to the interpreter's own start on a
2-core machine (a command then pays for what it uses: `dump` its sources, `run` the API
client). `--help` must not import the cluster side's heavy modules (the API client,
reconcile, the agent); it reads their defaults from light modules.

    .venv/bin/python bench/startup.py [--runs 21]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def median_ms(argv: list[str], runs: int) -> float:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls) * 1000


def imported(argv: list[str]) -> list[str]:
    """The nodefeatures.cluster modules `argv` (a `python -m nodefeatures` call) imports."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "nodefeatures", *argv],
                          capture_output=True, text=True, check=True)
    names = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
             if line.startswith("import time:")]
    return sorted(n for n in names if n.startswith("nodefeatures.cluster."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    bare = median_ms([sys.executable, "-c", "pass"], args.runs)
    print(f"python -c pass           median {bare:6.1f} ms")
    for argv in (["--help"], ["--version"], ["run", "--help"]):
        wall = median_ms([str(BIN / "nodefeatures"), *argv], args.runs)
        print(f"nodefeatures {' '.join(argv):11} median {wall:6.1f} ms  "
              f"(+{wall - bare:5.1f} ms over python; aim +60 ms)")
    print("cluster modules --help imports:", ", ".join(imported(["--help"])) or "none")


if __name__ == "__main__":
    main()
