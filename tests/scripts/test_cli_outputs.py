"""Config overrides by field name and atomic output writing."""
import argparse
import dataclasses
import json

import pandas as pd
import pytest

from dlm.cli import (ConfigError, add_common_args, apply_overrides, field_names, get_field,
                     resolve_config, to_jsonable)
from dlm.outputs import append_jsonl, markdown_table, write_csv, write_json, write_text


@dataclasses.dataclass(frozen=True)
class Cfg:
    n: int = 10
    lr: float = 0.1
    name: str = "a"
    flag: bool = False
    seeds: tuple = (0, 1)


def test_overrides_parse_each_field_type():
    cfg = apply_overrides(Cfg(), ["n=20000", "lr=3e-4", "name=b", "flag=true", "seeds=3,4,5"])
    assert cfg == Cfg(n=20000, lr=3e-4, name="b", flag=True, seeds=(3, 4, 5))


def test_unknown_field_and_bad_value_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown field 'm'"):
        apply_overrides(Cfg(), ["m=1"])
    with pytest.raises(ConfigError, match="--set n"):
        apply_overrides(Cfg(), ["n=abc"])
    with pytest.raises(ConfigError, match="FIELD=VALUE"):
        apply_overrides(Cfg(), ["n"])


@dataclasses.dataclass(frozen=True)
class Inner:
    p: float = 0.5
    tags: tuple = ("a",)

    def __post_init__(self):
        if not 0 <= self.p <= 1:
            raise ValueError(f"p must be in [0, 1], got {self.p}")


@dataclasses.dataclass(frozen=True)
class Middle:
    inner: Inner = Inner()
    k: int = 4


@dataclasses.dataclass(frozen=True)
class Outer:
    world: Middle = Middle()
    seeds: int = 2


def test_dotted_overrides_reach_nested_configs_at_any_depth():
    cfg = apply_overrides(Outer(), ["world.k=7", "world.inner.p=0.25", "world.inner.tags=x,y",
                                    "seeds=3"])
    assert cfg == Outer(world=Middle(inner=Inner(p=0.25, tags=("x", "y")), k=7), seeds=3)
    assert Outer().world.inner.p == 0.5                      # the preset is left alone
    assert field_names(Outer()) == ["world.inner.p", "world.inner.tags", "world.k", "seeds"]
    assert get_field(cfg, "world.inner.p") == 0.25
    # config.json stays nested
    assert json.loads(json.dumps(to_jsonable(cfg)))["world"]["inner"]["tags"] == ["x", "y"]


def test_dotted_errors_name_the_valid_fields_at_their_level():
    with pytest.raises(ConfigError, match=r"unknown field 'world.nope'; fields of 'world': inner, k$"):
        apply_overrides(Outer(), ["world.nope=1"])
    with pytest.raises(ConfigError, match=r"unknown field 'world.inner.q'.*'world.inner': p, tags"):
        apply_overrides(Outer(), ["world.inner.q=1"])
    with pytest.raises(ConfigError, match=r"unknown field 'wrld'; fields: seeds, world"):
        apply_overrides(Outer(), ["wrld.k=1"])
    with pytest.raises(ConfigError, match="'seeds' is a value"):
        apply_overrides(Outer(), ["seeds.x=1"])
    with pytest.raises(ConfigError, match="a sub-config.*world.inner.p, world.inner.tags, world.k"):
        apply_overrides(Outer(), ["world=1"])
    with pytest.raises(ConfigError, match=r"world.inner.p=2: p must be in \[0, 1\]"):
        apply_overrides(Outer(), ["world.inner.p=2"])     # the sub-config's own validation
    with pytest.raises(ConfigError, match="--set world.k"):
        apply_overrides(Outer(), ["world.k=many"])


def test_a_bad_set_on_the_command_line_exits_with_code_2(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_common_args(parser, {"quick": Outer()})
    args = parser.parse_args(["--out", str(tmp_path), "--set", "world.nope=1"])
    with pytest.raises(SystemExit, match="fields of 'world': inner, k") as err:
        resolve_config(args, {"quick": Outer()})
    assert err.value.code == 2
    assert "unknown field 'world.nope'" in capsys.readouterr().err


def test_preset_then_override(tmp_path):
    parser = argparse.ArgumentParser()
    presets = {"quick": Cfg(n=5), "full": Cfg(n=500)}
    add_common_args(parser, presets)
    args = parser.parse_args(["--out", str(tmp_path), "--preset", "full", "--set", "lr=1"])
    assert resolve_config(args, presets) == Cfg(n=500, lr=1.0)


def test_model_flag_sets_the_scripts_model_field_and_set_still_wins(tmp_path):
    parser = argparse.ArgumentParser()
    presets = {"quick": Cfg(n=5)}
    add_common_args(parser, presets, model_field="name")
    args = parser.parse_args(["--out", str(tmp_path), "--model", "smollm2-135m"])
    assert resolve_config(args, presets) == Cfg(n=5, name="smollm2-135m")
    args = parser.parse_args(["--out", str(tmp_path), "--model", "x", "--set", "name=y"])
    assert resolve_config(args, presets).name == "y"
    args = parser.parse_args(["--out", str(tmp_path)])
    assert resolve_config(args, presets).name == "a"


def test_writes_are_complete_and_leave_no_temporaries(tmp_path):
    write_json(tmp_path / "config.json", Cfg())
    assert json.loads((tmp_path / "config.json").read_text())["seeds"] == [0, 1]
    frame = pd.DataFrame({"method": ["naive", "deconfoundlm"], "x": [0.5, 0.25]})
    write_csv(tmp_path / "results.csv", frame)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "results.csv"), frame)
    write_text(tmp_path / "summary.md", markdown_table(frame))
    assert "| naive | 0.500 |" in (tmp_path / "summary.md").read_text()
    append_jsonl(tmp_path / "metrics.jsonl", [{"step": 1}, {"step": 2}])
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "summary.md"
    write_text(path, "old")

    class Boom:
        def to_csv(self, f, index):
            f.write("half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_csv(path, Boom())
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]
