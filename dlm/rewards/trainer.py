"""One reward-model trainer for every method: weighted logit regression + the method's penalty.

    reward_fns = train_reward("invariant", targets, represent, TrainerConfig(),
                              strengths=(0.1, 1, 10, 100), c_ref=world.reference_condition())
    scores = reward_fns[0](["Why Did A Nurse Do This?", ...])        # np.ndarray [N]

freeze_trunk=True (default): the texts' representation (dlm.representations) is
computed once and only a head is trained (linear, or one hidden layer), so a whole method
comparison runs on two CPU cores. All knob values of a method train together: their
parameters are stacked on a leading axis and the loss is the sum of the per-value losses,
so one jit-compiled dlm.train.step serves them all and each value still gets exactly its
own gradient (Adam is elementwise and clipping is off). freeze_trunk=False fine-tunes the
whole dlm.models.reward.RewardModel from a decoder trunk (for GPU presets).

Targets are centred by their weighted mean (added back at use), so the head starts at the
right level; an l2 penalty on the head kernels plays the ridge's role.

Seeds: train_reward_seeds trains S seeds (their own logs, init and batches) of one setting
with one compile, vmapped over the seeds on GPU/TPU, one after another on CPU (train_reward
is its one-seed case); the steps between log points run inside one lax.scan,
so the host is visited every log_every steps.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dlm.rewards.backbones import FrozenBackbone, FullBackbone
from dlm.rewards.encoding import ConfounderEncoder
from dlm.rewards.methods import RewardMethod, Targets, get_method
from dlm.rewards.stacking import host_data, pad_to_common, row_stream, stack
from dlm.train.loop import step_loop
from dlm.train.losses import bradley_terry, reward_regression
from dlm.train.optim import OptimConfig, make_optimizer, make_schedule
from dlm.train.step import TrainState, make_train_step


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    steps: int = 600
    batch_size: int = 1024
    lr: float = 2e-2
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    l2: float = 1e-4              # on head kernels, per unit of mean loss
    hidden: int = 0               # 0: linear head; > 0: one tanh hidden layer of this width
    bins: int = 4                 # quantile bins of numeric/time confounders (invariant)
    freeze_trunk: bool = True
    max_len: int = 64             # tokens per text (freeze_trunk=False)
    clip_norm: float = 0.0        # freeze_trunk=False only (knob values then train one by one)
    log_every: int = 100
    scan: bool = True             # the steps between log points run in one lax.scan call
    # several seeds: "vmap" (one batched program: for GPU/TPU), "map" (one program, lax.map
    # over the seeds), "loop" (one seed after another, one compile), "auto": loop on CPU,
    # vmap elsewhere. On 2 CPU cores (scripts.bench_seeds) the vmapped gather over S text
    # tables lost the cache (1.7x slower than loop) and map's bigger compile cost more
    # than its fewer host calls saved.
    seed_batching: str = "auto"

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.l2 < 0 or self.bins < 1:
            raise ValueError(f"TrainerConfig needs steps, batch_size, bins >= 1, lr > 0, l2 >= 0; "
                             f"got {self}")
        if self.seed_batching not in ("auto", "vmap", "map", "loop"):
            raise ValueError(f"TrainerConfig.seed_batching: 'auto', 'vmap', 'map' or 'loop', "
                             f"got {self.seed_batching!r}")


# ---- the head and the two backbones ----------------------------------------------------------
def _head_kernels(params) -> tuple[jax.Array, jax.Array]:
    return params["head"]["kernel"][:, 0], params["confounder_head"]["kernel"][:, 0]


def _l2_kernels(params) -> jax.Array:
    """Sum of squares of the head kernels (the trunk, if any, is not penalised)."""
    return sum(jnp.sum(jnp.square(params[k]["kernel"]))
               for k in ("hidden", "head", "confounder_head") if k in params)


# ---- training ---------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class TrainedReward:
    """A trained reward: call it on texts to get scores [N] (np.float64)."""

    method: str
    strength: float | None
    params: Any
    backbone: Any
    conf_ref: np.ndarray | None          # [C] reference condition (uses_confounders)
    offset: float                        # the target mean removed before training
    final_metrics: dict

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in np.asarray(texts, dtype=object).reshape(-1)]
        out, size = [], self.backbone.chunk
        for start in range(0, len(texts), size):
            chunk = texts[start:start + size]
            pad = size - len(chunk)   # repeat the first row: every call has one shape
            inputs = jax.tree.map(lambda a: np.concatenate([a, np.repeat(a[:1], pad, 0)]),
                                  self.backbone.text_inputs(chunk))
            conf = None if self.conf_ref is None else np.tile(self.conf_ref, (size, 1))
            r = self.backbone.score(self.params, inputs, conf)
            out.append(np.asarray(r, np.float64)[:len(chunk)])
        return (np.concatenate(out) if out else np.zeros(0)) + self.offset


def _loss_fn(backbone, method: RewardMethod, l2: float):
    """loss_fn(params_K, batch, rng) for make_train_step: the sum over the K stacked knob
    values of weighted MSE + penalty + l2, so each value's gradient is its own loss's
    (a pairwise method: Bradley-Terry on the batch's pairs + l2)."""
    def pairwise(params, data, rows_B):      # rows_B index the pairs
        side = lambda col: jax.tree.map(  # noqa: E731
            lambda a: a[data["text_row"][data[col][rows_B]]], data["text"])
        r_win = backbone.apply(params, side("pair_win"), None)["reward"]
        r_lose = backbone.apply(params, side("pair_lose"), None)["reward"]
        loss, metrics = bradley_terry(r_win, r_lose)
        return loss + l2 * _l2_kernels(params), metrics

    def one(params, data, rows_B, strength):
        if method.loss == "pairwise":
            return pairwise(params, data, rows_B)
        pick = lambda a: a[rows_B]  # noqa: E731
        text_rows = data["text_row"][rows_B]
        inputs = jax.tree.map(lambda a: a[text_rows], data["text"])
        conf = pick(data["conf"])
        out = backbone.apply(params, inputs, conf if method.uses_confounders else None)
        pred = out["reward"] + (out["confounder_head"] if method.two_heads else 0.0)
        loss, metrics = reward_regression(pred, pick(data["target"]), pick(data["weight"]))
        if method.penalty_fn is not None:
            if method.two_heads:
                out = {**out, "head_kernels": _head_kernels(params)}
            batch = {"conf": conf, "bins_onehot": pick(data["bins_onehot"]),
                     "bins_valid": data["bins_valid"], "target": pick(data["target"]),
                     "weight": pick(data["weight"])}
            penalty, extra = method.penalty_fn(out, batch, strength)
            loss = loss + penalty
            metrics = {**metrics, **extra, "penalty": penalty}
        return loss + l2 * _l2_kernels(params), metrics

    def loss_fn(params_K, batch, rng):
        del rng
        losses_K, metrics = jax.vmap(one, in_axes=(0, None, None, 0))(
            params_K, batch["data"], batch["rows"], batch["strength"])
        return losses_K.sum(), metrics
    return loss_fn


def _seed_batching(cfg: TrainerConfig) -> str:
    if cfg.seed_batching == "auto":
        return "loop" if jax.default_backend() == "cpu" else "vmap"
    return cfg.seed_batching


def _make_runner(backbone, method: RewardMethod, cfg: TrainerConfig, n_seeds: int):
    """(init(params_SxK) -> state, run(state, data_S, rows_TxSxB, strength_K, seed_S) ->
    (state, last metrics [S, ...])): T steps per call, inside one lax.scan (one host
    round-trip per chunk), over the S seeds by vmap or lax.map (cfg.seed_batching; S = 1:
    the plain step)."""
    mode = _seed_batching(cfg)
    optim = OptimConfig(lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps,
                        weight_decay=0.0, clip_norm=cfg.clip_norm, min_lr_ratio=cfg.min_lr_ratio)
    tx = make_optimizer(optim)
    step = make_train_step(_loss_fn(backbone, method, cfg.l2), tx, make_schedule(optim))

    def one_seed(state, data, rows_TxB, strength_K, seed):
        key = jax.random.key(seed)

        def body(st, rows_B):
            batch = {"data": data, "rows": rows_B, "strength": strength_K}
            return step(st, batch, jax.random.fold_in(key, st.step))
        state, metrics_T = jax.lax.scan(body, state, rows_TxB)
        return state, jax.tree.map(lambda a: a[-1], metrics_T)

    def run(state_S, data_S, rows_TxSxB, strength_K, seed_S):
        if n_seeds == 1:
            first = lambda t: jax.tree.map(lambda a: a[0], t)  # noqa: E731
            state, metrics = one_seed(first(state_S), first(data_S), rows_TxSxB[:, 0],
                                      strength_K, seed_S[0])
            return jax.tree.map(lambda a: a[None], (state, metrics))
        if mode == "vmap":
            return jax.vmap(one_seed, in_axes=(0, 0, 1, None, 0))(state_S, data_S, rows_TxSxB,
                                                                   strength_K, seed_S)
        return jax.lax.map(lambda a: one_seed(a[0], a[1], a[2], strength_K, a[3]),
                           (state_S, data_S, rows_TxSxB.swapaxes(0, 1), seed_S))

    init = jax.vmap(lambda p: TrainState.create(p, tx))
    return init, jax.jit(run, donate_argnums=(0,))


def _chunks(cfg: TrainerConfig) -> list[tuple[int, int]]:
    """[start, stop) step ranges between log points (single steps when cfg.scan is off)."""
    every = max(cfg.log_every, 1) if cfg.scan else 1
    stops = sorted({min(s, cfg.steps) for s in range(every, cfg.steps + every, every)})
    return list(zip([0] + stops[:-1], stops))


def _train_group(backbone, runner, method, name, data_S, cfg, strengths, seeds, n, history):
    """Train S seeds x K knob values together; returns params [S, K, ...] and per-seed
    per-value final metrics [S][K]."""
    init, run = runner
    K = len(strengths)
    first = jax.tree.map(lambda a: a[0], data_S)
    conf0 = first["conf"][:1] if method.uses_confounders else None
    inputs0 = jax.tree.map(lambda a: a[:1], first["text"])
    params_S = [backbone.init(jax.random.key(seed), inputs0, conf0) for seed in seeds]
    params_SxK = jax.tree.map(lambda *a: jnp.stack([jnp.broadcast_to(x, (K,) + x.shape)
                                                    for x in a]), *params_S)
    state = init(params_SxK)
    strength_K = jnp.asarray([0.0 if s is None else s for s in strengths], jnp.float32)
    seed_S = jnp.asarray(seeds, jnp.uint32)
    streams = [row_stream(n, min(cfg.batch_size, n), seed) for seed in seeds]
    chunks = _chunks(cfg)
    finals = [[] for _ in seeds]

    def rows_of_chunk(c, state):
        start, stop = chunks[c]
        return np.stack([[rows(s) for rows in streams] for s in range(start, stop)])

    def on_log(done, state, metrics):         # at the end of every logged chunk
        stop = chunks[done - 1][1]
        for i, seed in enumerate(seeds):
            finals[i] = _per_value(jax.tree.map(lambda a: a[i], metrics), K)
            history.extend({"seed": seed, "method": name, "strength": st, "step": stop, **f}
                           for st, f in zip(strengths, finals[i]))

    # one step_loop call per chunk of steps (a lax.scan); each chunk ends at a log point,
    # or, without scan, chunks are single steps logged every log_every. No finite check: a
    # diverging knob value must not stop the others (the tables report it).
    state = step_loop(state, lambda st, rows, rng: run(st, data_S, rows, strength_K, seed_S),
                      rows_of_chunk, len(chunks), lambda c: None,
                      log_every=1 if cfg.scan else cfg.log_every, on_log=on_log,
                      check_finite=False)
    return state.params, finals


def _per_value(metrics: dict, K: int) -> list[dict]:
    """Split step metrics into one dict per knob value (shared scalars are repeated)."""
    flat = {m: np.asarray(v, np.float64).reshape(-1) for m, v in metrics.items()}
    return [{m: float(v[k] if v.size == K else v[0]) for m, v in flat.items()} for k in range(K)]


def _backbone(m: RewardMethod, name: str, targets: Targets, represent, cfg, trunk):
    n_conf = ConfounderEncoder.fit(targets.confounders, cfg.bins).n_columns \
        if m.uses_confounders else 0
    if cfg.freeze_trunk:
        if represent is None:
            raise ValueError("freeze_trunk=True needs `represent` (dlm.representations)")
        return FrozenBackbone(represent, cfg, n_conf, m.two_heads)
    if trunk is None:
        raise ValueError("freeze_trunk=False needs trunk=(decoder params, DecoderConfig, "
                         "tokenizer)")
    return FullBackbone(trunk, cfg, n_conf, m.two_heads)


def train_reward_seeds(method: str | RewardMethod, targets_per_seed: Sequence[Targets],
                       represent=None, cfg: TrainerConfig = TrainerConfig(),
                       strengths: Sequence[float | None] | None = None,
                       seeds: Sequence[int] | None = None, c_ref: Mapping[str, Any] | None = None,
                       trunk=None, name: str | None = None,
                       history: list | None = None) -> list[list[TrainedReward]]:
    """Train `method`'s reward for S seeds (their own targets, init and batches) at once;
    out[s][k] is seed s's TrainedReward at strengths[k].

    freeze_trunk=True: one compile serves every seed; the S seeds x K knob values train as
    one vmapped (or lax.mapped) program, or one seed after another, as cfg.seed_batching
    says (auto: vmap on GPU/TPU, loop on CPU), each exactly as train_reward would train it
    alone. Where the seeds' shapes differ (e.g. different numbers of rows) or
    freeze_trunk=False they run one by one, with a one-line warning saying why.
    Other arguments as train_reward; history rows carry their "seed".
    """
    m = get_method(method)
    name = name or (method if isinstance(method, str) else "custom")
    targets_per_seed = list(targets_per_seed)
    seeds = list(range(len(targets_per_seed)) if seeds is None else seeds)
    if len(seeds) != len(targets_per_seed) or not seeds:
        raise ValueError(f"method {name!r}: {len(targets_per_seed)} targets for {len(seeds)} seeds")
    strengths = tuple(m.knob or (None,) if strengths is None else strengths)
    if m.penalty_fn is not None and any(s is None for s in strengths):
        raise ValueError(f"method {name!r} has a penalty: give numeric strengths "
                         f"(its knob is {m.knob})")
    if m.loss == "pairwise" and (m.penalty_fn is not None or m.uses_confounders):
        raise ValueError(f"method {name!r}: a pairwise loss takes no penalty or confounders")
    for t in targets_per_seed:
        if len(t.content) < 2:
            raise ValueError(f"method {name!r} ({t.source}): {len(t.content)} training rows "
                             "are too few")
        if m.loss == "pairwise" and (t.pairs is None or len(t.pairs[0]) == 0):
            raise ValueError(f"method {name!r} ({t.source}): a pairwise loss needs the "
                             "Targets' pairs (e.g. METHODS['experimental'].target_fn)")
    backbone = _backbone(m, name, targets_per_seed[0], represent, cfg, trunk)
    encoders = [ConfounderEncoder.fit(t.confounders, cfg.bins) for t in targets_per_seed]
    offsets = [float(np.sum(np.asarray(t.weight, np.float64) * t.target) / np.sum(t.weight))
               for t in targets_per_seed]
    per_seed = [host_data(backbone, e, t, o)
                for e, t, o in zip(encoders, targets_per_seed, offsets)]
    per_seed, reason = pad_to_common(per_seed)
    if reason is None and not cfg.freeze_trunk:
        reason = "freeze_trunk=False fine-tunes the trunk (one seed at a time)"
    if reason is not None and len(seeds) > 1:
        warnings.warn(f"train_reward_seeds({name}): seeds run one by one: {reason}", stacklevel=2)
    # vmap/map: one group of all seeds; else one seed per group (and, with a trainable trunk,
    # one knob value per group: gradient clipping would couple stacked values)
    together = reason is None and _seed_batching(cfg) != "loop"
    seed_groups = [list(range(len(seeds)))] if together else [[i] for i in range(len(seeds))]
    knob_groups = [strengths] if cfg.freeze_trunk else [(s,) for s in strengths]
    runner = _make_runner(backbone, m, cfg, len(seed_groups[0]))  # shared: compiled once
    history = [] if history is None else history
    out: list[list[TrainedReward]] = [[] for _ in seeds]
    for group in seed_groups:
        data_S = stack([per_seed[i] for i in group])
        t0 = targets_per_seed[group[0]]      # rows a step samples: pairs or target rows
        n = len(t0.pairs[0]) if m.loss == "pairwise" else len(t0.content)
        for knobs in knob_groups:
            params_SxK, finals = _train_group(backbone, runner, m, name, data_S, cfg, knobs,
                                              [seeds[i] for i in group], n, history)
            for j, i in enumerate(group):
                conf_ref = encoders[i].reference(c_ref) if m.uses_confounders else None
                for k, st in enumerate(knobs):
                    params = jax.tree.map(lambda a: a[j, k], params_SxK)
                    out[i].append(TrainedReward(name, st, params, backbone, conf_ref,
                                                offsets[i], finals[j][k]))
    return out


def train_reward(method: str | RewardMethod, targets: Targets, represent=None,
                 cfg: TrainerConfig = TrainerConfig(),
                 strengths: Sequence[float | None] | None = None,
                 seed: int = 0, c_ref: Mapping[str, Any] | None = None, trunk=None,
                 name: str | None = None, history: list | None = None) -> list[TrainedReward]:
    """Train `method`'s reward on `targets`; one TrainedReward per strength.

    strengths: default the method's knob (or one run without a strength). represent: the
    frozen representation (freeze_trunk=True); trunk: (decoder params, DecoderConfig,
    tokenizer) for freeze_trunk=False. c_ref: the reference condition a conditioned reward
    is evaluated at. history: a list that receives a metrics row every cfg.log_every steps.
    The one-seed case of train_reward_seeds.
    """
    return train_reward_seeds(method, [targets], represent, cfg, strengths, [seed], c_ref,
                              trunk, name, history)[0]
