"""dlm.sweep: grids (dotted sub-config fields included), validation, slugs, shards, merging.

The runs themselves (scripts.sweep with a fake script) are in test_sweep_runs.py, the
cluster files in test_sweep_cluster.py.
"""
import dataclasses
import json

import pandas as pd
import pytest

from dlm import sweep as S

@dataclasses.dataclass(frozen=True)
class World:
    p_marker: float = 0.8
    k: float = 4.0


def _cfg():
    @dataclasses.dataclass(frozen=True)
    class Cfg:
        entanglement: float = 0.6
        knob: tuple = (0.1, 1.0)
        seeds: int = 3
        name: str = "a"
        world: World = World()
    return Cfg()


# ---- grid, validation, slugs, shards -------------------------------------------------------------
def test_grid_parsing_expansion_and_slugs():
    grid = S.parse_grid_args(["entanglement=0,0.3", "knob=0.1,1;10,100"], _cfg())
    assert grid == {"entanglement": ["0", "0.3"], "knob": ["0.1,1", "10,100"]}
    points = S.expand(grid)
    assert points == [{"entanglement": "0", "knob": "0.1,1"}, {"entanglement": "0", "knob": "10,100"},
                      {"entanglement": "0.3", "knob": "0.1,1"},
                      {"entanglement": "0.3", "knob": "10,100"}]
    assert S.slug(points[1]) == "entanglement=0__knob=10,100"
    odd = {"name": "a b/c"}
    assert S.slug(odd) == S.slug(dict(odd)) and "/" not in S.slug(odd) and " " not in S.slug(odd)
    assert S.slug(odd) != S.slug({"name": "a-b-c"})           # replaced characters -> a hash
    typed = S.check_grid(grid, _cfg(), "x")
    assert typed == {"entanglement": [0.0, 0.3], "knob": [(0.1, 1.0), (10.0, 100.0)]}


def test_grid_validation_errors():
    with pytest.raises(S.SweepError, match="no config field 'entanglment'.*entanglement"):
        S.check_grid({"entanglment": ["1"]}, _cfg(), "scripts.x")
    for field in ("seed", "seeds", "first_seed"):
        with pytest.raises(S.SweepError, match="not a grid axis.*--set seeds=N"):
            S.check_grid({field: ["1", "2"]}, _cfg(), "scripts.x")
    with pytest.raises(S.SweepError, match="entanglement.*'abc'"):
        S.check_grid({"entanglement": ["abc"]}, _cfg(), "scripts.x")
    with pytest.raises(S.SweepError, match="repeats a value"):
        S.parse_grid_args(["entanglement=0,0"], _cfg())
    with pytest.raises(S.SweepError, match="already a grid axis"):
        S.parse_grid_args(["entanglement=0", "entanglement=1"], _cfg())


def test_grid_files_json_and_toml(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps({"entanglement": [0, 0.5], "knob": [[1, 2], [3]]}))
    (tmp_path / "g.toml").write_text('entanglement = [0, 0.5]\nknob = [[1, 2], [3]]\n')
    want = {"entanglement": ["0", "0.5"], "knob": ["1,2", "3"]}
    assert S.load_grid_file(tmp_path / "g.json") == want
    assert S.load_grid_file(tmp_path / "g.toml") == want
    (tmp_path / "bad.json").write_text(json.dumps({"entanglement": 0.5}))
    with pytest.raises(S.SweepError, match="bad.json: field 'entanglement' needs a list"):
        S.load_grid_file(tmp_path / "bad.json")


def test_shards_partition_the_points_and_come_from_the_environment():
    parts = [S.shard_indices(10, i, 3) for i in range(3)]
    assert sorted(sum(parts, [])) == list(range(10)) and parts[1] == [1, 4, 7]
    assert S.resolve_shard("1/3", None, {}) == (1, 3)
    assert S.resolve_shard(None, None, {}) == (0, 1)
    slurm = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert S.resolve_shard(None, None, slurm) == (2, 4)
    assert S.resolve_shard("0/2", None, slurm) == (0, 2)              # explicit wins
    assert S.resolve_shard(None, 5, {"JOB_COMPLETION_INDEX": "3"}) == (3, 5)
    with pytest.raises(S.SweepError, match="no shard count"):
        S.resolve_shard(None, None, {"JOB_COMPLETION_INDEX": "3"})
    with pytest.raises(S.SweepError, match="0 <= i < n"):
        S.resolve_shard("4/4", None, {})
    with pytest.raises(S.SweepError, match="i/n"):
        S.resolve_shard("1-4", None, {})


def test_merge_keeps_a_column_the_script_writes_once_and_checks_it():
    frame = pd.DataFrame({"seed": [0, 1], "entanglement": [0.3, 0.3], "x": [1.0, 2.0]})
    merged = S.merge_results([("p", frame, {"entanglement": 0.3, "k": 4.0})])
    assert list(merged.columns) == ["entanglement", "k", "seed", "x"]
    assert merged.k.tolist() == [4.0, 4.0]
    with pytest.raises(S.SweepError, match="point p: .*'entanglement'.*entanglement=0.6"):
        S.merge_results([("p", frame, {"entanglement": 0.6})])

def test_equal_values_spelled_differently_share_a_slug_and_cannot_repeat():
    typed = S.check_grid({"entanglement": ["0.30", "1"]}, _cfg(), "x")
    assert S.slug(S.point_values({"entanglement": "0.30"}, {"entanglement": ["0.30", "1"]},
                                 typed)) == "entanglement=0.3"
    typed = S.check_grid({"entanglement": ["3e-1", "1.0"], "knob": ["1,2.50"]}, _cfg(), "x")
    grid = {"entanglement": ["3e-1", "1.0"], "knob": ["1,2.50"]}
    assert [S.slug(S.point_values(p, grid, typed)) for p in S.expand(grid)] == \
        ["entanglement=0.3__knob=1,2.5", "entanglement=1__knob=1,2.5"]
    with pytest.raises(S.SweepError, match="'0.3' and '0.30' are the same value"):
        S.check_grid({"entanglement": ["0.3", "0.30"]}, _cfg(), "x")


def test_a_dotted_sub_config_field_is_a_grid_axis():
    grid = S.parse_grid_args(["world.p_marker=0.8,1.0", "entanglement=0"], _cfg())
    typed = S.check_grid(grid, _cfg(), "x")
    assert typed == {"world.p_marker": [0.8, 1.0], "entanglement": [0.0]}
    assert [S.slug(S.point_values(p, grid, typed)) for p in S.expand(grid)] == \
        ["world.p_marker=0.8__entanglement=0", "world.p_marker=1__entanglement=0"]
    with pytest.raises(S.SweepError, match=r"no config field 'world.nope'.*fields of 'world': k, "
                                           r"p_marker"):
        S.check_grid({"world.nope": ["1"]}, _cfg(), "scripts.x")
    with pytest.raises(S.SweepError, match="world.p_marker.*'abc'"):
        S.check_grid({"world.p_marker": ["abc"]}, _cfg(), "scripts.x")
    # the script writes the leaf name (p_marker): kept once, under the axis's name, checked
    frame = pd.DataFrame({"seed": [0, 1], "p_marker": [1.0, 1.0]})
    merged = S.merge_results([("p", frame, {"world.p_marker": 1.0})])
    assert list(merged.columns) == ["world.p_marker", "seed"]
    with pytest.raises(S.SweepError, match="column 'p_marker'.*world.p_marker=0.8"):
        S.merge_results([("p", frame, {"world.p_marker": 0.8})])
