"""The training loop shared by every method: data by step, logging, checkpoints, resume.

The batch for step s is `batch_for_step(s)` and the step's key is fold_in(rng, s), both
pure functions of (seed, s), so a run resumed from a checkpoint sees exactly the data
and randomness the uninterrupted run would have seen.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
import time
from typing import Any, Callable, Mapping, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from dlm.outputs import append_jsonl, write_text
from dlm.train.checkpoint import Checkpointer
from dlm.train.sharding import make_mesh, replicate, shard_batch


class NonFiniteLossError(FloatingPointError):
    """The loss (or gradient norm) became NaN/Inf; the bad state was not saved."""

    def __init__(self, step: int, loss: float, grad_norm: float, last_good: pathlib.Path | None):
        where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was saved yet"
        super().__init__(f"non-finite training loss at step {step}: loss={loss}, "
                         f"grad_norm={grad_norm}; the state was not saved ({where})")
        self.step, self.loss, self.last_good = step, loss, last_good


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    out_dir: pathlib.Path            # metrics.jsonl and checkpoints/ go here
    ckpt_every: int = 100            # also always at the last step; <= 0: only there
    log_every: int = 10              # metrics.jsonl row (and bar update) every N steps
    resume: bool = False             # continue from the latest checkpoint in out_dir
    keep: int = 3                    # checkpoints kept
    quiet: bool = False              # no progress bar
    desc: str = "train"


class LoopResult(NamedTuple):
    state: Any
    history: list[dict]              # the rows written to metrics.jsonl by this call
    resumed_from: int | None         # the checkpoint step resumed from, if any


def _n_tokens(batch: Any) -> int:
    """Tokens in a batch (its "tokens" array), for the tokens/s readout; 0 if unknown."""
    if isinstance(batch, Mapping) and "tokens" in batch:
        return int(np.prod(np.shape(batch["tokens"])))
    return 0


def _truncate_metrics(path: pathlib.Path, step: int) -> None:
    """Drop rows logged after `step` (written before a crash) so a resumed run's log
    has each step once."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    keep = [line for line in rows if json.loads(line).get("step", 0) <= step]
    write_text(path, "".join(line + "\n" for line in keep))


def _restore_or_init(state, ckpt: Checkpointer, cfg: LoopConfig, metrics_path: pathlib.Path):
    latest = ckpt.latest_step()
    if latest is None:
        return state, None
    if not cfg.resume:
        raise FileExistsError(
            f"{ckpt.directory} already holds checkpoints (latest step {latest}); pass "
            f"resume=True (--resume) to continue that run, or use a fresh output directory")
    state = ckpt.restore(latest, state)
    _truncate_metrics(metrics_path, latest)
    return state, latest


def train_loop(state, step_fn: Callable, batch_for_step: Callable[[int], Any], n_steps: int,
               rng: jax.Array, cfg: LoopConfig, mesh=None) -> LoopResult:
    """Run `step_fn` from state.step up to n_steps updates; return the final state.

    step_fn(state, batch, rng) -> (state, metrics) must be the jitted step of
    dlm.train.step. The state (and a FrozenStep's frozen tree) is replicated and each batch
    sharded over `mesh` (default: all devices). Each step's metrics are checked (one step behind, so the device keeps
    working); a NaN/Inf loss raises NonFiniteLossError before the state is saved.
    """
    out = pathlib.Path(cfg.out_dir)
    metrics_path = out / "metrics.jsonl"
    main = jax.process_index() == 0
    mesh = make_mesh() if mesh is None else mesh
    ckpt = Checkpointer(out / "checkpoints", keep=cfg.keep)
    if hasattr(step_fn, "place"):        # a FrozenStep: its frozen base on this mesh too
        step_fn = step_fn.place(mesh)
    try:
        state = replicate(state, mesh)
        state, resumed = _restore_or_init(state, ckpt, cfg, metrics_path)
        last_good = ckpt.path(resumed) if resumed is not None else None
        start = int(jax.device_get(state.step))
        history: list[dict] = []
        bar = tqdm(total=n_steps, initial=start, desc=cfg.desc, dynamic_ncols=True,
                   disable=cfg.quiet or not main or not sys.stderr.isatty())
        window = {"t0": time.perf_counter(), "tokens": 0}
        t_start = time.perf_counter()

        def check_and_log(done: int, metrics, n_tokens: int) -> None:
            window["tokens"] += n_tokens
            m = {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}
            loss, gnorm = m.get("loss", 0.0), m.get("grad_norm", 0.0)
            if not (math.isfinite(loss) and math.isfinite(gnorm)):
                raise NonFiniteLossError(done, loss, gnorm, last_good)
            bar.update(1)
            if done % max(cfg.log_every, 1) and done != n_steps:
                return
            now = time.perf_counter()
            row = {"step": done, **m, "time_s": now - t_start}
            if window["tokens"]:
                row["tokens_per_s"] = window["tokens"] / max(now - window["t0"], 1e-9)
            window.update(t0=now, tokens=0)
            history.append(row)
            if main:
                append_jsonl(metrics_path, [row])
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{row.get('tokens_per_s', 0):.0f}")

        pending = None
        for s in range(start, n_steps):
            host_batch = batch_for_step(s)
            state, metrics = step_fn(state, shard_batch(host_batch, mesh), jax.random.fold_in(rng, s))
            if pending is not None:
                check_and_log(*pending)
            pending = (s + 1, metrics, _n_tokens(host_batch))
            if (cfg.ckpt_every > 0 and (s + 1) % cfg.ckpt_every == 0) or s + 1 == n_steps:
                check_and_log(*pending)
                pending = None
                last_good = ckpt.save(s + 1, state)
        if pending is not None:
            check_and_log(*pending)
        bar.close()
        return LoopResult(state, history, resumed)
    finally:
        ckpt.close()


def step_loop(state, step_fn: Callable, batch_fn: Callable[[int, Any], Any], n_steps: int,
              rng_for_step: Callable[[int], jax.Array], *, log_every: int,
              on_log: Callable[[int, Any, dict], None] | None = None,
              check_every: int | None = None, check_finite: bool = True,
              desc: str = "train", quiet: bool = True) -> Any:
    """The in-memory loop (no checkpoints): n_steps calls of `step_fn` (a jitted step of
    dlm.train.step, or a scan of several) from `state`; returns the final state.

    batch_fn(s, state) -> call s's batch (it may use the current state: a policy's own
    rollouts); rng_for_step(s) -> its key. Every `check_every` calls (default log_every)
    and at the last the metrics come to the host (scalars as floats, stacked values as
    arrays) and, with check_finite, a non-finite loss raises NonFiniteLossError; every
    `log_every` calls and at the last on_log(done, state, metrics) runs (validation,
    early-stopping snapshots, metrics rows).
    """
    log_every = max(int(log_every), 1)
    check_every = log_every if check_every is None else max(int(check_every), 1)
    for s in tqdm(range(n_steps), desc=desc, disable=quiet, dynamic_ncols=True):
        state, metrics = step_fn(state, batch_fn(s, state), rng_for_step(s))
        done = s + 1
        log = done % log_every == 0 or done == n_steps
        if log or done % check_every == 0:
            m = {k: float(v) if np.ndim(v) == 0 else np.asarray(v)
                 for k, v in jax.device_get(metrics).items()}
            loss, gnorm = m.get("loss", 0.0), m.get("grad_norm", 0.0)
            if check_finite and not (np.isfinite(loss).all() and np.isfinite(gnorm).all()):
                raise NonFiniteLossError(done, loss, gnorm, None)
            if log and on_log is not None:
                on_log(done, state, m)
    return state
