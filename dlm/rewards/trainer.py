"""One reward-model trainer for every method: weighted logit regression + the method's penalty.

    reward_fns = train_reward("invariant", targets, represent, TrainerConfig(),
                              strengths=(0.1, 1, 10, 100), c_ref=world.reference_condition())
    scores = reward_fns[0](["Why Did A Nurse Do This?", ...])        # np.ndarray [N]

freeze_trunk=True (default): the texts' representation (dlm.rewards.representations) is
computed once and only a head is trained (linear, or one hidden layer), so a whole method
comparison runs on two CPU cores. All knob values of a method train together: their
parameters are stacked on a leading axis and the loss is the sum of the per-value losses,
so one jit-compiled dlm.train.step serves them all and each value still gets exactly its
own gradient (Adam is elementwise and clipping is off). freeze_trunk=False fine-tunes the
whole dlm.models.reward.RewardModel from a decoder trunk (for GPU presets).

Targets are centred by their weighted mean (added back at use), so the head starts at the
right level; an l2 penalty on the head kernels plays the ridge's role.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dlm.data.log import Confounder
from dlm.rewards.methods import RewardMethod, Targets, get_method
from dlm.train.losses import reward_regression
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

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.l2 < 0 or self.bins < 1:
            raise ValueError(f"TrainerConfig needs steps, batch_size, bins >= 1, lr > 0, l2 >= 0; "
                             f"got {self}")


# ---- confounders as arrays -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class ConfounderEncoder:
    """Confounders -> columns [N, C] (one-hot levels, standardised numeric/time) and bin
    indicators [N, M] (levels; quantile bins of numeric/time), fitted on training rows."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    n_levels: tuple[int, ...]
    loc: tuple[float, ...]
    scale: tuple[float, ...]
    edges: tuple[np.ndarray | None, ...]
    levels: tuple[tuple[str, ...] | None, ...]
    default_ref: tuple[float, ...]

    @classmethod
    def fit(cls, confounders: Mapping[str, Confounder], bins: int = 4) -> "ConfounderEncoder":
        names, kinds, n_lv, loc, scale, edges, levels, ref = [], [], [], [], [], [], [], []
        for name, c in confounders.items():
            v = np.asarray(c.values)
            names.append(name)
            kinds.append(c.kind)
            levels.append(c.levels)
            if c.kind == "categorical":
                n_lv.append(c.n_levels)
                loc.append(0.0)
                scale.append(1.0)
                edges.append(None)
                ref.append(float(np.bincount(v.astype(np.int64), minlength=c.n_levels).argmax()))
            else:
                v = v.astype(np.float64)
                q = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))
                n_lv.append(1)
                loc.append(float(v.mean()))
                scale.append(float(v.std()) or 1.0)
                edges.append(q)
                ref.append(float(np.median(v)) if c.kind == "time" else float(v.mean()))
        return cls(tuple(names), tuple(kinds), tuple(n_lv), tuple(loc), tuple(scale),
                   tuple(edges), tuple(levels), tuple(ref))

    @property
    def n_columns(self) -> int:
        return int(sum(self.n_levels))

    def _values(self, confounders: Mapping[str, Confounder]) -> list[np.ndarray]:
        missing = [n for n in self.names if n not in confounders]
        if missing:
            raise ValueError(f"confounders {missing} missing; the reward was trained with "
                             f"{self.names}")
        return [np.asarray(confounders[n].values) for n in self.names]

    def _columns(self, values: list[np.ndarray]) -> np.ndarray:
        cols = []
        for v, kind, L, mu, sd in zip(values, self.kinds, self.n_levels, self.loc, self.scale):
            if kind == "categorical":
                cols.append(np.eye(L, dtype=np.float32)[np.asarray(v, np.int64)])
            else:
                cols.append(((np.asarray(v, np.float64) - mu) / sd)[:, None].astype(np.float32))
        return np.concatenate(cols, axis=1)

    def columns(self, confounders: Mapping[str, Confounder]) -> np.ndarray:
        """[N, C]: one-hot categorical levels, standardised numeric and time values."""
        return self._columns(self._values(confounders))

    def bin_onehot(self, confounders: Mapping[str, Confounder]) -> np.ndarray:
        """[N, M]: every confounder's bin (level, or quantile bin), concatenated."""
        out = []
        for v, kind, L, q in zip(self._values(confounders), self.kinds, self.n_levels, self.edges):
            if kind == "categorical":
                out.append(np.eye(L, dtype=np.float32)[np.asarray(v, np.int64)])
            else:
                codes = np.searchsorted(q, v, side="right")
                out.append(np.eye(len(q) + 1, dtype=np.float32)[codes])
        return np.concatenate(out, axis=1)

    def reference(self, c_ref: Mapping[str, Any] | None = None) -> np.ndarray:
        """[C] columns of the reference condition: c_ref's values (a categorical by code or
        level name), else the most common level / the mean (numeric) / the median (time)."""
        c_ref = dict(c_ref or {})
        unknown = set(c_ref) - set(self.names)
        if unknown:
            raise ValueError(f"c_ref names unknown confounders {sorted(unknown)}; "
                             f"known: {self.names}")
        values = []
        rows = zip(self.names, self.kinds, self.levels, self.default_ref)
        for name, kind, levels, default in rows:
            v = c_ref.get(name, default)
            if kind == "categorical" and isinstance(v, str):
                if v not in levels:
                    raise ValueError(f"c_ref {name}={v!r} is not a level; levels: {levels}")
                v = levels.index(v)
            values.append(np.array([v]))
        return self._columns(values)[0]


# ---- the head and the two backbones ----------------------------------------------------------
class Head(nn.Module):
    """features [B, D] (+ confounders [B, C]) -> {"reward": [B], "confounder_head": [B]}."""

    hidden: int = 0
    n_confounders: int = 0
    two_heads: bool = False

    @nn.compact
    def __call__(self, x_BxD, confounders_BxC=None):
        h = x_BxD.astype(jnp.float32)
        if self.hidden:
            h = jnp.tanh(nn.Dense(self.hidden, name="hidden")(h))
        if self.n_confounders:
            h = jnp.concatenate([h, confounders_BxC.astype(jnp.float32)], axis=-1)
        init = nn.initializers.normal(0.02)
        out = {"reward": nn.Dense(1, kernel_init=init, name="head")(h)[:, 0]}
        if self.two_heads:
            out["confounder_head"] = nn.Dense(1, kernel_init=init, name="confounder_head")(h)[:, 0]
        return out


class _Backbone:
    """What the trainer needs of a model: text_inputs(texts) -> arrays [U, ...],
    init(key, inputs, conf) -> params, apply(params, inputs, conf) -> outputs."""

    chunk = 1024          # texts scored per call at use (a fixed shape: one compile)

    def score(self, params, inputs: dict, conf):
        if not hasattr(self, "_score"):
            self._score = jax.jit(lambda p, i, c: self.apply(p, i, c)["reward"])
        return self._score(params, inputs, conf)


class _Frozen(_Backbone):
    """Head on a fixed representation: text inputs are the representation's rows."""

    def __init__(self, represent, cfg: TrainerConfig, n_conf: int, two_heads: bool):
        self.represent, self.module = represent, Head(cfg.hidden, n_conf, two_heads)

    def text_inputs(self, texts) -> dict:
        return {"x": np.asarray(self.represent(list(texts)), np.float32)}

    def init(self, key, inputs: dict, conf):
        return self.module.init(key, inputs["x"][:1], None if conf is None else conf[:1])["params"]

    def apply(self, params, inputs: dict, conf):
        return self.module.apply({"params": params}, inputs["x"], conf)


class _Full(_Backbone):
    """The whole RewardModel (trunk from a decoder) fine-tuned on token ids."""

    chunk = 128

    def __init__(self, trunk, cfg: TrainerConfig, n_conf: int, two_heads: bool):
        from dlm.models.reward import RewardModel
        self.trunk_params, model_cfg, self.tok = trunk
        self.max_len = cfg.max_len
        self.module = RewardModel(model_cfg, n_confounders=n_conf, two_heads=two_heads)

    def text_inputs(self, texts) -> dict:
        from dlm.data.batching import encode_texts
        tokens, lengths = encode_texts(self.tok, [str(t) for t in texts], self.max_len)
        return {"tokens": tokens, "lengths": lengths}

    def init(self, key, inputs: dict, conf):
        from dlm.models.reward import init_reward_params, load_trunk
        # jitted: an eager init compiles every op of the trunk one by one
        fresh = jax.jit(lambda k: init_reward_params(self.module, k, self.max_len))(key)
        return load_trunk(fresh, self.trunk_params)

    def apply(self, params, inputs: dict, conf):
        return self.module.apply({"params": params}, inputs["tokens"], inputs["lengths"], conf)


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
    values of weighted MSE + penalty + l2, so each value's gradient is its own loss's."""
    def one(params, data, rows_B, strength):
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


def _device_data(backbone, encoder: ConfounderEncoder, targets: Targets, offset: float) -> dict:
    """Every training array once on device; a step only sends its row indices."""
    uniq, text_row = np.unique(np.asarray(targets.content).astype(str), return_inverse=True)
    bins = encoder.bin_onehot(targets.confounders)
    host = {"text": backbone.text_inputs(list(uniq)),
            "text_row": text_row.reshape(-1).astype(np.int32),
            "conf": encoder.columns(targets.confounders),
            "target": (np.asarray(targets.target, np.float64) - offset).astype(np.float32),
            "weight": np.asarray(targets.weight, np.float32),
            "bins_onehot": bins, "bins_valid": bins.sum(0) > 0}
    return jax.tree.map(jnp.asarray, host)


def _row_stream(n: int, batch: int, seed: int):
    """rows(s): step s's indices from per-epoch permutations (a pure function of seed, s)."""
    perms: dict[int, np.ndarray] = {}

    def rows(s: int) -> np.ndarray:
        pos = s * batch + np.arange(batch)
        out = np.empty(batch, np.int32)
        for e in np.unique(pos // n):
            if e not in perms:
                perms.clear()
                perms[e] = np.random.default_rng([seed, int(e)]).permutation(n)
            sel = pos // n == e
            out[sel] = perms[e][pos[sel] % n]
        return out
    return rows


def _train_group(backbone, method, name, data, cfg, strengths, seed, n, history):
    """Train the K knob values in `strengths` together; returns params stacked [K, ...]."""
    K = len(strengths)
    conf0 = data["conf"][:1] if method.uses_confounders else None
    inputs0 = jax.tree.map(lambda a: a[:1], data["text"])
    params = backbone.init(jax.random.key(seed), inputs0, conf0)
    params_K = jax.tree.map(lambda a: jnp.broadcast_to(a, (K,) + a.shape), params)
    optim = OptimConfig(lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps,
                        weight_decay=0.0, clip_norm=cfg.clip_norm, min_lr_ratio=cfg.min_lr_ratio)
    tx = make_optimizer(optim)
    step = make_train_step(_loss_fn(backbone, method, cfg.l2), tx, make_schedule(optim))
    state = TrainState.create(params_K, tx)
    strength_K = jnp.asarray([0.0 if s is None else s for s in strengths], jnp.float32)
    rows = _row_stream(n, min(cfg.batch_size, n), seed)
    key, finals = jax.random.key(seed), []
    for s in range(cfg.steps):
        batch = {"data": data, "rows": rows(s), "strength": strength_K}
        state, metrics = step(state, batch, jax.random.fold_in(key, s))
        if (s + 1) % max(cfg.log_every, 1) == 0 or s + 1 == cfg.steps:
            finals = _per_value(jax.device_get(metrics), K)
            history += [{"method": name, "strength": st, "step": s + 1, **f}
                        for st, f in zip(strengths, finals)]
    return state.params, finals


def _per_value(metrics: dict, K: int) -> list[dict]:
    """Split step metrics into one dict per knob value (shared scalars are repeated)."""
    flat = {m: np.asarray(v, np.float64).reshape(-1) for m, v in metrics.items()}
    return [{m: float(v[k] if v.size == K else v[0]) for m, v in flat.items()} for k in range(K)]


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
    """
    m = get_method(method)
    name = name or (method if isinstance(method, str) else "custom")
    if strengths is None:
        strengths = m.knob or (None,)
    strengths = tuple(strengths)
    if m.penalty_fn is not None and any(s is None for s in strengths):
        raise ValueError(f"method {name!r} has a penalty: give numeric strengths "
                         f"(its knob is {m.knob})")
    n = len(targets.content)
    if n < 2:
        raise ValueError(f"method {name!r}: {n} training rows are too few")
    encoder = ConfounderEncoder.fit(targets.confounders, cfg.bins)
    n_conf = encoder.n_columns if m.uses_confounders else 0
    if cfg.freeze_trunk:
        if represent is None:
            raise ValueError("freeze_trunk=True needs `represent` (dlm.rewards.representations)")
        backbone = _Frozen(represent, cfg, n_conf, m.two_heads)
        groups = [strengths]                        # all knob values in one stacked run
    else:
        if trunk is None:
            raise ValueError("freeze_trunk=False needs trunk=(decoder params, DecoderConfig, "
                             "tokenizer)")
        backbone = _Full(trunk, cfg, n_conf, m.two_heads)
        groups = [(s,) for s in strengths]          # one by one: clipping would couple them
    w = np.asarray(targets.weight, np.float64)
    offset = float(np.sum(w * targets.target) / np.sum(w))
    data = _device_data(backbone, encoder, targets, offset)
    conf_ref = encoder.reference(c_ref) if m.uses_confounders else None
    history = [] if history is None else history
    out = []
    for group in groups:
        params_K, finals = _train_group(backbone, m, name, data, cfg, group, seed, n, history)
        for k, st in enumerate(group):
            params = jax.tree.map(lambda a: a[k], params_K)
            out.append(TrainedReward(name, st, params, backbone, conf_ref, offset, finals[k]))
    return out
