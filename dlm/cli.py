"""Command-line plumbing shared by every script: presets, field overrides, --out.

A script's config is a frozen dataclass; presets are named instances of it. The command
line picks a preset (`--preset quick`) and overrides any field by name
(`--set n_postings=20000 --set seeds=5`), so sweeps never need a code change. A config may
hold sub-configs (`world: HeadlineWorldConfig`); their fields are set by dotted path
(`--set world.p_marker=1.0`), at any depth.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import typing
import sys
from typing import Any, Mapping, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A bad --set: unknown field (the valid ones named), unparsable or invalid value."""


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
                        metavar="FIELD=VALUE",
                        help="override one config field by name (dotted into sub-configs: "
                             "world.p_marker=1.0); repeatable")
    if model_field:
        parser.add_argument("--model", default=None, metavar="NAME",
                            help="policy model: a decoder preset (tiny, small, base, ...) or a "
                                 "pretrained LLM (smollm2-135m); default: the preset's")
        parser.set_defaults(model_field=model_field)


def corpus_main(doc: str, presets: Mapping[str, Any], run, argv: list[str] | None = None
                ) -> None:
    """The whole command line of a script that trains on a corpus (scripts.dpo_digits,
    scripts.train_oracle_reward): --out/--preset/--set/--model, --data and --quiet, then
    run(cfg, out, data, quiet)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_common_args(parser, presets, default_preset="quick", model_field="model")
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="Upworthy archive (.csv/.csv.gz/.parquet); default: built-in corpus")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or printout")
    args = parser.parse_args(argv)
    cfg = resolve_config(args, presets)
    try:
        run(cfg, args.out, args.data, args.quiet)
    except (ValueError, FileExistsError) as err:   # unknown sft_preset, a cache holding another run
        raise SystemExit(str(err)) from None


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


def _is_config(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def field_names(cfg: Any, prefix: str = "") -> list[str]:
    """Every settable leaf of `cfg` as a dotted name ("world.p_marker"), sub-configs walked."""
    names = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        names += (field_names(value, f"{prefix}{f.name}.") if _is_config(value)
                  else [prefix + f.name])
    return names


def get_field(cfg: Any, path: str) -> Any:
    """The value at a dotted path (ConfigError naming the valid fields where a name is wrong)."""
    parts = path.split(".")
    for i, name in enumerate(parts):
        _check_field(cfg, name, parts[:i])
        cfg = getattr(cfg, name)
    return cfg


def _check_field(cfg: Any, name: str, parents: list[str]) -> None:
    where = ".".join(parents)
    if not _is_config(cfg):
        raise ConfigError(f"--set {where}.{name}: {where!r} is a value, not a sub-config")
    fields = [f.name for f in dataclasses.fields(cfg)]
    if name not in fields:
        level = f"fields of {where!r}" if where else "fields"
        raise ConfigError(f"--set: unknown field {'.'.join([*parents, name])!r}; "
                          f"{level}: {', '.join(sorted(fields))}")


def _replace(cfg: Any, parts: list[str], text: str, path: str, depth: int = 0) -> Any:
    """`cfg` with the leaf at parts[depth:] parsed from `text`; sub-configs are rebuilt
    bottom-up, so their own __post_init__ checks see the new value."""
    name = parts[depth]
    _check_field(cfg, name, parts[:depth])
    current = getattr(cfg, name)
    if depth + 1 < len(parts):
        new = _replace(current, parts, text, path, depth + 1)
    elif _is_config(current):
        raise ConfigError(f"--set {path}: a sub-config; set one of its fields: "
                          f"{', '.join(f'{path}.{n}' for n in field_names(current))}")
    else:
        annotation = {f.name: f.type for f in dataclasses.fields(cfg)}[name]
        try:
            new = _parse_value(text, annotation, current)
        except ValueError as err:
            raise ConfigError(f"--set {path}: {err}") from None
    try:
        return dataclasses.replace(cfg, **{name: new})
    except (ValueError, TypeError) as err:   # the config's own validation of the new value
        raise ConfigError(f"--set {path}={text}: {err}") from None


def apply_overrides(cfg: C, overrides: list[str]) -> C:
    """Return `cfg` with each FIELD=VALUE applied; FIELD may be a dotted path into nested
    configs (world.p_marker). Unknown fields raise ConfigError naming the valid ones at
    that level."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects FIELD=VALUE, got {item!r}")
        path, text = item.split("=", 1)
        cfg = _replace(cfg, path.split("."), text, path)
    return cfg


class UsageExit(SystemExit):
    """A command-line error: exit code 2 (argparse's), the message printed to stderr."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message
        print(f"error: {message}", file=sys.stderr)

    def __str__(self) -> str:
        return self.message


def resolve_config(args: argparse.Namespace, presets: Mapping[str, C]) -> C:
    """The chosen preset with --model (if the script has it) and then every --set applied;
    the command-line entry: a bad --set exits with code 2 (UsageExit)."""
    overrides = list(args.overrides)
    if getattr(args, "model", None):
        overrides.insert(0, f"{args.model_field}={args.model}")
    try:
        return apply_overrides(presets[args.preset], overrides)
    except ConfigError as err:
        raise UsageExit(str(err)) from None


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
