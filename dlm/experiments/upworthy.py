"""The Upworthy comparison as a library pipeline: observational vs experimental vs
deconfounded reward models on a real A/B archive (scripts.upworthy is its command line).

    log, eval_log = load_inputs(path, None)
    result = run(PRESETS["quick"], log, eval_log)         # -> UpworthyResult

The tests of the log are split by story into train / validation / test; every method of
dlm.rewards.METHODS named in METHODS gets its Targets from one MethodContext (the
observational log: one random arm per train/validation test; the experiment: the headline
arms of the randomised train/validation tests and their within-test pairs) and is fitted
on each text representation by a dlm.rewards backend (LinearBackend on hashed n-grams or
frozen LLM states; TrunkBackend: the from-scratch byte trunk). Scored by ROC-AUC on the
held-out significant within-test pairs with bootstrap CIs over tests
(dlm.realdata.pairs). Bad input raises (LogValidationError, ValueError) before any
training.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import numpy as np
import pandas as pd

REPRESENTATIONS = ("ngram", "trunk", "smollm2-135m", "minilm")
# the methods compared, in table order (all from dlm.rewards.METHODS)
METHODS = ("experimental", "experimental_ctr", "naive", "conditioned", "partial_out",
           "deconfoundlm")
LOSS_VS_DATA = ("experimental", "experimental_ctr", "naive", "deconfoundlm")
CONTRASTS = (("experimental", "experimental_ctr", "loss: pairwise - regression (experimental data)"),
             ("experimental_ctr", "naive", "data: experimental - observational (regression)"),
             ("deconfoundlm", "naive", "deconfounded - observational (regression)"),
             ("experimental_ctr", "deconfoundlm", "experimental - deconfounded (regression)"))


@dataclasses.dataclass(frozen=True)
class UpworthyConfig:
    seed: int = 0
    split: tuple[float, ...] = (0.7, 0.1, 0.2)     # train / val / test shares of the tests
    alpha: float = 0.05                             # evaluation pairs differ at this level
    train_pair_alpha: float = 1.0                   # experimental training pairs (1: all)
    representations: tuple[str, ...] = ("ngram", "trunk")
    model: str = ""                                 # a pretrained LLM whose frozen states join them
    n_boot: int = 1000
    ngram_features: int = 2 ** 14
    l2_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    trunk_d_model: int = 32
    trunk_layers: int = 2
    trunk_heads: int = 4
    trunk_d_ff: int = 96
    trunk_max_len: int = 104                        # bytes incl. BOS/EOS (99% of headlines fit)
    trunk_steps: int = 400
    trunk_batch: int = 64                           # sequences per step (pairs: half as many)
    trunk_lr: float = 2e-3
    trunk_eval_every: int = 80
    llm_batch: int = 64
    include_nonrandomised: bool = False             # keep the window's tests as experiments


PRESETS = {
    "tiny": UpworthyConfig(n_boot=50, ngram_features=512, l2_grid=(1e-3,), trunk_d_model=16,
                           trunk_d_ff=32, trunk_max_len=48, trunk_steps=4, trunk_batch=8,
                           trunk_eval_every=2),
    "quick": UpworthyConfig(),
    "full": UpworthyConfig(n_boot=2000, trunk_d_model=256, trunk_layers=4, trunk_d_ff=768,
                           trunk_max_len=128, trunk_steps=4000, trunk_batch=128,
                           trunk_lr=1e-3, trunk_eval_every=250),
}


# ---- data ----------------------------------------------------------------------------------------
def load_inputs(data: pathlib.Path, eval_data: pathlib.Path | None):
    """Both files through the loader's validation, before anything is trained."""
    from dlm.data.upworthy import load_upworthy

    return load_upworthy(data), (None if eval_data is None else load_upworthy(eval_data))


def _overlapping_tests(eval_arms, train_log) -> np.ndarray:
    """[G_eval] bool: eval tests that share a test id, headline or lede with the training
    file (the same story on both sides would leak)."""
    from dlm.realdata.pairs import norm_text

    texts = lambda log: [log.content] + ([] if log.context is None else [log.context])  # noqa: E731
    seen = set().union(*(set(norm_text(t)) for t in texts(train_log))) - {""}
    ids = set(train_log.group_labels or ())
    bad = np.zeros(len(eval_arms.group_labels), bool)
    for cols in map(norm_text, texts(eval_arms)):
        hit = np.array([c in seen for c in cols])
        bad[np.asarray(eval_arms.group)[hit]] = True
    bad |= np.array([g in ids for g in eval_arms.group_labels])
    return bad


def _window_tests(cfg: UpworthyConfig, log) -> np.ndarray:
    """[G] bool: tests left out of experimental use (none with include_nonrandomised)."""
    from dlm.realdata import pairs as P

    if cfg.include_nonrandomised:
        return np.zeros(int(np.max(log.group)) + 1, bool)
    return P.nonrandomised_tests(log)


def _left_out(arms, tests_G, alpha) -> dict:
    """Tests, headline arms and within-test pairs (at `alpha`) of the selected tests."""
    from dlm.realdata import pairs as P

    sub = arms.take(P.rows_of_tests(arms, tests_G))
    return {"tests": int(np.unique(sub.group).size), "arms": len(sub),
            "pairs": len(P.within_test_pairs(sub, alpha=alpha)) if len(sub) else 0}


def prepare(cfg: UpworthyConfig, log, eval_log=None) -> dict:
    """Split, pairs and the observational log; errors here come before any training.

    Experimental data (training pairs and arms, evaluation pairs) come from randomised
    tests only: the non-randomised window's tests are left out (counted in "left_out")
    unless cfg.include_nonrandomised. The observational log keeps every test."""
    from dlm.realdata import pairs as P

    split = cfg.split if eval_log is None else (cfg.split[0] + cfg.split[2], cfg.split[1], 0.0)
    test_of = P.split_tests(log, split, cfg.seed)               # [G] 0 train, 1 val, 2 test
    arms = P.headline_arms(log)
    window = _window_tests(cfg, log)
    train_alpha = None if cfg.train_pair_alpha >= 1 else cfg.train_pair_alpha
    notes = []
    if eval_log is None:
        eval_arms, eval_window = arms, window & (test_of == 2)
        keep_eval = (test_of == 2) & ~window
    else:
        eval_arms = P.headline_arms(eval_log)
        bad = _overlapping_tests(eval_arms, log)
        if bad.any():
            notes.append(f"{int(bad.sum())} of {bad.size} evaluation tests share a test id, "
                         "headline or lede with --data and were left out")
        eval_window = _window_tests(cfg, eval_log) & ~bad
        keep_eval = ~bad & ~eval_window
    left_out = {"train": _left_out(arms, window & (test_of < 2), train_alpha),
                "eval": _left_out(eval_arms, eval_window, cfg.alpha),
                "rows": int(window[np.asarray(log.group)].sum())}
    eval_arms = eval_arms.take(P.rows_of_tests(eval_arms, keep_eval))
    eval_pairs = P.within_test_pairs(eval_arms, alpha=cfg.alpha)
    if len(eval_pairs) == 0:
        where = eval_log.source if eval_log is not None else f"the test split of {log.source}"
        raise ValueError(f"{where}: no within-test pairs of different headlines differ at "
                         f"alpha={cfg.alpha}; nothing to evaluate on")
    fit_rows = P.rows_of_tests(log, test_of < 2)                # observational: every test
    obs = log.take(fit_rows[P.one_arm_per_test(log.take(fit_rows), cfg.seed)])
    fit_arms = arms.take(P.rows_of_tests(arms, (test_of < 2) & ~window))
    arm_val = test_of[np.asarray(fit_arms.group)] == 1
    train_pairs = P.within_test_pairs(fit_arms, alpha=train_alpha)
    return dict(log=log, test_of=test_of, obs=obs, obs_val=test_of[obs.group] == 1,
                fit_arms=fit_arms, arm_val=arm_val, train_pairs=train_pairs,
                pair_val=arm_val[train_pairs.win], eval_arms=eval_arms, eval_pairs=eval_pairs,
                left_out=left_out, notes=notes)


# ---- models --------------------------------------------------------------------------------
def representation_spec(rep: str, cfg: UpworthyConfig) -> str:
    """The dlm.representations spec of a frozen representation name: "ngram" is the sparse
    hashed n-grams of cfg.ngram_features columns, a pretrained model name its frozen
    states ("llm:NAME"); anything else is a spec already."""
    if rep == "ngram":
        return f"ngram:{cfg.ngram_features}:sparse"
    return f"llm:{rep}" if rep in REPRESENTATIONS[2:] else rep


def make_backend(rep: str, cfg: UpworthyConfig, history: list, progress: bool, train_texts=()):
    """The dlm.rewards backend of one representation: the trunk trained from scratch, or
    exact linear models on a frozen representation fitted on `train_texts`."""
    if rep == "trunk":
        from dlm.rewards.trunk import TrunkBackend, TrunkConfig

        tc = TrunkConfig(d_model=cfg.trunk_d_model, n_layers=cfg.trunk_layers,
                         n_heads=cfg.trunk_heads, n_kv_heads=max(1, cfg.trunk_heads // 2),
                         d_ff=cfg.trunk_d_ff, max_len=cfg.trunk_max_len,
                         steps=cfg.trunk_steps, batch_size=cfg.trunk_batch, lr=cfg.trunk_lr,
                         eval_every=cfg.trunk_eval_every, seed=cfg.seed)
        return TrunkBackend(tc, history, progress, rep)
    from dlm.representations import fit_representation
    from dlm.rewards.linear import LinearBackend

    represent = fit_representation(representation_spec(rep, cfg), train_texts, seed=cfg.seed,
                                   llm_batch=cfg.llm_batch)
    return LinearBackend(represent, cfg.l2_grid, history, rep)


def check_representations(reps, cfg: UpworthyConfig | None = None) -> None:
    """Every name is "trunk" or a (registered) frozen representation; an LLM is installed."""
    from dlm.models.text_encoders import is_available
    from dlm.representations import available_representations

    cfg = UpworthyConfig() if cfg is None else cfg
    prefixes = {s.partition(":")[0] for s in available_representations()}
    specs = {r: representation_spec(r, cfg) for r in reps if r != "trunk"}
    unknown = [r for r, s in specs.items() if s.partition(":")[0] not in prefixes]
    if unknown:
        raise ValueError(f"unknown representations {unknown}; known: {', '.join(REPRESENTATIONS)} "
                         f"or a dlm.representations spec ({', '.join(available_representations())})")
    for r, s in specs.items():
        if s.startswith("llm:") and not is_available(s[4:]):
            raise ValueError(f"representation {r}: the model {s[4:]!r} is not installed "
                             "(see README, scripts.embed_texts, for the pip command)")


def method_targets(cfg: UpworthyConfig, d: dict, methods=METHODS) -> dict:
    """Each of `methods`' dlm.rewards Targets from one MethodContext (the adjustments of
    partial_out and deconfoundlm are cross-fitted here, once for all representations)."""
    from dlm.rewards import METHODS as REGISTRY
    from dlm.rewards import MethodContext

    ctx = MethodContext(d["obs"], seed=cfg.seed, val=d["obs_val"], experiment=d["fit_arms"],
                        experiment_val=d["arm_val"],
                        pairs=(d["train_pairs"].win, d["train_pairs"].lose))
    return {m: REGISTRY[m].target_fn(ctx) for m in methods}


@dataclasses.dataclass(eq=False)
class UpworthyResult:
    results: pd.DataFrame            # method, representation, auc (+ CI, n_pairs, vs_naive)
    contrasts: pd.DataFrame          # paired AUC differences (CONTRASTS)
    data: dict                       # prepare()'s split, logs and pairs
    adjusted: dict[str, Any]         # partial_out / deconfoundlm -> crossfit.Adjusted
    history: list[dict]              # validation rows of the backends
    timings: dict[str, float]


def run(cfg: UpworthyConfig, log, eval_log=None, progress: bool = False) -> UpworthyResult:
    """Targets, one scorer per method and representation, AUC tables and contrasts."""
    from dlm.realdata import pairs as P
    from dlm.rewards.fit import fit_scorers

    check_representations(cfg.representations, cfg)
    d = prepare(cfg, log, eval_log)
    t0 = time.perf_counter()
    targets = method_targets(cfg, d)
    timings = {"adjustment": time.perf_counter() - t0}
    adjusted = {m: t.adjusted for m, t in targets.items() if t.adjusted is not None}
    ev, arms = d["eval_pairs"], d["eval_arms"]
    uniq, inv = np.unique(np.asarray(arms.content).astype(str), return_inverse=True)
    history, tables, contrasts = [], [], []
    for rep in cfg.representations:
        t0 = time.perf_counter()
        train_texts = np.concatenate([np.asarray(d["obs"].content),
                                      np.asarray(d["fit_arms"].content)])
        scorers = fit_scorers(targets, make_backend(rep, cfg, history, progress, train_texts))
        diffs = {}
        for method, score in scorers.items():
            s = np.asarray(score(list(uniq)))[inv]
            diffs[method] = s[ev.win] - s[ev.lose]
        table = P.auc_table(diffs, ev.group, "naive", cfg.n_boot, seed=cfg.seed)
        tables.append(table.assign(representation=rep))
        con = P.auc_contrasts(diffs, ev.group, [c[:2] for c in CONTRASTS], cfg.n_boot,
                              seed=cfg.seed)      # same seed: the same resamples as the table
        contrasts.append(con.assign(contrast=[c[2] for c in CONTRASTS], representation=rep))
        timings[rep] = time.perf_counter() - t0
    return UpworthyResult(pd.concat(tables, ignore_index=True),
                          pd.concat(contrasts, ignore_index=True), d, adjusted, history, timings)
