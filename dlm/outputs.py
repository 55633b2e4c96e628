"""Writing a script's --out DIR without leaving half-written files behind.

Every file is written to a temporary name in the same directory and renamed into place,
so a crash leaves either the old file or the new one, never a truncated one.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any, Callable, Iterable, Mapping

from dlm.cli import to_jsonable


def write_atomic(path: pathlib.Path, write: Callable[[Any], None], mode: str = "w") -> pathlib.Path:
    """Call write(f) on a temporary file beside `path`, then rename it into place."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: pathlib.Path, text: str) -> pathlib.Path:
    return write_atomic(path, lambda f: f.write(text))


def write_json(path: pathlib.Path, obj: Any) -> pathlib.Path:
    return write_atomic(path, lambda f: json.dump(to_jsonable(obj), f, indent=2, sort_keys=True))


def write_csv(path: pathlib.Path, frame) -> pathlib.Path:
    """Write a pandas DataFrame as CSV (no index)."""
    return write_atomic(path, lambda f: frame.to_csv(f, index=False))


def save_figure(path: pathlib.Path, fig) -> pathlib.Path:
    """Save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"), mode="wb")
    plt.close(fig)
    return path


def append_jsonl(path: pathlib.Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows to a JSON-lines file (training curves; appends are whole lines)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(to_jsonable(dict(row))) + "\n")


def markdown_table(frame, floatfmt: str = ".3f") -> str:
    """A pandas DataFrame as a GitHub-markdown table (no tabulate dependency)."""
    cols = list(frame.columns)
    fmt = lambda v: format(v, floatfmt) if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
