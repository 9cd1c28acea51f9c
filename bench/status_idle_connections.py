"""The status server under idle connections: RSS, threads and probe latency of `run`.

Starts `nodefeatures run --output-file` (no cluster needed; it serves the same /metrics,
/healthz and /readyz as the node agent) with the `system` source on a tiny host root,
then opens N connections that never send a byte and holds them while it probes
/healthz and /readyz. Reports the process's RSS and thread count before and while the
connections are held, and the probes' latency. Not a timed test.

    .venv/bin/python bench/status_idle_connections.py [--connections 5000]
"""

from __future__ import annotations

import argparse
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def status_field(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1))  # type: ignore[union-attr]


def probe(port: int, path: str) -> tuple[int, float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started = time.monotonic()
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            code = response.status
    except urllib.error.HTTPError as error:
        code = error.code
    except OSError:
        code = 0
    return code, time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.connections + 256)),
                                                hard))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "host"
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "os-release").write_text("ID=debian\nVERSION_ID=12\n")
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "nodefeatures", "run", "--root", str(root), "--source",
             "system", "--output-file", str(Path(scratch) / "out" / "nodefeatures"),
             "--interval", "60s", "--metrics-port", str(port),
             "--metrics-address", "127.0.0.1"],
            stderr=subprocess.DEVNULL)
        held: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 20
            while probe(port, "/healthz")[0] != 200:
                if time.monotonic() > deadline:
                    sys.exit("the server did not come up")
                time.sleep(0.1)
            time.sleep(1)
            before = status_field(process.pid, "VmRSS") / 1024
            threads_before = status_field(process.pid, "Threads")
            refused = 0
            for _ in range(args.connections):
                sock = socket.socket()
                sock.settimeout(5)
                try:
                    sock.connect(("127.0.0.1", port))
                except OSError:
                    refused += 1
                    sock.close()
                    continue
                held.append(sock)
            time.sleep(2)
            during = status_field(process.pid, "VmRSS") / 1024
            peak = status_field(process.pid, "VmHWM") / 1024
            threads = status_field(process.pid, "Threads")
            latencies = {path: probe(port, path) for path in ("/healthz", "/readyz", "/metrics")}
        finally:
            for sock in held:
                sock.close()
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:  # a thread per connection can take a while
                process.kill()
                process.wait()
    print(f"idle connections opened: {len(held)} (connect failed: {refused})")
    print(f"RSS before: {before:.1f} MiB, while held: {during:.1f} MiB, peak {peak:.1f} MiB")
    print(f"threads before: {threads_before}, while held: {threads}")
    for path, (code, seconds) in latencies.items():
        print(f"GET {path} while held: {code} in {seconds * 1000:.1f} ms")


if __name__ == "__main__":
    main()
