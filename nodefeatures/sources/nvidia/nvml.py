"""Talking to NVML safely: a lazy pynvml import and one worker thread with deadlines.

NVML is the least reliable thing a node agent touches: the library may be missing, the
driver not loaded yet, a GPU lost, or a call may hang inside the kernel driver. Every
NVML call therefore runs on one dedicated daemon thread, and the caller waits for it
only until a deadline. After a timeout the thread is left to finish on its own and NVML
is not touched again until it has returned, so a hung driver costs a pass its GPU
labels but never hangs discovery.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
import types
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")

# NVML return codes, by value, so no pynvml import is needed to classify them.
SUCCESS = 0
INVALID_ARGUMENT = 2
NOT_SUPPORTED = 3
NO_PERMISSION = 4
NOT_FOUND = 6
DRIVER_NOT_LOADED = 9
IRQ_ISSUE = 11
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
RESET_REQUIRED = 16
OPERATING_SYSTEM = 17
GPU_NOT_FOUND = 28

# Codes that mean this GPU cannot be used now: it fell off the bus, needs a reset, or
# this container may not open it. Such a GPU counts as unhealthy, not as absent.
LOST = frozenset({NO_PERMISSION, IRQ_ISSUE, GPU_IS_LOST, RESET_REQUIRED, OPERATING_SYSTEM,
                  GPU_NOT_FOUND})
# Codes that mean "this GPU or driver does not have the feature".
UNSUPPORTED = frozenset({NOT_SUPPORTED, FUNCTION_NOT_FOUND})

_pynvml: ModuleType | None = None
_names: dict[int, str] = {}


class PynvmlMissing(ImportError):
    """The nvidia-ml-py bindings are not installed."""


def load_pynvml() -> ModuleType:
    """Import pynvml once, the first time a node may have an NVIDIA GPU.

    pynvml imports `ctypes.util.find_library` at module level but never calls it on
    Linux, and ctypes.util drags in shutil, subprocess and tempfile: about half of the
    import time. A placeholder stands in for it during the import only.
    """
    global _pynvml
    if _pynvml is not None:
        return _pynvml
    placeholder = None
    if "ctypes.util" not in sys.modules:
        placeholder = types.ModuleType("ctypes.util")
        placeholder.find_library = _find_library  # type: ignore[attr-defined]
        sys.modules["ctypes.util"] = placeholder
    try:
        import pynvml
    except ImportError as exc:
        raise PynvmlMissing(f"nvidia-ml-py is not installed: {exc}") from exc
    finally:
        if placeholder is not None and sys.modules.get("ctypes.util") is placeholder:
            del sys.modules["ctypes.util"]
    _pynvml = pynvml
    return pynvml


def _find_library(name: str) -> str | None:
    from importlib import import_module

    return import_module("ctypes.util").find_library(name)


def code_of(exc: BaseException) -> int | None:
    """The NVML return code of a pynvml exception, None for anything else."""
    value = getattr(exc, "value", None)
    nv = _pynvml
    if nv is not None and isinstance(exc, nv.NVMLError) and isinstance(value, int):
        return value
    return None


def error_name(code: int | None) -> str:
    """NVML_ERROR_GPU_IS_LOST for 15, without calling into the library for text."""
    if code is None:
        return "not an NVML error"
    if not _names and _pynvml is not None:
        _names.update({getattr(_pynvml, n): n for n in dir(_pynvml)
                       if n.startswith("NVML_ERROR_")})
    return _names.get(code, f"NVML error {code}")


def describe(exc: BaseException) -> str:
    """A short, library-free description of an exception from an NVML call."""
    code = code_of(exc)
    if code is not None:
        return error_name(code)
    return f"{type(exc).__name__}: {exc}"


class Unresponsive(Exception):
    """NVML did not answer in time, or an earlier call has still not returned."""

    def __init__(self, message: str, since: float) -> None:
        super().__init__(message)
        self.since = since


class _Job:
    __slots__ = ("done", "error", "function", "result", "started")

    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.started = 0.0


class Worker:
    """One daemon thread that runs NVML work, each job under the caller's deadline."""

    def __init__(self, name: str = "nodefeatures-nvml") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stuck: _Job | None = None  # abandoned after a timeout, still running

    @property
    def stuck_since(self) -> float | None:
        """When the call that timed out started, while it has not returned."""
        with self._lock:
            return self._stuck.started if self._stuck is not None else None

    def run(self, function: Callable[[], T], deadline: float) -> T:
        """Run `function` on the worker and return its result, or raise Unresponsive."""
        job = _Job(function)
        with self._lock:
            if self._stuck is not None:
                raise Unresponsive("an earlier NVML call has not returned", self._stuck.started)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            job.started = time.monotonic()
            self._jobs.put(job)
        if not job.done.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                if not job.done.is_set():
                    self._stuck = job
                    raise Unresponsive("NVML did not answer in time", job.started)
        if job.error is not None:
            raise job.error
        return job.result

    def later(self, function: Callable[[], Any]) -> None:
        """Queue clean-up work to run whenever the worker is free; nobody waits for it."""
        with self._lock:
            if self._thread is None:
                return
            self._jobs.put(_Job(function))

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            job.started = job.started or time.monotonic()
            try:
                job.result = job.function()
            except BaseException as exc:  # handed to the waiting caller
                job.error = exc
            with self._lock:
                job.done.set()
                if self._stuck is job:
                    self._stuck = None


_worker: Worker | None = None
_worker_lock = threading.Lock()


def shared_worker() -> Worker:
    """The process's one NVML thread: pynvml and the driver state are process-wide, so
    every source instance queues behind the same thread, and a hung call stops them all."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = Worker()
        return _worker


# -- one NVML session per pass -------------------------------------------------------------

RETRY_FIRST = 15.0  # seconds before the first retry after NVML could not be used
RETRY_MAX = 300.0  # the longest wait between retries: a driver installed later is seen


class Outcome:
    """Why NVML can or cannot be used in this pass."""

    __slots__ = ("message", "status")

    def __init__(self, status: str, message: str = "") -> None:
        self.status = status  # ok, absent (no library), failed, unresponsive, waiting
        self.message = message

    def __repr__(self) -> str:
        return f"Outcome({self.status!r}, {self.message!r})"


class Session:
    """NVML for one source instance across passes: backoff, the worker, and which native
    library pynvml calls (the driver's, a fixture's answers, or the driver's recorded)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.worker = shared_worker()
        self.nv: ModuleType | None = None
        self.fake: Any = None  # the replayed library of the last fixture pass, for tests
        self.recorder: Any = None  # the capture recorder of the last capture pass
        self._host_key: tuple[str, ...] = ()
        self._failures = 0
        self._retry_at = 0.0
        self._last_failure = Outcome("ok")
        self._replay: tuple[str, float, Any] | None = None  # path, mtime, fake library
        self._deadline = 0.0
        self._installed: Any = None
        self._detach: Callable[[], None] = lambda: None
        self._open = False
        self.hung = False  # a call of this pass timed out

    # -- the pass --------------------------------------------------------------------------

    def open(self, host: Any, timeout: float) -> Outcome:
        """Make NVML ready for this pass, or say why it cannot be used."""
        self.hung = False
        self._reset_backoff_for(host)
        now = self.clock()
        if self._failures and now < self._retry_at:
            last = self._last_failure
            return Outcome("waiting", f"{last.message}; next try in {self._retry_at - now:.0f} s")
        since = self.worker.stuck_since
        if since is not None:
            waited = time.monotonic() - since
            return self._failed(Outcome(
                "unresponsive", f"an NVML call has not returned for {waited:.0f} s; NVML is "
                                "left alone until it does"))
        attach, detach, problem = self._backend(host)
        if problem is not None:
            return self._failed(problem)
        nv = self.nv
        assert nv is not None
        self._deadline = time.monotonic() + timeout

        def start() -> None:
            attach()
            try:
                nv.nvmlInit()
            except BaseException:
                detach()
                raise
            self._detach = detach

        try:
            self.worker.run(start, self._deadline)
        except Unresponsive:
            self.hung = True

            def clean_up() -> None:  # once the init that hung has returned
                self._quiet(nv.nvmlShutdown)
                detach()

            self.worker.later(clean_up)
            return self._failed(Outcome("unresponsive", f"nvmlInit did not return within "
                                                        f"{timeout:g} s"))
        except Exception as exc:
            code = code_of(exc)
            if code == LIBRARY_NOT_FOUND:
                return self._failed(Outcome("absent", "the NVML library (libnvidia-ml.so.1) "
                                                      "was not found"))
            return self._failed(Outcome("failed", f"nvmlInit failed: {describe(exc)}"))
        self._open = True
        self._failures = 0
        return Outcome("ok")

    def call(self, job: Callable[[], T]) -> T:
        """Run one job of this pass on the worker, within the pass deadline."""
        try:
            return self.worker.run(job, self._deadline)
        except Unresponsive:
            self.hung = True
            raise

    def close(self) -> None:
        """Shut NVML down, so the driver can be unloaded between passes; after a timeout
        the shutdown is queued for when the hung call returns."""
        if not self._open:
            return
        self._open = False
        nv, detach = self.nv, self._detach

        def stop() -> None:
            try:
                self._quiet(nv.nvmlShutdown)
            finally:
                detach()

        if self.hung:
            self.worker.later(stop)
            self._failed(Outcome("unresponsive", "an NVML call did not return in time"))
            return
        try:
            self.worker.run(stop, max(self._deadline, time.monotonic() + 1.0))
        except Unresponsive:
            self.hung = True

    # -- backends -------------------------------------------------------------------------

    def _backend(self, host: Any) -> tuple[Callable[[], None], Callable[[], None],
                                           Outcome | None]:
        def nothing() -> None:
            return None

        fixture = getattr(host, "fixture_dir", None)
        if fixture is not None:
            path = fixture / "nvml.json"
            if not path.is_file():
                return nothing, nothing, Outcome(
                    "absent", "the fixture has no nvml.json: replayed as a node without the "
                              "NVML library")
        try:
            self.nv = load_pynvml()
        except PynvmlMissing as exc:
            return nothing, nothing, Outcome("absent", str(exc))
        nv = self.nv
        from . import replay

        if fixture is not None:
            try:
                lib = self._replay_library(nv, fixture / "nvml.json")
            except (OSError, replay.FixtureFormatError) as exc:
                return nothing, nothing, Outcome("failed", f"{fixture / 'nvml.json'}: {exc}")
            self.fake = lib
            return self._installer(lambda: lib), self._restore, None
        capture = getattr(host, "capture_dir", None)
        if capture is not None:
            def recording() -> Any:
                module = replay.binding_module(nv)
                load = getattr(module, "_LoadNvmlLibrary", None)
                if load is not None:
                    load()  # raises NVMLError_LibraryNotFound without the library
                else:  # a binding without the helper: let init load it
                    nv.nvmlInit()
                    nv.nvmlShutdown()
                self.recorder = replay.RecordingLib(nv, module.nvmlLib)
                return self.recorder

            return self._installer(recording), self._restore, None
        return nothing, nothing, None

    def _installer(self, make: Callable[[], Any]) -> Callable[[], None]:
        from . import replay

        def attach() -> None:
            self._installed = replay.install(self.nv, make())  # type: ignore[arg-type]

        return attach

    def _restore(self) -> None:
        installed, self._installed = self._installed, None
        if installed is not None:
            installed.restore()

    def _replay_library(self, nv: ModuleType, path: Any) -> Any:
        from . import replay

        mtime = path.stat().st_mtime
        if self._replay is not None and self._replay[:2] == (str(path), mtime):
            return self._replay[2]
        # The largest recorded machine's answers are ~90 KB; a fixture from anywhere must
        # not make the agent read gigabytes.
        with path.open("rb") as stream:
            raw = stream.read(replay.MAX_FIXTURE_BYTES + 1)
        if len(raw) > replay.MAX_FIXTURE_BYTES:
            raise replay.FixtureFormatError(f"larger than {replay.MAX_FIXTURE_BYTES} bytes")
        data = replay.loads(raw)
        lib = replay.FakeNvmlLib(nv, data)
        self._replay = (str(path), mtime, lib)
        return lib

    # -- failures and backoff -------------------------------------------------------------

    def _failed(self, outcome: Outcome) -> Outcome:
        self._failures += 1
        # A bounded exponent: 2 ** 1024 is past a float, and failures go on for days.
        delay = min(RETRY_FIRST * 2.0 ** min(self._failures - 1, 64), RETRY_MAX)
        self._retry_at = self.clock() + delay
        self._last_failure = outcome
        return outcome

    def _reset_backoff_for(self, host: Any) -> None:
        root = getattr(getattr(host, "root", None), "root", "")
        key = (str(getattr(host, "fixture_dir", "")), str(root))
        if key != self._host_key:
            self._host_key = key
            self._failures = 0
            self._retry_at = 0.0

    @property
    def last_failure(self) -> Outcome:
        return self._last_failure

    @staticmethod
    def _quiet(function: Callable[[], Any]) -> None:
        # shutting down after a failure: there is nothing more to learn from an error
        with contextlib.suppress(Exception):
            function()
