"""Reading a GGUF file (llama.cpp's format): open it and read its metadata fields.

Data-layer code (the BPE tokenizer's vocabulary) and the model importer
(dlm.models.gguf_import) both read GGUF files; this module holds the reading, so the
tokenizer does not import the model layer.
"""
from __future__ import annotations

import pathlib
from typing import Any

_REQUIRED = object()


def open_gguf(path: str | pathlib.Path):
    """A gguf.GGUFReader over `path` (memory-mapped), with a clear error if it is not one."""
    import gguf  # imported lazily: only GGUF imports need the package

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as err:  # gguf raises ValueError/struct.error on foreign files
        raise ValueError(f"{path}: not a readable GGUF file ({err})") from err


def gguf_field(reader, key: str, default: Any = _REQUIRED) -> Any:
    """The value of metadata field `key` (strings, numbers, lists), or `default`."""
    field = reader.fields.get(key)
    if field is None:
        if default is _REQUIRED:
            raise KeyError(f"{reader.data.filename}: GGUF metadata lacks {key!r}")
        return default
    return field.contents()
