"""A numpy reader for .safetensors files (no `safetensors`/torch dependency).

Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {...}}, then the raw little-endian tensor bytes
(offsets relative to the end of the header).
"""
from __future__ import annotations

import json
import pathlib
import struct

import numpy as np

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
           "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    # bfloat16 is the upper half of a float32: shift the bits into place
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """name -> array (BF16 widened to float32). Raises ValueError naming the file when malformed."""
    path = pathlib.Path(path)
    data = path.read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} runs past the end of the file")
    try:
        header = json.loads(data[8:8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: header is not JSON ({err})") from None
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        if end > len(body) or begin > end:
            raise ValueError(f"{path}: tensor {name!r} offsets {begin}:{end} outside the data")
        if dtype == "BF16":
            arr = _bf16_to_f32(np.frombuffer(body[begin:end], dtype="<u2"))
        elif dtype in _DTYPES:
            arr = np.frombuffer(body[begin:end], dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
        else:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        if arr.size != int(np.prod(shape)):
            raise ValueError(f"{path}: tensor {name!r} has {arr.size} values for shape {shape}")
        out[name] = arr.reshape(shape).copy()  # copy: own the memory, not the file's bytes
    return out
