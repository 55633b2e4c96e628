"""The fake script of the sweep tests: same CLI as a real script (a nested `world`
sub-config included), writes results.csv in milliseconds."""
import textwrap

FAKE = textwrap.dedent('''
    import argparse, dataclasses, os, pathlib, sys, time
    import pandas as pd
    from dlm import cli, outputs

    @dataclasses.dataclass(frozen=True)
    class World:
        p: float = 0.5

    @dataclasses.dataclass(frozen=True)
    class FakeConfig:
        world: World = World()
        a: float = 0.0
        b: str = "x"
        seeds: int = 2
        knob: tuple = (1.0, 2.0)

    PRESETS = {"quick": FakeConfig(), "other": FakeConfig(b="y")}

    if __name__ == "__main__":
        p = argparse.ArgumentParser()
        cli.add_common_args(p, PRESETS)
        p.add_argument("--data", type=pathlib.Path, default=None)
        args = p.parse_args()
        cfg = cli.resolve_config(args, PRESETS)
        with open(args.out.parent.parent / "calls.txt", "a") as f:
            f.write(args.out.name + "\\n")
        if cfg.b == "boom":
            print("the fake script exploded")
            sys.exit(3)
        rows = [{"seed": s, "a": cfg.a, "knob_sum": sum(cfg.knob), "value": 10 * cfg.a + s}
                for s in range(cfg.seeds)]
        if cfg.world.p != 0.5:      # the nested field, written under its leaf name
            rows = [dict(r, p=cfg.world.p) for r in rows]
        # FAKE_CRASH / FAKE_HANG = a slug: write wrong results.csv, then exit 5 / hang
        if args.out.name in (os.environ.get("FAKE_CRASH"), os.environ.get("FAKE_HANG")):
            rows = [dict(r, value=-1.0) for r in rows]
        outputs.write_csv(args.out / "results.csv", pd.DataFrame(rows))
        if args.out.name == os.environ.get("FAKE_CRASH"):
            sys.exit(5)
        if args.out.name == os.environ.get("FAKE_HANG"):
            (args.out / "pid.txt").write_text(str(os.getpid()))
            print("hanging after results.csv", flush=True)
            time.sleep(600)
''')


def install(tmp_path, monkeypatch) -> str:
    """Write the fake script as an importable package under tmp_path; its module name."""
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "fake_script.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    for var in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX",
                "FAKE_CRASH", "FAKE_HANG"):
        monkeypatch.delenv(var, raising=False)
    return "fakepkg.fake_script"
