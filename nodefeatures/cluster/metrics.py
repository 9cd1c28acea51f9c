"""Observability for `nodefeatures run`: Prometheus metrics, /healthz, /readyz, JSON logs."""

from __future__ import annotations

import contextlib
import json
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from nodefeatures import __version__

Check = Callable[[], bool | str]

_PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _registered_when_set(gauge: Any, registry: Any) -> Any:
    """A Gauge class whose instance joins `registry` on its first `set`."""
    joining = threading.Lock()  # the loop and the watch thread may both set it first

    class Announced(gauge):  # type: ignore[misc, valid-type]
        _joined = False

        def set(self, value: float) -> None:
            super().set(value)
            with joining:
                if not self._joined:
                    self._joined = True
                    registry.register(self)

    return Announced


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
        self.outputs_published = Gauge(
            "nodefeatures_rule_outputs_published",
            "NodeFeatureRule annotations, taints and extended resources this agent owns on "
            "its Node, by kind", ["kind"], registry=r)
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
        self.instance_missing = Gauge(
            "nodefeatures_instance_missing",
            "1 while the Node has a NVIDIA PCI label but the expected agent instance (the GPU "
            "agent) has written no ledger there for longer than its grace period",
            ["instance"], registry=r)
        # Exported from the first probe on: an agent that never writes to a Node has no
        # confinement, and a 0 would read as one that refuses to.
        self.confined = _registered_when_set(Gauge, r)(
            "nodefeatures_confined",
            "1 while writes are allowed: the own-node admission policy denied the last "
            "confinement probe (or --allow-unconfined); 0 while the agent refuses to write",
            registry=None)
        self.confinement_checks = Counter(
            "nodefeatures_confinement_checks",
            "Confinement probes by outcome: confined (denied by the policy), unconfined "
            "(accepted), refused (denied by something else), unanswered (no answer)",
            ["result"], registry=r)
        # Set by LiveConfig (every `run` has one); defined here so that everything the
        # dashboard and the alert rules may query is in this one registry.
        self.config_reloads = Counter(
            "nodefeatures_config_reloads",
            "Config file changes by result: applied, or rejected (the previous "
            "configuration stays in force)", ["result"], registry=r)
        self.config_rejected = Gauge(
            "nodefeatures_config_rejected",
            "1 while the config files on disk are rejected and an earlier configuration "
            "is in force", registry=r)
        # Exported (`export`) by nfdapi.ClusterObjects and namespaces.LabelNamespacesSetting
        # when `run` follows them: an agent without NFD's API has no such objects.
        self.nfd_objects = Gauge(
            "nodefeatures_nfd_objects",
            "NodeFeatureRule and NodeFeature objects of the last pass, by kind and state: "
            "ok, failed (its labels are kept), unknown (1 when the kind cannot be listed)",
            ["kind", "state"], registry=None)
        self.label_namespaces_rejected = Gauge(
            "nodefeatures_label_namespaces_rejected",
            "1 while the label namespaces ConfigMap holds a version the agent rejected (an "
            "earlier one stays in force, or nothing is written)", registry=None)
        self._exported: set[int] = set()
        self.ready = Gauge(
            "nodefeatures_ready",
            "1 while /readyz answers 200: a pass left the Node matching discovery and "
            "writes are allowed; read at each scrape", registry=r)
        self._nvml: Any = None
        self._gauge = Gauge

    def export(self, metric: Any) -> Any:
        """Add one of the metrics defined without a registry to this one (once)."""
        if id(metric) not in self._exported:
            self._exported.add(id(metric))
            self.registry.register(metric)
        return metric

    def follow_readiness(self, ready: Check) -> None:
        """`nodefeatures_ready` asks `ready` at each scrape; a check that raises reads 0."""
        def value() -> float:
            try:
                return 1.0 if ready() is True else 0.0
            except Exception:  # the scrape must still answer; /readyz logs the error
                return 0.0

        self.ready.set_function(value)

    def request(self, verb: str, code: str) -> None:
        self.requests.labels(verb, code).inc()

    def sources(self, states: Iterable[tuple[str, bool]]) -> None:
        for name, ok in states:
            self.source_ok.labels(name).set(1 if ok else 0)

    def nvml_initialized(self, state: bool | None) -> None:
        """Exported only once a source reports NVML's state (the nvidia source may be absent)."""
        if state is None:
            if self._nvml is not None:
                # No longer applies (the node's NVML went away on a Jetson): not 0, which
                # would read as a failure, and not the last value, which would be stale.
                self.registry.unregister(self._nvml)
                self._nvml = None
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
    """Serves /metrics, /healthz (the loop is alive) and /readyz (first pass succeeded).

    `alive` and `ready` return True when all is well, else False or a string saying what
    is wrong, which becomes the 503 body.

    One thread serves every connection through a selector, so idle or slow clients cost
    a socket and a small buffer each, never a thread. At most `max_connections` are open
    at once: a new one past the cap closes the oldest, so a client holding many idle
    connections cannot lock out the kubelet's probes. A connection gets `timeout`
    seconds to send its request and read the answer, then it is closed. Every response
    closes its connection (HTTP/1.1 `Connection: close`).
    """

    def __init__(self, metrics: Metrics, alive: Check, ready: Check, port: int,
                 address: str = "", *, max_connections: int = 64,
                 timeout: float = 10.0) -> None:
        self.metrics = metrics
        self.alive = alive
        self.ready = ready
        metrics.follow_readiness(ready)
        self.max_connections = max(1, max_connections)
        self.timeout = timeout
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((address, port))
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        # Insertion order is accept order: the first entry is the oldest connection.
        self._connections: dict[socket.socket, _Connection] = {}
        self._waker_r, self._waker_w = socket.socketpair()
        self._waker_r.setblocking(False)
        self._selector.register(self._waker_r, selectors.EVENT_READ, "wake")
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="status-server", daemon=True)

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._waker_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(5)
        for connection in list(self._connections):
            self._close(connection)
        for sock in (self._listener, self._waker_r, self._waker_w):
            with contextlib.suppress(Exception):
                self._selector.unregister(sock)
            sock.close()
        self._selector.close()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                self._round()
            except Exception:  # never let one bad connection end the server
                logging.getLogger(__name__).exception("status server error")
                time.sleep(0.1)

    def _round(self) -> None:
        now = time.monotonic()
        wait = min((c.deadline for c in self._connections.values()), default=now + 1.0) - now
        for key, mask in self._selector.select(max(0.0, min(wait, 1.0))):
            if key.data == "wake":
                with contextlib.suppress(OSError):
                    self._waker_r.recv(64)
            elif key.data is None:
                self._accept()
            else:
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock not in self._connections:
                    continue  # shed by an accept burst earlier in this round
                if mask & selectors.EVENT_READ:
                    self._read(sock)
                elif mask & selectors.EVENT_WRITE:
                    self._write(sock)
        now = time.monotonic()
        for sock, connection in list(self._connections.items()):
            if connection.deadline <= now:
                self._close(sock)

    def _accept(self) -> None:
        for _ in range(self.max_connections):  # a burst is taken in turns with the rest
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, say: shed the oldest and try later
                if self._connections:
                    self._close(next(iter(self._connections)))
                return
            while len(self._connections) >= self.max_connections:
                self._close(next(iter(self._connections)))
            sock.setblocking(False)
            self._connections[sock] = _Connection(time.monotonic() + self.timeout)
            self._selector.register(sock, selectors.EVENT_READ, "conn")

    def _read(self, sock: socket.socket) -> None:
        connection = self._connections[sock]
        try:
            chunk = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(sock)
            return
        connection.inbox += chunk
        head, found, _ = connection.inbox.partition(b"\r\n\r\n")
        if not found:
            head, found, _ = connection.inbox.partition(b"\n\n")
        if not found:
            if len(connection.inbox) > _MAX_REQUEST:
                self._respond(sock, 431, b"request header too large\n")
            return
        try:
            answer = self._answer(head)
        except Exception:  # a failing check or render: say so, keep serving
            logging.getLogger(__name__).exception("status request failed")
            answer = (500, b"internal error\n", "text/plain")
        self._respond(sock, *answer)

    def _answer(self, head: bytes) -> tuple[int, bytes, str]:
        parts = head.split(b"\n", 1)[0].strip().split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return 400, b"bad request\n", "text/plain"
        method, target = parts[0], parts[1].decode("latin-1")
        if method not in (b"GET", b"HEAD"):
            return 405, b"method not allowed\n", "text/plain"
        path = target.split("?", 1)[0]
        if path == "/metrics":
            return 200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
        if path == "/healthz":
            return _verdict(self.alive(), b"loop stalled\n")
        if path == "/readyz":
            return _verdict(self.ready(), b"no successful pass yet\n")
        return 404, b"not found\n", "text/plain"

    def _respond(self, sock: socket.socket, status: int, body: bytes,
                 kind: str = "text/plain") -> None:
        connection = self._connections[sock]
        head_only = connection.inbox.startswith(b"HEAD ")
        reason = HTTPStatus(status).phrase
        header = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        connection.outbox = header.encode("latin-1") + (b"" if head_only else body)
        connection.inbox = b""
        self._selector.modify(sock, selectors.EVENT_WRITE, "conn")
        self._write(sock)

    def _write(self, sock: socket.socket) -> None:
        connection = self._connections[sock]
        try:
            sent = sock.send(connection.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(sock)
            return
        connection.outbox = connection.outbox[sent:]
        if not connection.outbox:
            self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        self._connections.pop(sock, None)
        with contextlib.suppress(Exception):
            self._selector.unregister(sock)
        with contextlib.suppress(OSError):
            sock.close()


_MAX_REQUEST = 8192


class _Connection:
    __slots__ = ("deadline", "inbox", "outbox")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.inbox = b""
        self.outbox = b""


def _verdict(result: bool | str, default: bytes) -> tuple[int, bytes, str]:
    if result is True:
        return 200, b"ok\n", "text/plain"
    body = result.encode("utf-8", "replace") if isinstance(result, str) and result else default
    return 503, body, "text/plain; charset=utf-8"


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
