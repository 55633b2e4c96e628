"""One command for a lent GPU: the throughput and replication checks, one report.

    python -m scripts.device_check --out runs/device_check            # preset gpu, 480 s
    python -m scripts.device_check --preset toy --out runs/dc_toy     # CPU, toy sizes
        [--set budget_s=480] [--set parts=bench,lora] [--data UPWORTHY.csv.gz]

Runs each part as its own subprocess (`python -m scripts.<name> ... --out OUT/<part>`), in
order, each with a time budget cut from what is left of the total (its weight over the
weights still to run, so time an early part leaves unused goes to the later ones):

- bench: scripts.bench in bf16 on the ~100M-parameter `large100m` decoder: train
  tokens/s and MFU against a bf16 matmul measured in the same process; KV-cache
  sampling tokens/s (target on an H100/H200-class GPU: MFU >= 0.40);
- lora: scripts.bench_pretrained on SmolLM2-135M: LoRA SFT step tokens/s (and its
  compile seconds), prefill and KV-cache decode tokens/s;
- estimator: scripts.bench_deconfound on 10M postings (sample, write, deconfound end to
  end; seconds per stage and the weekday-effect errors);
- monday: scripts.replicate_monday --model smollm2-135m, cut down to fit the budget
  (one shared LoRA SFT, two fine-tuning seeds); --data passes the Upworthy file to it.

A part that fails or runs past its budget (its process group is killed) is recorded as
such and the others still run. The toy preset runs the same parts at toy sizes on any
machine (a scratch decoder instead of SmolLM2, seconds each). Writes OUT/report.md (the
status table, the key numbers, each part's summary.md or its log's tail), results.csv
(part, status, seconds, budget_s, quantity, value), config.json and OUT/<part>/ (the
part's own outputs and log.txt).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pandas as pd

from dlm import cli, outputs

REPO = pathlib.Path(__file__).resolve().parents[1]
MFU_TARGET = 0.40


@dataclasses.dataclass(frozen=True)
class DeviceCheckConfig:
    budget_s: float = 480.0            # all parts together (plus a few seconds of report)
    parts: tuple[str, ...] = ("bench", "lora", "estimator", "monday")
    toy: bool = False                  # the toy sizes (set by --preset toy)


PRESETS = {"gpu": DeviceCheckConfig(), "toy": DeviceCheckConfig(budget_s=900.0, toy=True)}

# part -> (weight in the budget, module, arguments at gpu size, arguments at toy size)
PARTS: dict[str, tuple[float, str, list[str], list[str]]] = {
    "bench": (0.2, "scripts.bench", ["--preset", "gpu", "--set", "model=large100m"],
              ["--preset", "tiny"]),
    "lora": (0.2, "scripts.bench_pretrained", ["--preset", "gpu", "--model", "smollm2-135m"],
             ["--preset", "tiny"]),
    "estimator": (0.25, "scripts.bench_deconfound",
                  ["--preset", "default", "--set", "n_rows=10000000", "--set", "chunk=1000000"],
                  ["--preset", "tiny"]),
    # ~1/5 of the 15-minute `full` preset: 200 SFT steps, 2 x 2 DPO runs of 100 steps
    "monday": (0.35, "scripts.replicate_monday",
               ["--preset", "full", "--model", "smollm2-135m", "--set", "sft_steps=200",
                "--set", "ft_seeds=0,1", "--set", "gen_seeds=0", "--set", "steps=100",
                "--set", "n_generations=1000", "--quiet"],
               ["--preset", "tiny", "--quiet"]),
}

# part -> the bench.json keys its report rows quote
KEYS = {
    "bench": ("n_params", "train_tokens_per_s", "matmul_flops_per_s", "model_flops_per_s",
              "model_flops_utilisation", "sample_tokens_per_s_kv", "kv_speedup"),
    "lora": ("n_params", "lora_train_tokens_per_s", "lora_step_seconds", "lora_compile_seconds",
             "prefill_tokens_per_s", "decode_tokens_per_s", "peak_rss_after_lora_mb"),
    "estimator": ("rows", "sample_s", "deconfound_command_s", "validate_fit_diagnose_s"),
}


def part_command(name: str, cfg: DeviceCheckConfig, out: pathlib.Path,
                 data: pathlib.Path | None) -> list[str]:
    _, module, gpu_args, toy_args = PARTS[name]
    cmd = [sys.executable, "-m", module, *(toy_args if cfg.toy else gpu_args), "--out", str(out)]
    if name == "monday" and data is not None:
        cmd += ["--data", str(data)]
    return cmd


def run_part(cmd: list[str], out: pathlib.Path, budget_s: float) -> tuple[str, float]:
    """(status, seconds) of one part run in its own process group, killed at budget_s."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(out / "log.txt", "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)   # the part and anything it started
            proc.wait()
            return f"timeout ({budget_s:.0f} s)", time.perf_counter() - t0
    return ("ok" if rc == 0 else f"failed (rc {rc})"), time.perf_counter() - t0


def part_numbers(name: str, out: pathlib.Path) -> dict[str, float]:
    """The key numbers a finished part wrote (its bench.json; monday: marker rates)."""
    if name == "monday":
        frame = pd.read_csv(out / "results.csv")
        means = frame.groupby("model")[["happy", "monday", "friday"]].mean()
        return {f"{model} {m} %": float(means.loc[model, m])
                for model in means.index for m in means.columns}
    bench = json.loads((out / "bench.json").read_text())
    return {k: float(bench[k]) for k in KEYS[name] if k in bench}


def _tail(path: pathlib.Path, n: int = 15) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(lines[-n:])


def _mfu_line(out: pathlib.Path, numbers: dict) -> str:
    if "model_flops_utilisation" not in numbers:
        return ""
    bench = json.loads((out / "bench" / "bench.json").read_text())
    mfu = numbers["model_flops_utilisation"]
    if bench["platform"] == "gpu":
        verdict = f"target >= {MFU_TARGET:.2f} on an H100/H200-class GPU: " + (
            "met" if mfu >= MFU_TARGET else "NOT met")
    else:
        verdict = f"the >= {MFU_TARGET:.2f} target is for a GPU; this ran on {bench['platform']}"
    return f"- MFU {mfu:.3f} on {bench['device']} ({verdict})\n"


def report(cfg: DeviceCheckConfig, preset: str, runs: list[dict], out: pathlib.Path) -> str:
    status = pd.DataFrame([{k: r[k] for k in ("part", "status", "seconds", "budget_s")}
                           for r in runs])
    rows = [{**{k: r[k] for k in ("part", "status", "seconds", "budget_s")},
             "quantity": q, "value": v} for r in runs for q, v in r["numbers"].items()]
    keys = pd.DataFrame(rows, columns=["part", "quantity", "value"])
    text = (f"# Device check ({preset}): {len(runs)} parts, budget {cfg.budget_s:.0f} s, "
            f"{status.seconds.sum():.0f} s used\n\n" + outputs.markdown_table(status, ".1f")
            + "\n## Key numbers\n\n" + outputs.markdown_table(keys[["part", "quantity", "value"]],
                                                              ".4g")
            + "\n" + _mfu_line(out, {q: v for r in runs if r["part"] == "bench"
                                     for q, v in r["numbers"].items()}))
    for r in runs:
        summary = out / r["part"] / "summary.md"
        body = (summary.read_text() if r["status"] == "ok" and summary.exists()
                else "```\n" + _tail(out / r["part"] / "log.txt") + "\n```\n")
        text += f"\n## {r['part']}: {r['status']}\n\n`{' '.join(r['command'][1:])}`\n\n{body}"
    return text


def run(cfg: DeviceCheckConfig, preset: str, out: pathlib.Path,
        data: pathlib.Path | None = None) -> list[dict]:
    unknown = sorted(set(cfg.parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"--set parts: unknown {unknown}; have {', '.join(PARTS)}")
    outputs.write_json(out / "config.json", {"preset": preset, "config": cfg,
                                             "data": str(data) if data else None})
    t_start, runs = time.perf_counter(), []
    for i, name in enumerate(cfg.parts):
        left = cfg.budget_s - (time.perf_counter() - t_start)
        budget = left * PARTS[name][0] / sum(PARTS[p][0] for p in cfg.parts[i:])
        cmd = part_command(name, cfg, out / name, data)
        if budget < 1:
            status, seconds = "skipped (no budget left)", 0.0
        else:
            status, seconds = run_part(cmd, out / name, budget)
        numbers = {}
        if status == "ok":
            try:
                numbers = part_numbers(name, out / name)
            except (OSError, KeyError, ValueError) as err:
                status = f"ok, outputs unreadable ({type(err).__name__}: {err})"
        runs.append({"part": name, "status": status, "seconds": seconds, "budget_s": budget,
                     "command": cmd, "numbers": numbers})
        print(f"{name}: {status} in {seconds:.1f} s (budget {budget:.0f} s)", flush=True)
    rows = [{"part": r["part"], "status": r["status"], "seconds": r["seconds"],
             "budget_s": r["budget_s"], "quantity": q, "value": v}
            for r in runs for q, v in (r["numbers"].items() or [("", float("nan"))])]
    outputs.write_csv(out / "results.csv", pd.DataFrame(rows))
    outputs.write_text(out / "report.md", report(cfg, preset, runs, out))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    cli.add_common_args(parser, PRESETS, default_preset="gpu")
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="the Upworthy file for the monday part (default: built-in corpus)")
    args = parser.parse_args(argv)
    if args.data is not None and not args.data.exists():
        parser.error(f"--data {args.data}: no such file")
    out = args.out.resolve()   # the parts run with the repository as their cwd
    runs = run(cli.resolve_config(args, PRESETS), args.preset, out,
               args.data.resolve() if args.data else None)
    print((out / "report.md").read_text())
    return 0 if all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
