"""NVML structs that the source lays out itself, as the C header defines them.

nvidia-ml-py 12.x declares nvmlGpuFabricInfo_t's cluster UUID as an 80-byte string
(the C field is 16 bytes), which would misplace every field after it, and lacks the
versioned struct; these definitions are right with every binding version.
"""

from __future__ import annotations

import ctypes


class FabricInfo(ctypes.Structure):
    """nvmlGpuFabricInfo_t, for nvmlDeviceGetGpuFabricInfo."""

    _fields_ = [("clusterUuid", ctypes.c_uint8 * 16), ("status", ctypes.c_uint),
                ("cliqueId", ctypes.c_uint), ("state", ctypes.c_uint)]


class FabricInfoV2(ctypes.Structure):
    """nvmlGpuFabricInfo_v2_t, for nvmlDeviceGetGpuFabricInfoV."""

    _fields_ = [("version", ctypes.c_uint), ("clusterUuid", ctypes.c_uint8 * 16),
                ("status", ctypes.c_uint), ("cliqueId", ctypes.c_uint),
                ("state", ctypes.c_uint), ("healthMask", ctypes.c_uint)]


FABRIC_INFO_V2 = (2 << 24) | ctypes.sizeof(FabricInfoV2)
FABRIC_STATE_COMPLETED = 3


def uuid_text(data: bytes) -> str:
    """16 bytes as a canonical lower-case UUID."""
    text = data.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:32]}"


def uuid_bytes(text: str) -> bytes:
    """The 16 bytes of a UUID written with or without dashes."""
    data = bytes.fromhex(text.replace("-", ""))
    if len(data) != 16:
        raise ValueError(f"{text!r} is not a UUID")
    return data
