"""The paper's Monday experiment as a library pipeline (scripts.replicate_monday parses its
config and calls run or combine): DPO on confounded pairs vs DeconfoundLM-DPO vs the
Control-DPO negative control. It lives in sims because its default arms are the headline
world's (sims.monday.builtin_arms); with an Upworthy file it reads only real data. The
design is in scripts.replicate_monday's docstring and README.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re
import shutil
import time

import numpy as np
import pandas as pd

from dlm import outputs
from dlm.causal.fit import EstimatorConfig
from dlm.data.corpus import stories_from_log
from dlm.eval.causal_metrics import marker_rate
from dlm.eval.policy_eval import kl_to_reference, policy_generations, samples_markdown
from dlm.policy import sft, sft_cache
from dlm.policy.dpo import DPOConfig, train_dpo
from dlm.realdata import monday
from dlm.realdata.pairs import split_tests, story_of_test
from dlm.experiments.monday_report import (COMPARISONS, MARKERS, MODELS, PAPER,  # noqa: F401
                                           model_table, plot, prediction_table, seed_means,
                                           summary_md, t_interval, welch_table)

# the pair ordering each DPO model trains on (the same kept pairs for all three)
ORDERING = {"DPO": "observed", "DeconfoundLM-DPO": "adjusted", "Control-DPO": "real CTR"}


@dataclasses.dataclass(frozen=True)
class MondayExperimentConfig:
    sft_preset: str = "quick"         # dlm.policy.sft.PRESETS
    model: str = ""                   # policy model (--model); "" -> the SFT preset's
    sft_steps: int = 0                # SFT steps (0: the SFT preset's)
    sft_per_seed: bool = True         # one SFT per fine-tuning seed (else one, shared)
    n_stories: int = 600              # built-in corpus size (ignored with --data)
    postings_per_arm: int = 3         # built-in: A/B postings summed into each arm
    split: tuple[float, ...] = (0.5, 0.4, 0.1)   # SFT, preference, held-out stories
    split_seed: int = 0               # also draws the weekdays and picks capped pairs
    monday_effect: float = 0.5
    friday_effect: float = -0.5
    p_marker: float = 0.8             # at 1.0 marker and Monday are collinear (DESIGN.md 3)
    max_pairs_per_story: int = 10
    test_effects: bool = True         # weekday effect from within-test contrasts
    text_spec: str = ""               # optional text term of the estimator ("ngram:256")
    pair_z: float = 1.0               # keep pairs with |adjusted margin| > pair_z * se (0: all)
    # the weekday effects' covariance: "dispersion" (independent arms given the test
    # effect); the test-clustered sandwich came out ~10x wider with one fixed effect per
    # cluster (0.2 vs 0.02 logit on Upworthy), so it is not the default here
    covariance: str = "dispersion"
    include_nonrandomised: bool = False   # Upworthy tests of 201325..201401 (not randomised)
    ft_seeds: tuple[int, ...] = (0, 1, 2)
    gen_seeds: tuple[int, ...] = (0, 1)
    beta: float = 0.5
    lr: float = 1e-4
    steps: int = 60
    batch_size: int = 16
    warmup_steps: int = 5
    n_eval_ledes: int = 100           # held-out ledes (0: all)
    n_generations: int = 200          # per model x ft_seed x gen_seed
    temperature: float = 1.0
    max_new_tokens: int = 80          # Upworthy headlines average ~80 bytes
    gen_batch_size: int = 200
    log_every: int = 10


PRESETS = {
    "tiny": MondayExperimentConfig(sft_preset="tiny", n_stories=60, split=(0.4, 0.4, 0.2),
                                   ft_seeds=(0, 1), gen_seeds=(0,), lr=1e-3, steps=4,
                                   batch_size=8, warmup_steps=1, n_eval_ledes=8,
                                   n_generations=16, max_new_tokens=16, gen_batch_size=64,
                                   log_every=2),
    # an SFT of the small decoder per fine-tuning seed (3), shortened from 150 to 100 steps
    # for the three SFTs: the marker prefix is learnt early
    "quick": MondayExperimentConfig(sft_steps=100, steps=40, lr=2e-4),
    # one GPU (not yet timed on one): a LoRA SFT of SmolLM2 per fine-tuning seed (the
    # smollm2 SFT preset at 400 steps)
    "full": MondayExperimentConfig(sft_preset="smollm2", model="smollm2-135m", sft_steps=400,
                                   gen_seeds=(0, 1, 2, 3, 4),
                                   steps=200, batch_size=32, warmup_steps=20, lr=5e-5,
                                   beta=0.1, n_eval_ledes=0, n_generations=3000,
                                   max_new_tokens=64, gen_batch_size=512),
}


# ---- data -----------------------------------------------------------------------------------
def load_arms(cfg, data: pathlib.Path | None, quiet: bool = False):
    """(arms log, source label, note on left-out rows): the Upworthy archive's arms (without
    the non-randomised window unless cfg.include_nonrandomised), or the built-in world's."""
    if data is None:
        from sims.monday import builtin_arms
        return (builtin_arms(cfg.n_stories, cfg.postings_per_arm, cfg.split_seed),
                "built-in template corpus (headline world CTR)", "")
    from dlm.data.upworthy import NONRANDOMISED_WEEKS, load_upworthy, nonrandomised_mask
    log = load_upworthy(data)
    drop = nonrandomised_mask(log)
    window = "test_week {}..{}".format(*NONRANDOMISED_WEEKS)
    if cfg.include_nonrandomised:
        note = (f"{int(drop.sum())} rows / {len(np.unique(log.group[drop]))} tests of the "
                f"non-randomised window ({window}) included (--include-nonrandomised)")
    else:
        note = (f"left out {int(drop.sum())} rows / {len(np.unique(log.group[drop]))} tests "
                f"of the non-randomised window ({window}); --include-nonrandomised keeps them")
        log = log.take(np.flatnonzero(~drop))
    if not quiet:
        print(f"{data}: {note}")
    return monday.upworthy_arms(log), str(data), note


def prepare(cfg, data: pathlib.Path | None, quiet: bool = False):
    """Posted log, split per row (0 SFT, 1 preference, 2 held-out), story per row, source,
    note on left-out rows."""
    if len(cfg.split) != 3:
        raise ValueError(f"--set split: need 3 fractions (SFT, preference, held-out), got {cfg.split}")
    arms, source, note = load_arms(cfg, data, quiet)
    mcfg = monday_config(cfg)
    posted = monday.post(arms, mcfg, cfg.split_seed)
    # stories from the unmarked arms, so a marker never separates two tests of one story
    split_G = split_tests(arms, tuple(cfg.split), cfg.split_seed)
    story = story_of_test(arms)[np.asarray(arms.group)]
    return posted, split_G[np.asarray(arms.group)], story, source, note


def monday_config(cfg) -> monday.MondayConfig:
    return monday.MondayConfig(cfg.monday_effect, cfg.friday_effect, cfg.p_marker)


def preference_pairs(cfg, posted, rows, story):
    """The kept pairs in three orientations (observed, adjusted, real CTR), the adjustment,
    per-ordering pair statistics and the pair counts (candidates, kept)."""
    log = posted.log.take(rows)
    a, b = monday.candidate_pairs(log.group, story[rows], cfg.max_pairs_per_story, cfg.split_seed)
    adjusted = monday.adjust(log, cfg.text_spec,
                             EstimatorConfig(seed=cfg.split_seed, covariance=cfg.covariance),
                             cfg.test_effects)
    margin, se = monday.pair_margins(a, b, adjusted, posted.logit_var[rows], posted.weekday[rows])
    counts = {"candidates": len(a)}
    keep = np.abs(margin) > cfg.pair_z * se
    a, b = a[keep], b[keep]
    counts["kept"] = len(a)
    scores = {"observed": log.outcome, "adjusted": adjusted.logit_adjusted,
              "real CTR": posted.base_logit[rows]}
    pairs = {k: monday.orient(a, b, s) for k, s in scores.items()}
    real_winner = {frozenset((w, lo)): w for w, lo in zip(*pairs["real CTR"])}
    stats = []
    for name, (win, lose) in pairs.items():
        agree = [real_winner.get(frozenset((w, lo))) == w for w, lo in zip(win, lose)]
        stats.append({"ordering": name, **monday.pair_stats(win, lose, posted.marker[rows]),
                      "agrees_with_real": float(np.mean(agree)) if agree else float("nan")})
    return log, pairs, adjusted, pd.DataFrame(stats), counts


# ---- models ---------------------------------------------------------------------------------
def sft_config(cfg, seed: int) -> sft.SFTConfig:
    if cfg.sft_preset not in sft.PRESETS:
        raise ValueError(f"--set sft_preset: unknown {cfg.sft_preset!r}; have {sorted(sft.PRESETS)}")
    base = sft.PRESETS[cfg.sft_preset]
    changes = {"seed": seed, **({"model": cfg.model} if cfg.model else {})}
    if cfg.sft_steps:
        changes.update(steps=cfg.sft_steps, ckpt_every=min(base.ckpt_every, cfg.sft_steps))
    return dataclasses.replace(base, **changes)


def train_pair_dpo(cfg, policy, rows, pair, seed: int, out_dir: pathlib.Path, quiet):
    """DPO from the SFT policy on (lede, winner headline) > (lede, loser headline); `rows`
    are the preference split's arms encoded once (monday.encode_rows)."""
    dcfg = DPOConfig(beta=cfg.beta, lr=cfg.lr, steps=cfg.steps, batch_size=cfg.batch_size,
                     warmup_steps=cfg.warmup_steps, seed=seed, log_every=cfg.log_every)
    shutil.rmtree(out_dir, ignore_errors=True)   # a rerun retrains (our own subdirectory)
    return train_dpo(policy.params, policy.model_cfg, monday.pair_data(rows, *pair), dcfg,
                     out_dir, quiet=quiet)


def generate_row(cfg, params, policy, sft_cfg, ledes, ft_seed: int, gen_seed: int,
                 is_ref: bool = False):
    """Marker shares (percent) of one run's generations and the KL to SFT (0 for SFT
    itself, not computed); every model shares the key."""
    pool = policy_generations(params, policy.model_cfg, policy.tokenizer, ledes,
                              1000 * ft_seed + gen_seed, cfg.n_generations, cfg.max_new_tokens,
                              cfg.temperature, sft_cfg.max_prompt_len, cfg.gen_batch_size)
    texts = pool.flat_texts()
    rate = marker_rate(texts)
    row = {m: 100.0 * rate[m] for m in MARKERS}
    row.update(any_marker=100.0 * rate["any"], n_generations=len(texts),
               prefix_monday=100.0 * np.mean([t.lower().startswith("happy monday") for t in texts]),
               kl_to_ref=0.0 if is_ref else kl_to_reference(pool, policy.params, policy.model_cfg))
    return row, texts


def setup(cfg, data: pathlib.Path | None, quiet: bool = False):
    """Everything before training: (posted log, kept pairs per ordering, preference log,
    weekday effects table, pair statistics, held-out ledes, SFT corpus, info)."""
    posted, split, story, source, left_out = prepare(cfg, data, quiet)
    sft_rows, pref_rows, held_rows = (np.flatnonzero(split == k) for k in range(3))
    pref_log, pairs, adjusted, pair_stats, counts = preference_pairs(cfg, posted, pref_rows,
                                                                     story)
    effects = monday.weekday_effect_table(adjusted, monday_config(cfg))
    ledes = list(dict.fromkeys(str(c) for c in posted.log.context[held_rows]))
    ledes = ledes[:cfg.n_eval_ledes] if cfg.n_eval_ledes else ledes
    if not ledes or not len(sft_rows) or min(len(p[0]) for p in pairs.values()) == 0:
        raise ValueError(f"{source}: too little data for the split {cfg.split} "
                         f"(SFT rows {len(sft_rows)}, kept pairs {counts['kept']} of "
                         f"{counts['candidates']}, "
                         f"held-out ledes {len(ledes)})")
    corpus = (stories_from_log(posted.log.take(sft_rows)),
              f"{source}: Monday experiment SFT split (split {list(cfg.split)}, seed "
              f"{cfg.split_seed}, p_marker {cfg.p_marker:g})")
    info = {"source": source, "left_out": left_out, "pairs": counts,
            "n_arms": len(posted.log), "n_eval_ledes": len(ledes),
            "sft_steps": sft_config(cfg, 0).steps,
            "n_stories": " / ".join(str(len(np.unique(story[r])))
                                    for r in (sft_rows, pref_rows, held_rows))}
    return posted, pairs, pref_log, effects, pair_stats, ledes, corpus, info


# ---- the experiment -------------------------------------------------------------------------
def run(cfg: MondayExperimentConfig, out: pathlib.Path, data: pathlib.Path | None = None,
        quiet: bool = False) -> pd.DataFrame:
    """The whole experiment; returns results (one row per model x ft_seed x gen_seed)."""
    t0 = time.perf_counter()
    out = pathlib.Path(out)
    if (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()   # a rerun's curves replace the old ones
    data = None if data is None else pathlib.Path(data).absolute()
    posted, pairs, pref_log, effects, pair_stats, ledes, corpus, info = setup(cfg, data, quiet)
    outputs.write_json(out / "config.json", {"replicate_monday": cfg, "info": info,
                                             "sft": sft_config(cfg, 0)})
    used = np.unique(np.concatenate([np.concatenate(p) for p in pairs.values()]))  # arms in pairs
    rows, samples, policy = [], {}, None
    for ft_seed in cfg.ft_seeds:
        sft_cfg = sft_config(cfg, ft_seed if cfg.sft_per_seed else sft.PRESETS[cfg.sft_preset].seed)
        if policy is None or cfg.sft_per_seed:
            policy = sft_cache.sft_policy(sft_cfg, corpus=corpus, quiet=quiet)
            arm_data = monday.encode_rows(policy, pref_log.context[used],
                                          pref_log.content[used], sft_cfg.max_len,
                                          sft_cfg.max_prompt_len)
        params = {"SFT": policy.params}
        for model, key in ORDERING.items():
            pair = tuple(np.searchsorted(used, side) for side in pairs[key])
            res = train_pair_dpo(cfg, policy, arm_data, pair, ft_seed,
                                 out / f"{key.replace(' ', '_')}_seed{ft_seed}", quiet)
            params[model] = res.state.params
            outputs.append_jsonl(out / "metrics.jsonl",
                                 [{"model": model, "ft_seed": ft_seed, **r} for r in res.history])
        for gen_seed in cfg.gen_seeds:
            for model in MODELS:
                row, texts = generate_row(cfg, params[model], policy, sft_cfg, ledes, ft_seed,
                                          gen_seed, is_ref=model == "SFT")
                rows.append({"model": model, "ft_seed": ft_seed, "gen_seed": gen_seed, **row})
                samples.setdefault(model, texts)
                if not quiet:
                    print(f"ft {ft_seed} gen {gen_seed} {model:>16}: " + ", ".join(
                        f"{m} {row[m]:.1f}%" for m in MARKERS))
    frame = pd.DataFrame(rows)
    outputs.write_csv(out / "results.csv", frame)
    info["n_generations"] = int(frame["n_generations"].min())
    per = info["n_generations"] // len(ledes)
    outputs.write_text(out / "samples.md", samples_markdown(
        "Samples (fine-tuning seed and generation seed: the first ones)", ledes, samples, per,
        n_ledes=6))
    summary = summary_md(cfg, frame, info, effects, pair_stats, time.perf_counter() - t0)
    outputs.write_text(out / "summary.md", summary)
    plot(frame, out / "markers.png")
    if not quiet:
        print(summary)
    return frame


def combine(cfg, out: pathlib.Path, parts, data: pathlib.Path | None = None,
            quiet: bool = False) -> pd.DataFrame:
    """Merge runs of this config made with one fine-tuning seed each (separate processes,
    `--set ft_seeds=K`): with sft_per_seed a seed's SFT, DPO and generations depend on its
    own seed only, so the merge equals one run over all the seeds. Writes results.csv,
    metrics.jsonl, summary.md, markers.png and config.json to `out`, samples.md from the
    first part; the data preparation (pairs, weekday effects) is rerun, not trained."""
    out, parts = pathlib.Path(out), [pathlib.Path(p) for p in parts]
    frame = pd.concat([pd.read_csv(p / "results.csv") for p in parts], ignore_index=True)
    if frame.duplicated(["model", "ft_seed", "gen_seed"]).any():
        raise ValueError(f"combine: parts {[str(p) for p in parts]} repeat a (model, ft_seed, "
                         "gen_seed) run")
    cfg = dataclasses.replace(cfg, ft_seeds=tuple(int(k) for k in sorted(set(frame["ft_seed"]))),
                              gen_seeds=tuple(int(k) for k in sorted(set(frame["gen_seed"]))))
    data = None if data is None else pathlib.Path(data).absolute()
    _, _, _, effects, pair_stats, _, _, info = setup(cfg, data, quiet)
    info["n_generations"] = int(frame["n_generations"].min())
    walls = [re.search(r"Wall time (\d+) s", (p / "summary.md").read_text()) for p in parts]
    info["runs_note"] = ("merged from separate runs, one per fine-tuning seed (wall times "
                         + ", ".join(f"{w.group(1)} s" if w else "?" for w in walls) + ")")
    out.mkdir(parents=True, exist_ok=True)
    outputs.write_json(out / "config.json", {"replicate_monday": cfg, "info": info,
                                             "sft": sft_config(cfg, 0),
                                             "parts": [str(p) for p in parts]})
    outputs.write_csv(out / "results.csv", frame)
    outputs.write_text(out / "metrics.jsonl", "".join(
        (p / "metrics.jsonl").read_text() for p in parts if (p / "metrics.jsonl").exists()))
    if (parts[0] / "samples.md").exists():
        shutil.copyfile(parts[0] / "samples.md", out / "samples.md")
    summary = summary_md(cfg, frame, info, effects, pair_stats, float("nan"))
    outputs.write_text(out / "summary.md", summary)
    plot(frame, out / "markers.png")
    if not quiet:
        print(summary)
    return frame
