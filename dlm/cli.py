"""Command-line plumbing shared by every script: presets, field overrides, --out.

A script's config is a frozen dataclass; presets are named instances of it. The command
line picks a preset (`--preset quick`) and overrides any field by name
(`--set n_postings=20000 --set seeds=5`), so sweeps never need a code change.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import typing
from typing import Any, Mapping, TypeVar

C = TypeVar("C")


def add_common_args(parser: argparse.ArgumentParser, presets: Mapping[str, Any] | None = None,
                    default_preset: str = "quick", model_field: str | None = None) -> None:
    """--out (required), --preset, repeated --set FIELD=VALUE, and --model NAME when the
    config has a field naming the policy model (`model_field`): --model is sugar for
    --set <model_field>=NAME, so every script spells the model choice the same way."""
    parser.add_argument("--out", required=True, type=pathlib.Path,
                        help="output directory (created; results.csv, summary.md, plots, config.json)")
    if presets:
        parser.add_argument("--preset", choices=sorted(presets), default=default_preset,
                            help=f"named configuration (default: {default_preset})")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE", help="override one config field by name; repeatable")
    if model_field:
        parser.add_argument("--model", default=None, metavar="NAME",
                            help="policy model: a decoder preset (tiny, small, base, ...) or a "
                                 "pretrained LLM (smollm2-135m); default: the preset's")
        parser.set_defaults(model_field=model_field)


def _parse_value(text: str, annotation: Any, current: Any) -> Any:
    """Parse `text` into the type of a dataclass field (uses the current value as a hint)."""
    target = type(current) if current is not None else annotation
    if isinstance(target, str):  # postponed annotations: fall back on the current value
        target = type(current)
    origin = typing.get_origin(target)
    if target is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {text!r}")
    if target in (int, float, str):
        return target(text)
    if target is tuple or origin is tuple or target is list or origin is list:
        items = [t for t in text.split(",") if t != ""]
        elem = type(current[0]) if current else str
        return tuple(_parse_value(t, elem, elem(0) if elem in (int, float) else "") for t in items)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(cfg: C, overrides: list[str]) -> C:
    """Return `cfg` with each FIELD=VALUE applied; unknown fields are an error."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    changes = {}
    for item in overrides:
        if "=" not in item:
            raise SystemExit(f"--set expects FIELD=VALUE, got {item!r}")
        name, text = item.split("=", 1)
        if name not in fields:
            raise SystemExit(f"--set: unknown field {name!r}; fields: {', '.join(sorted(fields))}")
        try:
            changes[name] = _parse_value(text, fields[name].type, getattr(cfg, name))
        except ValueError as err:
            raise SystemExit(f"--set {name}: {err}") from None
    return dataclasses.replace(cfg, **changes)


def resolve_config(args: argparse.Namespace, presets: Mapping[str, C]) -> C:
    """The chosen preset with --model (if the script has it) and then every --set applied."""
    overrides = list(args.overrides)
    if getattr(args, "model", None):
        overrides.insert(0, f"{args.model_field}={args.model}")
    return apply_overrides(presets[args.preset], overrides)


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, pathlib.Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj
