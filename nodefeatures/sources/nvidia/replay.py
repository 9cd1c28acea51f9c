"""NVML answers as data: the `nvml.json` fixture format, the fake native library that
replays it under the real pynvml module, and the recorder that writes it during capture.

Only the native library (`pynvml.nvmlLib`) is ever replaced. pynvml's own wrappers still
allocate the structs, pass `byref` out-parameters, check return codes and raise its
`NVMLError_*` classes, so a replayed fixture exercises the same Python code as a GPU.

An nvml.json file is a tree of answers keyed by the C symbol that pynvml calls:

    {"format": 1,
     "nvmlInitWithFlags": 0,
     "nvmlSystemGetDriverVersion": "535.161.08",
     "nvmlDeviceGetHandleByIndex_v2": {"0": {"nvmlDeviceGetName": "Tesla T4", ...}}}

A symbol that returns a handle (device, MIG device, GPU or compute instance) answers
with the node of calls made on that handle; a symbol with selecting arguments (an index,
a profile) answers with an object keyed by those arguments joined by ",". Any answer
may instead be `{"error": "GPU_IS_LOST"}` (an NVML_ERROR_* name or its number).
docs/fixtures.md describes the format in full.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

from .structs import FABRIC_INFO_V2, FabricInfo, FabricInfoV2, uuid_bytes, uuid_text

FORMAT = 1
MAX_FIXTURE_BYTES = 16 * 1024 * 1024  # nvml.json; a DGX with MIG records ~90 KB
FILENAME = "nvml.json"
_KINDS_WITH_HANDLE = ("device", "gi", "ci")


class Symbol(NamedTuple):
    """How one C symbol is called: what its handle is, which arguments select an answer,
    and what it writes back."""

    scope: str  # "system", or the handle kind of the first argument: device, gi, ci
    out: str  # status, uint, int, uint2, int2, string, struct, enum, device, gi, ci
    keys: int = 0  # arguments after the handle that select the answer
    ignored: int = 0  # arguments that change nothing in the answer (init flags)
    struct: str = ""  # pynvml structure class written through the last argument
    version: str = ""  # pynvml constant the struct's `version` field must carry


# Every symbol the nvidia source makes pynvml request, by its C name.
SYMBOLS: dict[str, Symbol] = {
    "nvmlInitWithFlags": Symbol("system", "status", ignored=1),
    "nvmlShutdown": Symbol("system", "status"),
    "nvmlSystemGetDriverVersion": Symbol("system", "string"),
    "nvmlSystemGetCudaDriverVersion": Symbol("system", "int"),
    "nvmlDeviceGetCount_v2": Symbol("system", "uint"),
    "nvmlDeviceGetHandleByIndex_v2": Symbol("system", "device", keys=1),
    "nvmlDeviceGetName": Symbol("device", "string"),
    "nvmlDeviceGetMemoryInfo": Symbol("device", "struct", struct="c_nvmlMemory_t"),
    "nvmlDeviceGetCudaComputeCapability": Symbol("device", "int2"),
    "nvmlDeviceGetPciInfo_v3": Symbol("device", "struct", struct="nvmlPciInfo_t"),
    "nvmlDeviceGetMigMode": Symbol("device", "uint2"),
    "nvmlDeviceGetMaxMigDeviceCount": Symbol("device", "uint"),
    "nvmlDeviceGetMigDeviceHandleByIndex": Symbol("device", "device", keys=1),
    "nvmlDeviceIsMigDeviceHandle": Symbol("device", "uint"),
    "nvmlDeviceGetAttributes_v2": Symbol("device", "struct", struct="c_nvmlDeviceAttributes"),
    "nvmlDeviceGetGpuInstanceId": Symbol("device", "uint"),
    "nvmlDeviceGetComputeInstanceId": Symbol("device", "uint"),
    "nvmlDeviceGetGpuInstanceProfileInfo": Symbol(
        "device", "struct", keys=1, struct="c_nvmlGpuInstanceProfileInfo_t"),
    "nvmlDeviceGetGpuInstanceById": Symbol("device", "gi", keys=1),
    "nvmlGpuInstanceGetInfo": Symbol("gi", "struct", struct="c_nvmlGpuInstanceInfo_t"),
    "nvmlGpuInstanceGetComputeInstanceProfileInfo": Symbol(
        "gi", "struct", keys=2, struct="c_nvmlComputeInstanceProfileInfo_t"),
    "nvmlGpuInstanceGetComputeInstanceById": Symbol("gi", "ci", keys=1),
    "nvmlComputeInstanceGetInfo_v2": Symbol("ci", "struct", struct="c_nvmlComputeInstanceInfo_t"),
    "nvmlDeviceGetGpuFabricInfo": Symbol("device", "struct", struct="FabricInfo"),
    "nvmlDeviceGetGpuFabricInfoV": Symbol(
        "device", "struct", struct="FabricInfoV2", version="FABRIC_INFO_V2"),
    "nvmlDeviceGetVirtualizationMode": Symbol("device", "enum"),
}



_OWN_TYPES: dict[str, Any] = {"FabricInfo": FabricInfo, "FabricInfoV2": FabricInfoV2,
                              "FABRIC_INFO_V2": FABRIC_INFO_V2}


def _resolve(nv: ModuleType, name: str) -> Any:
    """A struct or constant: ours where pynvml's is wrong or missing, else pynvml's."""
    return _OWN_TYPES[name] if name in _OWN_TYPES else getattr(nv, name)


_HANDLE_TYPES = {
    "device": "c_nvmlDevice_t",
    "gi": "c_nvmlGpuInstance_t",
    "ci": "c_nvmlComputeInstance_t",
}
# The caller's version stamp carries nothing a fixture needs; pointer fields (handles
# back to the device or instance) are skipped too, as addresses differ on every run.
_UNRECORDED_FIELDS = frozenset({"version"})


class FixtureFormatError(ValueError):
    """nvml.json cannot be used."""


def error_names(nv: ModuleType) -> dict[int, str]:
    """NVML return codes by number: 15 -> "GPU_IS_LOST"."""
    return {
        getattr(nv, name): name.removeprefix("NVML_ERROR_")
        for name in dir(nv) if name.startswith("NVML_ERROR_")
    }


def error_code(nv: ModuleType, value: Any) -> int:
    """The return code an `{"error": ...}` answer stands for."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise FixtureFormatError(f"error {value!r} is neither a code nor an NVML_ERROR_ name")
    if isinstance(value, int):
        return value
    code = getattr(nv, "NVML_ERROR_" + value.removeprefix("NVML_ERROR_"), None)
    if not isinstance(code, int):
        raise FixtureFormatError(f"unknown NVML error name {value!r}")
    return code


def is_error(answer: Any) -> bool:
    return isinstance(answer, dict) and set(answer) == {"error"}


# -- reading and writing nvml.json --------------------------------------------------


def loads(text: str | bytes) -> dict[str, Any]:
    """Parse nvml.json text, checking only what every fixture must have."""
    try:
        data = json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError included
        raise FixtureFormatError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise FixtureFormatError("nested too deeply to read") from None
    if not isinstance(data, dict):
        raise FixtureFormatError("the top level must be an object")
    if data.get("format") != FORMAT:
        raise FixtureFormatError(f"format must be {FORMAT}, not {data.get('format')!r}")
    missing = data.get("missing", [])
    if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
        raise FixtureFormatError("missing must be a list of symbol names")
    return data


def dumps(data: dict[str, Any]) -> str:
    """nvml.json text: keys sorted, small answers on one line so a GPU reads at a glance."""
    return _format(data, 0) + "\n"


def _format(value: Any, depth: int) -> str:
    if not isinstance(value, dict | list) or _is_leaf(value):
        return json.dumps(value, sort_keys=True)
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, list):
        items = [inner + _format(v, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    items = [f"{inner}{json.dumps(k)}: {_format(value[k], depth + 1)}"
             for k in sorted(value, key=_sort_key)]
    return "{\n" + ",\n".join(items) + "\n" + pad + "}"


def _is_leaf(value: dict | list) -> bool:
    children = value.values() if isinstance(value, dict) else value
    flat = all(not isinstance(c, dict | list) or (isinstance(c, dict) and _is_leaf(c)
                                                   and len(json.dumps(c)) < 40)
               for c in children)
    return flat and len(json.dumps(value)) <= 100


def _sort_key(key: str) -> tuple:
    """Numbers in their order ("2" before "10"), then names."""
    parts = key.split(",")
    if all(p.isdigit() for p in parts):
        return (0, tuple(int(p) for p in parts), "")
    return (1, (), key)


# -- struct and value conversion ------------------------------------------------------


def struct_to_json(struct: ctypes.Structure) -> dict[str, Any]:
    """The fields of a pynvml structure as plain JSON values."""
    result: dict[str, Any] = {}
    for field in struct._fields_:
        name, ctype = field[0], field[1]
        if name in _UNRECORDED_FIELDS or _is_pointer(ctype):
            continue
        raw = object.__getattribute__(struct, name)
        result[name] = _value_to_json(name, ctype, raw)
    return result


def _is_pointer(ctype: Any) -> bool:
    return isinstance(ctype, type) and issubclass(ctype, ctypes._Pointer)


def _value_to_json(name: str, ctype: Any, raw: Any) -> Any:
    if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure):
        return struct_to_json(raw)
    if isinstance(ctype, type) and issubclass(ctype, ctypes.Array):
        if ctype._type_ is ctypes.c_char:
            data = raw if isinstance(raw, bytes) else bytes(raw)
            return data.split(b"\0", 1)[0].decode("utf-8", errors="replace")
        data = bytes(raw)
        if name == "clusterUuid" and len(data) == 16:
            return uuid_text(data)
        return list(data)
    return int(raw)


def fill_struct(struct: ctypes.Structure, answer: dict[str, Any]) -> None:
    """Write an answer's fields into a pynvml structure; unknown fields are an error."""
    types = {f[0]: f[1] for f in struct._fields_}
    for name, value in answer.items():
        if name not in types or name in _UNRECORDED_FIELDS or _is_pointer(types[name]):
            raise FixtureFormatError(f"{type(struct).__name__} has no field {name!r}")
        ctype = types[name]
        if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure):
            fill_struct(getattr(struct, name), value)
        elif isinstance(ctype, type) and issubclass(ctype, ctypes.Array):
            if ctype._type_ is ctypes.c_char:
                encoded = str(value).encode()
                if len(encoded) >= ctype._length_:
                    raise FixtureFormatError(f"{name} {value!r} does not fit")
                setattr(struct, name, encoded)
            elif name == "clusterUuid" and isinstance(value, str):
                setattr(struct, name, ctype(*uuid_bytes(value)))
            else:
                setattr(struct, name, ctype(*value))
        else:
            setattr(struct, name, int(value))


# -- the fake native library ----------------------------------------------------------


class FakeNvmlLib:
    """A stand-in for libnvidia-ml.so.1 that answers from an nvml.json tree.

    Each symbol is a ctypes callback with the C prototype, so pynvml's marshalling runs
    exactly as against the driver. A symbol listed under "missing" raises AttributeError,
    which pynvml turns into NVMLError_FunctionNotFound as with an older driver.
    """

    def __init__(self, nv: ModuleType, data: dict[str, Any],
                 block: Callable[[str], None] | None = None) -> None:
        self._nv = nv
        self._data = data
        # Calls not answered by the fixture ("symbol@node"), and exceptions raised inside
        # callbacks (ctypes would only print them); tests assert both stay empty.
        self.unanswered: list[str] = []
        self.callback_errors: list[tuple[str, BaseException]] = []
        self.calls = 0
        self._block = block  # tests: called with each symbol name before answering
        self._initialised = 0
        self._buffers: list[Any] = []
        self._handles: dict[int, tuple[str, dict[str, Any]]] = {}
        self._handle_of: dict[int, Any] = {}
        self._where: dict[int, str] = {}  # node id -> the call path that made its handle
        self._structs: dict[int, tuple[Any, dict[str, Any]]] = {}
        self._errors = {code: name for code, name in error_names(nv).items()}
        missing = set(data.get("missing", []))
        for name, symbol in SYMBOLS.items():
            if name not in missing:
                object.__setattr__(self, name, self._callback(name, symbol))
        self._error_text: dict[int, ctypes.Array] = {}
        prototype = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int)
        self.nvmlErrorString = prototype(self._error_string)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)

    # -- building callbacks --------------------------------------------------------------

    def _callback(self, name: str, symbol: Symbol) -> Any:
        nv = self._nv
        argtypes: list[Any] = []
        if symbol.scope != "system":
            argtypes.append(ctypes.c_void_p)
        argtypes += [ctypes.c_uint] * (symbol.keys + symbol.ignored)
        out = symbol.out
        if out in ("uint", "int"):
            argtypes.append(ctypes.POINTER(ctypes.c_uint if out == "uint" else ctypes.c_int))
        elif out in ("uint2", "int2"):
            scalar = ctypes.c_uint if out == "uint2" else ctypes.c_int
            argtypes += [ctypes.POINTER(scalar)] * 2
        elif out == "string":
            argtypes += [ctypes.c_void_p, ctypes.c_uint]
        elif out == "struct":
            argtypes.append(ctypes.POINTER(_resolve(nv, symbol.struct)))
        elif out == "enum":
            # pynvml passes a c_ulonglong for a 4-byte C enum; the driver writes 4 bytes
            argtypes.append(ctypes.c_void_p)
        elif out in _HANDLE_TYPES:
            argtypes.append(ctypes.POINTER(getattr(nv, _HANDLE_TYPES[out])))
        prototype = ctypes.CFUNCTYPE(ctypes.c_int, *argtypes)

        def call(*args: Any) -> int:
            try:
                return self._answer(name, symbol, args)
            except BaseException as exc:  # ctypes would swallow it and return garbage
                self.callback_errors.append((name, exc))
                return nv.NVML_ERROR_UNKNOWN

        return prototype(call)

    def _error_string(self, code: int) -> int:
        if code not in self._error_text:
            text = self._errors.get(code, f"NVML error {code}").encode()
            self._error_text[code] = ctypes.create_string_buffer(text)
        return ctypes.addressof(self._error_text[code])

    # -- answering -------------------------------------------------------------------------

    def _answer(self, name: str, symbol: Symbol, args: tuple[Any, ...]) -> int:
        nv = self._nv
        self.calls += 1  # callbacks run one at a time, on the NVML worker thread
        if self._block is not None:
            self._block(name)
        if name == "nvmlInitWithFlags":
            code = self._code(self._data.get(name, 0))
            if code == 0:
                self._initialised += 1
            return code
        if not self._initialised:
            return nv.NVML_ERROR_UNINITIALIZED
        if name == "nvmlShutdown":
            self._initialised -= 1
            return self._code(self._data.get(name, 0))
        node: dict[str, Any] = self._data
        position = 0
        if symbol.scope != "system":
            found = self._handles.get(args[0] or 0)
            if found is None or found[0] != symbol.scope:
                return nv.NVML_ERROR_INVALID_ARGUMENT
            node = found[1]
            position = 1
        answer = node.get(name)
        key = ""
        if symbol.keys:
            key = ",".join(str(int(k)) for k in args[position:position + symbol.keys])
            if type(answer) is dict and "error" not in answer:
                answer = answer.get(key)
        if answer is None:
            if name == "nvmlDeviceGetCount_v2":
                answer = len(self._data.get("nvmlDeviceGetHandleByIndex_v2", {}))
            else:
                self.unanswered.append(f"{name}({key})@{self._path(node)}")
                return nv.NVML_ERROR_NOT_SUPPORTED
        if type(answer) is dict and "error" in answer and len(answer) == 1:
            return self._code(answer["error"])
        outs = args[position + symbol.keys + symbol.ignored:]
        out = symbol.out
        if out == "struct":
            target = outs[0]
            if symbol.version:
                expected = _resolve(nv, symbol.version)
                if target.contents.version != expected:
                    return nv.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
                target[0] = self._struct(target._type_, answer)
                target.contents.version = expected
            else:
                target[0] = self._struct(target._type_, answer)
        elif out in ("uint", "int"):
            outs[0][0] = int(answer)
        elif out in ("uint2", "int2"):
            first, second = answer
            outs[0][0], outs[1][0] = int(first), int(second)
        elif out == "string":
            encoded = str(answer).encode() + b"\0"
            if len(encoded) > outs[1]:
                return nv.NVML_ERROR_INSUFFICIENT_SIZE
            ctypes.memmove(outs[0], encoded, len(encoded))
        elif out == "enum":
            ctypes.c_uint.from_address(outs[0]).value = int(answer)
        elif out in _HANDLE_TYPES:
            if type(answer) is not dict:
                raise FixtureFormatError(f"{self._path(node)}/{name}({key}): a handle answer "
                                         "must be an object")
            self._where.setdefault(id(answer), f"{self._path(node)}/{name}({key})")
            outs[0][0] = self._handle(out, answer)
        return nv.NVML_SUCCESS

    def _path(self, node: dict[str, Any]) -> str:
        """Where a node sits in the fixture, for messages: system/nvmlDevice...(0)/..."""
        return "system" if node is self._data else self._where.get(id(node), "?")

    def _code(self, answer: Any) -> int:
        if is_error(answer):
            return error_code(self._nv, answer["error"])
        return error_code(self._nv, answer)

    def _struct(self, struct_type: Any, answer: dict[str, Any]) -> Any:
        """The answer as a filled struct, built once: a MIG pass asks hundreds of them."""
        built = self._structs.get(id(answer))
        if built is None or built[1] is not answer:
            value = struct_type()
            fill_struct(value, answer)
            built = self._structs[id(answer)] = (value, answer)
        return built[0]

    def _handle(self, kind: str, node: dict[str, Any]) -> Any:
        """A handle for one node: a pointer into memory this fake owns, never NULL."""
        key = id(node)
        if key not in self._handle_of:
            buffer = ctypes.create_string_buffer(16)
            self._buffers.append(buffer)
            address = ctypes.addressof(buffer)
            self._handle_of[key] = ctypes.cast(address, getattr(self._nv, _HANDLE_TYPES[kind]))
            self._handles[address] = (kind, node)
        return self._handle_of[key]


# -- the recorder used by capture -----------------------------------------------------


class RecordingLib:
    """Wraps the real native library and writes every answer into an nvml.json tree."""

    def __init__(self, nv: ModuleType, lib: Any) -> None:
        self._nv = nv
        self._lib = lib
        self._errors = error_names(nv)
        self.data: dict[str, Any] = {"format": FORMAT}
        self._nodes: dict[tuple[str, int], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        """A copy of what was recorded so far (the worker may still be adding to it)."""
        with self._lock:
            return json.loads(json.dumps(self.data))

    def __getattr__(self, name: str) -> Any:
        try:
            function = getattr(self._lib, name)
        except AttributeError:
            with self._lock:
                missing = self.data.setdefault("missing", [])
                if name not in missing:
                    missing.append(name)
                    missing.sort()
            raise
        symbol = SYMBOLS.get(name)
        if symbol is None:
            return function  # e.g. nvmlErrorString: pynvml sets its restype itself

        def call(*args: Any) -> int:
            code = function(*args)
            # recording must never change what the caller sees
            with contextlib.suppress(Exception):
                self._record(name, symbol, args, int(code))
            return code

        return call

    def _record(self, name: str, symbol: Symbol, args: tuple[Any, ...], code: int) -> None:
        position = 0
        with self._lock:
            node: dict[str, Any] | None = self.data
            if symbol.scope != "system":
                node = self._nodes.get((symbol.scope, _address(args[0])))
                position = 1
            if node is None:
                return  # a handle this capture did not see being made
            keys = [str(int(getattr(k, "value", k)))
                    for k in args[position:position + symbol.keys]]
            outs = [getattr(a, "_obj", a) for a in args[position + symbol.keys + symbol.ignored:]]
            if code != 0:
                answer: Any = {"error": self._errors.get(code, code)}
            else:
                answer = self._read(symbol, outs, node, name, keys)
            if keys:
                node.setdefault(name, {})[",".join(keys)] = answer
            else:
                node[name] = answer

    def _read(self, symbol: Symbol, outs: list[Any], node: dict[str, Any], name: str,
              keys: list[str]) -> Any:
        out = symbol.out
        if out == "status":
            return 0
        if out in ("uint", "int", "enum"):
            value = int(outs[0].value)
            return value & 0xFFFFFFFF if out == "enum" else value
        if out in ("uint2", "int2"):
            return [int(outs[0].value), int(outs[1].value)]
        if out == "string":
            raw = outs[0].value if hasattr(outs[0], "value") else ctypes.string_at(outs[0])
            return raw.decode("utf-8", errors="replace")
        if out == "struct":
            return struct_to_json(outs[0])
        # a handle: calls made on it later are recorded under this node
        previous = node.get(name)
        if keys and isinstance(previous, dict) and not is_error(previous):
            previous = previous.get(",".join(keys))
        child = previous if isinstance(previous, dict) and not is_error(previous) else {}
        self._nodes[(out, _address(outs[0]))] = child
        return child


def _address(handle: Any) -> int:
    if isinstance(handle, int):
        return handle
    return ctypes.cast(handle, ctypes.c_void_p).value or 0


# -- installing a library under pynvml --------------------------------------------------


def binding_module(nv: ModuleType) -> ModuleType:
    """The module holding pynvml's globals (the pynvml<12 fork keeps them in pynvml.nvml)."""
    import sys

    return sys.modules.get(nv.nvmlInit.__module__, nv)


class Installed:
    """A library put under pynvml, and how to put back what was there."""

    def __init__(self, module: ModuleType, lib: Any, saved_lib: Any, saved_refcount: int,
                 saved_text: dict[int, str]) -> None:
        self.module = module
        self.lib = lib
        self.saved_lib = saved_lib
        self.saved_refcount = saved_refcount
        self.saved_text = saved_text

    def restore(self) -> None:
        module = self.module
        with module.libLoadLock:
            if module.nvmlLib is self.lib:
                module.nvmlLib = self.saved_lib
            module._nvmlGetFunctionPointer_cache = {}
            module._nvmlLib_refcount = self.saved_refcount
        module.NVMLError._errcode_to_string = self.saved_text


def install(nv: ModuleType, lib: Any) -> Installed:
    """Make pynvml call `lib` as its native library, with a fresh symbol cache."""
    module = binding_module(nv)
    with module.libLoadLock:
        installed = Installed(module, lib, module.nvmlLib, module._nvmlLib_refcount,
                              dict(module.NVMLError._errcode_to_string))
        module.nvmlLib = lib
        module._nvmlGetFunctionPointer_cache = {}
        module._nvmlLib_refcount = 0
    return installed

