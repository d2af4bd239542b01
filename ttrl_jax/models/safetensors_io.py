"""Minimal streaming reader / writer for the safetensors format (no torch, no copies).

Format: 8-byte little-endian header length N, N bytes of JSON header mapping each tensor
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the end
of the header; optional ``"__metadata__"``), then the raw little-endian tensor bytes.
Tensors are read through a read-only `numpy.memmap`, one at a time.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A safetensors file that cannot be read."""


def read_header(path: str) -> tuple[dict, int]:
    """Returns (header dict without metadata, byte offset of the data section)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise SafetensorsError(f"{path}: truncated safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER:
                raise SafetensorsError(f"{path}: implausible header length {n}")
            blob = f.read(n)
            if len(blob) != n:
                raise SafetensorsError(
                    f"{path}: truncated safetensors file ({8 + len(blob)} bytes, "
                    f"the header alone needs {8 + n})"
                )
            header = json.loads(blob)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SafetensorsError(f"{path}: malformed safetensors header ({e})") from None
    header.pop("__metadata__", None)
    return header, 8 + n


class SafetensorsFile:
    """Read-only, memory-mapped access to the tensors of one file."""

    def __init__(self, path: str):
        self.path = path
        self.header, self._data_start = read_header(path)
        self._mm = None

    def keys(self) -> list[str]:
        return list(self.header)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.header[name]["shape"])

    def get(self, name: str) -> np.ndarray:
        """The tensor as a (memory-mapped, read-only) numpy array."""
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        info = self.header[name]
        if info["dtype"] not in _DTYPES:
            raise SafetensorsError(
                f"{self.path}: tensor {name!r} has unsupported dtype {info['dtype']}"
            )
        dtype = _DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end - begin != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise SafetensorsError(
                f"{self.path}: tensor {name!r} byte size does not match its shape"
            )
        if self._data_start + end > len(self._mm):
            raise SafetensorsError(
                f"{self.path}: truncated safetensors file: tensor {name!r} ends at byte "
                f"{self._data_start + end}, the file has {len(self._mm)} bytes"
            )
        buf = self._mm[self._data_start + begin : self._data_start + end]
        return buf.view(dtype).reshape(shape)


def write_file(
    path: str, tensors: Iterable[tuple[str, np.ndarray]], metadata: dict[str, str] | None = None
) -> None:
    """Writes (name, array) pairs to ``path`` (via a temporary file, then renamed)."""
    items = [(name, np.ascontiguousarray(arr)) for name, arr in tensors]
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, arr in items:
        if arr.dtype not in _NAMES:
            raise SafetensorsError(f"cannot write tensor {name!r} of dtype {arr.dtype}")
        header[name] = {
            "dtype": _NAMES[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * ((-len(blob)) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, arr in items:
            f.write(arr.tobytes())
    os.replace(tmp, path)
