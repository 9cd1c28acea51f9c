"""Observability for `nodefeatures run`: Prometheus metrics, /healthz, /readyz, JSON logs."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nodefeatures import __version__

_PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The agent's metrics in a registry of its own (several agents may share a process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.build_info = Gauge("nodefeatures_build_info", "Always 1; the version as a label",
                                ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        self.passes = Counter("nodefeatures_passes", "Reconcile passes by result (ok, error)",
                              ["result"], registry=r)
        self.pass_seconds = Histogram(
            "nodefeatures_pass_duration_seconds",
            "Wall time of one pass: discovery, reconcile and any write", buckets=_PASS_BUCKETS,
            registry=r)
        self.requests = Counter(
            "nodefeatures_api_requests",
            "API requests by verb (get, watch, patch, event) and outcome: the HTTP status, "
            "or connection/timeout/tls when no response came", ["verb", "code"], registry=r)
        self.label_changes = Counter(
            "nodefeatures_label_changes", "Labels written by action (add, change, remove, adopt)",
            ["action"], registry=r)
        self.labels_published = Gauge(
            "nodefeatures_labels_published", "Labels this agent owns on its Node", registry=r)
        self.conflicts = Gauge(
            "nodefeatures_label_conflicts",
            "Discovered keys another writer holds with a different value (left alone)",
            registry=r)
        self.last_success = Gauge(
            "nodefeatures_last_success_timestamp_seconds",
            "Unix time of the last pass that left the Node matching discovery", registry=r)
        self.source_ok = Gauge(
            "nodefeatures_source_ok", "1 when the source's last run was complete and error-free",
            ["source"], registry=r)
        self.source_warnings = Gauge(
            "nodefeatures_source_warnings",
            "Warnings of the source's last run: unreadable inputs, invalid labels dropped",
            ["source"], registry=r)
        self.ledger_restores = Counter(
            "nodefeatures_ledger_restores",
            "Times another writer deleted or changed the ledger annotation and the agent "
            "restored ownership from what it had written", registry=r)
        self._nvml: Any = None
        self._gauge = Gauge

    def request(self, verb: str, code: str) -> None:
        self.requests.labels(verb, code).inc()

    def sources(self, states: Iterable[tuple[str, bool]]) -> None:
        for name, ok in states:
            self.source_ok.labels(name).set(1 if ok else 0)

    def nvml_initialized(self, state: bool | None) -> None:
        """Exported only once a source reports NVML's state (the nvidia source may be absent)."""
        if state is None:
            return
        if self._nvml is None:
            self._nvml = self._gauge("nodefeatures_nvml_initialized",
                                     "1 when NVML initialised in the last nvidia pass",
                                     registry=self.registry)
        self._nvml.set(1 if state else 0)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class StatusServer:
    """Serves /metrics, /healthz (the loop is alive) and /readyz (first pass succeeded)."""

    def __init__(self, metrics: Metrics, alive: Callable[[], bool], ready: Callable[[], bool],
                 port: int, address: str = "") -> None:
        handler = _handler(metrics, alive, ready)
        self.server = ThreadingHTTPServer((address, port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        name="status-server", daemon=True)

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(metrics: Metrics, alive: Callable[[], bool],
             ready: Callable[[], bool]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/healthz":
                ok = alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"loop stalled\n")
            elif path == "/readyz":
                ok = ready()
                self._send(200 if ok else 503, b"ok\n" if ok else b"no successful pass yet\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the log

    return Handler


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra={...}` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, sort_keys=False)
