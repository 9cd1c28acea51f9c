"""The one module that talks to the cluster: get, watch and patch our own Node, post Events.

It uses the official `kubernetes` client (configuration loading, auth, TLS and its REST
layer) but keeps responses as plain JSON: deserialising every watch event into generated
models costs CPU for nothing, and importing the 769 generated models costs ~30 MiB of
RSS. `_client_modules` therefore imports only the client modules the agent needs and
defers the package `__init__`s, which still run in full the first time anything else
asks for them (so code that later uses `kubernetes.client.CoreV1Api` keeps working).
Nothing else in the project imports `kubernetes`, and this module imports it lazily, so
`nodefeatures dump` never loads it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import stat
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from nodefeatures import __version__
from nodefeatures.cluster.reconcile import MERGE_PATCH

log = logging.getLogger(__name__)

# (connect, read) seconds. A watch sees a bookmark about once a minute, so a silent
# connection for three minutes is a dead one.
REQUEST_TIMEOUT = (5.0, 15.0)
WATCH_READ_TIMEOUT = 180.0
FIELD_MANAGER = "nodefeatures"
# The confinement probe's label: outside every managed prefix, so the own-node policy
# must refuse it. It is only ever sent with dryRun=All.
PROBE_LABEL = "probe.nodefeatures.dev/confinement"
PROBE_VALUE = "must-be-denied"
EVENT_NAMESPACE = "default"

_DEFERRED = ("kubernetes", "kubernetes.client", "kubernetes.client.models", "kubernetes.config")
_modules: types.SimpleNamespace | None = None


class KubeError(Exception):
    """A request that failed; `code` is the HTTP status, None when no response came."""

    def __init__(self, code: int | None, reason: str, message: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(f"{code or reason}: {message or reason}")
        self.code = code
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def kind(self) -> str:
        """A short label for metrics: the status code, or why no response came."""
        return str(self.code) if self.code is not None else self.reason


def _defer_package_inits() -> None:
    """Register the client's packages without running their heavy `__init__` modules."""
    for name in _DEFERRED:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot find {name}")
        module = importlib.util.module_from_spec(spec)

        def complete(attr: str, module: types.ModuleType = module) -> Any:
            # `from package import submodule` asks the package first: import just that.
            if not attr.startswith("__") and importlib.util.find_spec(
                    f"{module.__name__}.{attr}") is not None:
                return importlib.import_module(f"{module.__name__}.{attr}")
            # First use of a name only the package __init__ defines: run it now, once.
            module.__dict__.pop("__getattr__", None)
            module.__spec__.loader.exec_module(module)  # type: ignore[union-attr]
            return getattr(module, attr)

        module.__getattr__ = complete  # type: ignore[method-assign]
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def _client_modules() -> types.SimpleNamespace:
    """The parts of the kubernetes client the agent uses, imported as lightly as possible."""
    global _modules
    if _modules is not None:
        return _modules
    if "kubernetes" not in sys.modules:
        _defer_package_inits()
    from kubernetes.client import api_client, configuration, exceptions, rest

    client_package = sys.modules["kubernetes.client"]
    if "ApiClient" not in client_package.__dict__:
        # kubernetes.config imports these two names from the (deferred) package.
        client_package.ApiClient = api_client.ApiClient  # type: ignore[attr-defined]
        client_package.Configuration = configuration.Configuration  # type: ignore[attr-defined]
    from kubernetes.config import config_exception, incluster_config, kube_config

    _modules = types.SimpleNamespace(
        ApiClient=api_client.ApiClient,
        Configuration=configuration.Configuration,
        ApiException=exceptions.ApiException,
        rest=rest,
        ConfigException=config_exception.ConfigException,
        incluster=incluster_config,
        kube_config=kube_config,
    )
    return _modules


def connect(kubeconfig: str | None = None) -> Any:
    """An ApiClient: in-cluster when running in a pod and no kubeconfig is given, else
    the kubeconfig (`--kubeconfig`, then $KUBECONFIG, then ~/.kube/config)."""
    k = _client_modules()
    import urllib3

    config = k.Configuration()
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            k.incluster.load_incluster_config(client_configuration=config)
        else:
            _check_kubeconfig_files(kubeconfig)
            k.kube_config.load_kube_config(
                config_file=kubeconfig, client_configuration=config, persist_config=False
            )
    except (k.ConfigException, OSError, ValueError) as exc:
        raise KubeError(None, "config", f"cannot load cluster credentials: {exc}") from exc
    except Exception as exc:
        # The client's loader assumes a well-formed file: YAML errors, `clusters: 5`
        # (TypeError) and the like come out raw. Any of them means unusable credentials.
        detail = " ".join(str(exc).split())[:300]
        raise KubeError(None, "config", f"cannot load cluster credentials: malformed "
                        f"kubeconfig ({type(exc).__name__}: {detail})") from exc
    # One quick reconnect for a pooled connection the server closed; every other retry
    # is the agent's own, with backoff, so the request count stays honest.
    config.retries = urllib3.Retry(total=1, connect=1, read=0, redirect=0, status=0, other=0)
    # The pool warns before its one retry; the failure itself is reported by the caller,
    # once, in the project's own words.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    client = k.ApiClient(config)
    client.user_agent = f"nodefeatures/{__version__}"
    return client


# A kubeconfig with many clusters and embedded certificates is still a few MiB.
MAX_KUBECONFIG_BYTES = 16 << 20
# Values the client's loader would build, counting what YAML aliases repeat.
MAX_KUBECONFIG_NODES = 1_000_000


def _check_kubeconfig_files(kubeconfig: str | None) -> None:
    """Refuse a kubeconfig the client's loader would block or blow up on, before it opens
    it: a FIFO blocks the read forever, a directory gives a bare errno, and a small file
    of nested aliases (billion laughs) expands to gigabytes in its merge."""
    if kubeconfig is not None:
        paths = [kubeconfig]
    else:
        listed = os.environ.get("KUBECONFIG") or "~/.kube/config"
        paths = [p for p in listed.split(os.pathsep) if p]
    for path in paths:
        full = os.path.expanduser(path)
        try:
            mode = os.stat(full).st_mode
        except OSError:
            continue  # absent: the client says so in its own words
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path}: not a regular file")
        with open(full, "rb") as stream:
            data = stream.read(MAX_KUBECONFIG_BYTES + 1)
        if len(data) > MAX_KUBECONFIG_BYTES:
            raise ValueError(f"{path}: larger than {MAX_KUBECONFIG_BYTES} bytes")
        if b"*" in data and _expanded_size(data) > MAX_KUBECONFIG_NODES:
            raise ValueError(f"{path}: its aliases expand to more than "
                             f"{MAX_KUBECONFIG_NODES} values")


def _expanded_size(data: bytes) -> int:
    """How many nodes the document stands for once every alias is expanded, computed on
    the composed graph (where an alias is one shared node) without expanding anything."""
    import yaml

    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    total = 0
    for document in yaml.compose_all(data, Loader=yaml.SafeLoader):
        # Children before parents, iteratively: the graph can be deep.
        stack: list[tuple[Any, bool]] = [(document, False)]
        while stack:
            node, children_done = stack.pop()
            if node is None or id(node) in sizes:
                continue
            if not children_done:
                if id(node) in visiting:
                    # An alias inside its own anchor: a structure without end.
                    return MAX_KUBECONFIG_NODES + 1
                visiting.add(id(node))
            if isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            elif isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
            else:
                sizes[id(node)] = 1
                continue
            if children_done:
                sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children),
                                      MAX_KUBECONFIG_NODES + 1)
            else:
                stack.append((node, True))
                stack.extend((c, False) for c in children if id(c) not in sizes)
        if document is not None:
            total += sizes[id(document)]
    return total


def _status_message(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return str(body or "")[:300]
    return str(data.get("message", "")) if isinstance(data, dict) else str(data)[:300]


# Bounds on a server's Retry-After: below 1 s a 429 would be retried in a tight loop, and
# a day-long value would stop every write; past 10 min the normal backoff knows better.
RETRY_AFTER_MIN = 1.0
RETRY_AFTER_MAX = 600.0


def clamp_retry_after(value: Any) -> float | None:
    """Seconds to wait from a Retry-After value, within [1 s, 10 min]; None if unusable.

    NaN, infinities and anything that is not a number of seconds (including the HTTP-date
    form, which the API server does not send) count as no header at all.
    """
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(seconds):
        return None
    return min(RETRY_AFTER_MAX, max(RETRY_AFTER_MIN, seconds))


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After") if headers is not None else None
    except (AttributeError, TypeError, ValueError):
        return None
    return clamp_retry_after(value) if value is not None else None


class _Requests:
    """Requests through the client's REST layer: plain JSON in and out, KubeError only."""

    def __init__(self, client: Any,
                 on_request: Callable[[str, str], None] | None = None) -> None:
        self.client = client
        self.on_request = on_request or (lambda verb, outcome: None)

    def _call(self, verb: str, path: str, method: str, *,
              query: list[tuple[str, str]] | None = None, body: Any = None,
              content_type: str | None = None, timeout: Any = REQUEST_TIMEOUT) -> Any:
        k = _client_modules()
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = self.client.call_api(
                path, method, query_params=query or [], header_params=headers, body=body,
                auth_settings=["BearerToken"], _preload_content=False,
                _request_timeout=timeout,
            )
        except k.ApiException as exc:
            error = KubeError(exc.status or None, exc.reason or "error",
                              _status_message(exc.body), _retry_after(exc.headers))
            if not exc.status:  # the client reports TLS failures as status 0
                error = KubeError(None, "tls", str(exc.reason))
            self.on_request(verb, error.kind)
            raise error from None
        except Exception as exc:  # urllib3/socket errors: connection refused, timeouts
            error = _transport_error(exc)
            self.on_request(verb, error.kind)
            raise error from None
        self.on_request(verb, str(response.status))
        return response

    def _json(self, verb: str, path: str, method: str, *, max_bytes: int | None = None,
              **kwargs: Any) -> dict[str, Any]:
        response = self._call(verb, path, method, **kwargs)
        if max_bytes is None:
            body = response.data
        else:
            # Read no more than that: parsed, a large reply takes ten times its size.
            body = response.read(max(max_bytes, 0) + 1)
            if len(body) > max_bytes:
                with contextlib.suppress(Exception):
                    response.close()
                raise KubeError(None, "too-many", f"more than {max_bytes} bytes in the reply")
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise KubeError(None, "decode", f"response is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise KubeError(None, "decode", "response is not a JSON object")
        return data


class NodeApi(_Requests):
    """Requests about one Node, returning plain dicts and raising only KubeError."""

    def __init__(self, client: Any, node: str,
                 on_request: Callable[[str, str], None] | None = None) -> None:
        super().__init__(client, on_request)
        self.node = node
        self._uid: str | None = None

    @property
    def _path(self) -> str:
        return f"/api/v1/nodes/{quote(self.node, safe='')}"

    def get(self) -> dict[str, Any]:
        node = check_node(self._json("get", self._path, "GET"), self.node)
        uid = node["metadata"].get("uid")
        self._uid = uid if isinstance(uid, str) else None
        return node

    def patch(self, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Send a JSON merge patch; 409 when its resourceVersion is no longer current."""
        query = [("fieldManager", FIELD_MANAGER)]
        if dry_run:
            query.append(("dryRun", "All"))
        return check_node(self._json("patch", self._path, "PATCH", query=query, body=body,
                                     content_type=MERGE_PATCH), self.node)

    def patch_status(self, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """A strategic merge patch of nodes/status: conditions merge by type, so only the
        condition in `body` changes, and capacity by resource name. Counted as verb
        "status"."""
        from nodefeatures.cluster.health import STRATEGIC_MERGE_PATCH

        query = [("fieldManager", FIELD_MANAGER)]
        if dry_run:
            query.append(("dryRun", "All"))
        return check_node(self._json("status", f"{self._path}/status", "PATCH",
                                     query=query, body=body,
                                     content_type=STRATEGIC_MERGE_PATCH), self.node)

    def probe(self) -> dict[str, Any]:
        """The confinement probe: a dry-run patch that the own-node policy must deny.

        It sets a label outside every managed prefix, which the policy forbids; dryRun=All
        means that nothing changes even when the server accepts it. Counted as verb "probe".
        """
        query = [("fieldManager", FIELD_MANAGER), ("dryRun", "All")]
        body = {"metadata": {"labels": {PROBE_LABEL: PROBE_VALUE}}}
        return self._json("probe", self._path, "PATCH", query=query, body=body,
                          content_type=MERGE_PATCH)

    def read_admission(self, kind: Kind, name: str) -> dict[str, Any]:
        """A cluster-scoped admission object by name: the policy and binding that must
        confine this agent (cluster/confinement.py). Counted as `kind.verb` "-get"."""
        return ObjectApi(self.client, kind, self.on_request).get(None, name)

    def watch(self, resource_version: str, timeout_seconds: int) -> NodeWatch:
        """Watch this Node only (field selector on its name), resuming at a resourceVersion."""
        query = [
            ("watch", "true"),
            ("fieldSelector", f"metadata.name={self.node}"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        response = self._call("watch", "/api/v1/nodes", "GET", query=query,
                              timeout=(REQUEST_TIMEOUT[0], WATCH_READ_TIMEOUT))
        return NodeWatch(response)

    def event(self, kind: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event on this Node (namespace default, as kubelet does)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"name": f"{self.node}.{time.time_ns():x}", "namespace": EVENT_NAMESPACE},
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": self.node,
                               "uid": self._uid or ""},
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "nodefeatures", "host": self.node},
            "reportingComponent": "nodefeatures",
            "reportingInstance": self.node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._json("event", f"/api/v1/namespaces/{EVENT_NAMESPACE}/events", "POST", body=body)


@dataclass(frozen=True)
class Kind:
    """Objects of one resource that the agent reads: where they are and which it wants.

    `verb` names them in the request metric ("rules-list", "rules-watch", ...).
    """

    group: str  # "" for the core API
    version: str
    plural: str
    verb: str
    namespace: str | None = None  # None: every namespace, or a cluster-scoped resource
    label_selector: str | None = None
    field_selector: str | None = None

    def path(self, namespace: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        namespace = namespace if namespace is not None else self.namespace
        if namespace is not None:
            base += f"/namespaces/{quote(namespace, safe='')}"
        return f"{base}/{self.plural}"

    def selectors(self) -> list[tuple[str, str]]:
        query = []
        if self.label_selector:
            query.append(("labelSelector", self.label_selector))
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        return query


class ObjectApi(_Requests):
    """List, watch and write objects of one Kind, as plain dicts (custom resources too)."""

    def __init__(self, client: Any, kind: Kind,
                 on_request: Callable[[str, str], None] | None = None) -> None:
        super().__init__(client, on_request)
        self.kind = kind

    def list(self, limit: int = 500, continue_token: str | None = None,
             max_bytes: int | None = None) -> dict[str, Any]:
        """One page of the list; `metadata.continue` says whether more follow. A reply
        over `max_bytes` is a KubeError (reason "too-many"), read no further."""
        query = [*self.kind.selectors(), ("limit", str(limit))]
        if continue_token:
            query.append(("continue", continue_token))
        return self._json(f"{self.kind.verb}-list", self.kind.path(), "GET", query=query,
                          max_bytes=max_bytes)

    def watch(self, resource_version: str, timeout_seconds: int) -> NodeWatch:
        query = [
            *self.kind.selectors(),
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        response = self._call(f"{self.kind.verb}-watch", self.kind.path(), "GET", query=query,
                              timeout=(REQUEST_TIMEOUT[0], WATCH_READ_TIMEOUT))
        return NodeWatch(response)

    def get(self, namespace: str | None, name: str) -> dict[str, Any]:
        """One object; `namespace` None for a cluster-scoped Kind."""
        return self._json(f"{self.kind.verb}-get",
                          f"{self.kind.path(namespace)}/{quote(name, safe='')}", "GET")

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._json(f"{self.kind.verb}-create", self.kind.path(namespace), "POST",
                          query=[("fieldManager", FIELD_MANAGER)], body=body)

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A full update (PUT); 409 when body's resourceVersion is no longer current."""
        return self._json(f"{self.kind.verb}-update",
                          f"{self.kind.path(namespace)}/{quote(name, safe='')}", "PUT",
                          query=[("fieldManager", FIELD_MANAGER)], body=body)


class NodeWatch:
    """One watch stream; `close()` from another thread unblocks `events()` at once."""

    def __init__(self, response: Any) -> None:
        self.response = response

    def events(self) -> Iterator[dict[str, Any]]:
        buffer = b""
        try:
            for chunk in self.response.stream(64 * 1024, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield _decode_event(line)
        except KubeError:
            raise
        except Exception as exc:
            raise _transport_error(exc) from None
        finally:
            self.close()
            with contextlib.suppress(Exception):
                self.response.release_conn()

    def close(self) -> None:
        """Unblock the reader; takes no lock, so it is safe from any thread."""
        with contextlib.suppress(Exception):
            self.response.shutdown()


def _decode_event(line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise KubeError(None, "decode", f"watch event is not JSON: {exc}") from None
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise KubeError(None, "decode", "watch event without an object")
    return event


def _transport_error(exc: BaseException) -> KubeError:
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    reason = "timeout" if "timeout" in lowered or "timed out" in lowered else "connection"
    return KubeError(None, reason, text[:300])


def check_node(node: Any, name: str | None = None) -> dict[str, Any]:
    """`node` if it has the shape the agent relies on, else KubeError(reason "invalid").

    Whatever the agent keeps as its copy of the Node, or decides on, passes through
    here first: a dict `metadata` with a string resourceVersion, string-to-string labels
    and annotations, and (when given) our Node's name.
    """
    problem = _node_problem(node, name)
    if problem:
        raise KubeError(None, "invalid", f"malformed Node object: {problem}")
    return node  # type: ignore[no-any-return]


def _node_problem(node: Any, name: str | None) -> str | None:
    if not isinstance(node, dict):
        return f"a {type(node).__name__}, not an object"
    meta = node.get("metadata")
    if not isinstance(meta, dict):
        return f"metadata is a {type(meta).__name__}, not an object"
    if not isinstance(meta.get("resourceVersion"), str) or not meta["resourceVersion"]:
        return "metadata.resourceVersion is not a non-empty string"
    if name is not None and meta.get("name") != name:
        return f"metadata.name is {str(meta.get('name'))[:64]!r}, not {name!r}"
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if values is None:
            continue
        if not isinstance(values, dict):
            return f"metadata.{field} is a {type(values).__name__}, not an object"
        for key, value in values.items():
            if not isinstance(key, str) or not isinstance(value, str):
                return (f"metadata.{field}[{str(key)[:64]!r}] is a {type(value).__name__}, "
                        "not a string")
    return None


def version_order(a: str | None, b: str | None) -> int | None:
    """-1, 0 or 1 as resourceVersion `a` is older than, equal to or newer than `b`.

    None when either is not a decimal integer. The API contract calls resourceVersions
    opaque, but a kube-apiserver backed by etcd sends etcd's revision, a decimal integer
    that only grows (the watch cache itself compares them as such). The agent relies on
    that only to keep an older copy of its Node from replacing a newer one, and falls
    back to treating versions as opaque when they do not parse.
    """
    if not (isinstance(a, str) and isinstance(b, str) and a.isascii() and b.isascii()
            and a.isdigit() and b.isdigit()):
        return None
    # Compared as digit strings: int() refuses more than 4,300 digits, and a version is
    # whatever the server (or anything between it and us) sends.
    x, y = a.lstrip("0"), b.lstrip("0")
    return ((len(x), x) > (len(y), y)) - ((len(x), x) < (len(y), y))


def resource_version(node: dict[str, Any] | None) -> str | None:
    return (node or {}).get("metadata", {}).get("resourceVersion")


def node_labels(node: dict[str, Any] | None) -> dict[str, str]:
    return dict((node or {}).get("metadata", {}).get("labels") or {})


def node_annotations(node: dict[str, Any] | None) -> dict[str, str]:
    return dict((node or {}).get("metadata", {}).get("annotations") or {})
