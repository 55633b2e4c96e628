"""The reward models of the Upworthy comparison, on any text representation.

  experimental      Bradley-Terry on within-test pairs (randomised: causal comparisons)
  experimental_ctr  regress the within-test centred logit CTR of every arm of the
                    randomised tests (the same data, a regression loss)
  naive             regress the logit CTR of one random arm per test on the text
  conditioned       the same with the week as an extra input; a fixed reference week at use
  partial_out       regress the logit CTR residualised on the week alone (cross-fitted)
  deconfoundlm      regress the logit CTR minus the week effect g(week) fitted jointly with
                    a text term (NumPyro random walk over weeks, cross-fitted)

DATA_LOSS names each method's data source and loss (the loss-vs-data-source table).
The methods differ only by their training targets (RewardData); a backend turns targets
into a scorer texts -> rewards. LinearBackend fits ridge / linear Bradley-Terry on a fixed
featuriser (hashed n-grams, frozen LLM states); TrunkBackend trains the from-scratch
byte-level RewardModel. Both pick their regularisation on the validation rows with the
method's own loss (never on the evaluation pairs), then score any text.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.sparse

from dlm.causal.crossfit import Adjusted, deconfound, partial_out
from dlm.causal.fit import EstimatorConfig
from dlm.data.log import ObservationalLog
from dlm.data.text_features import DEFAULT_SPEC, text_representation
from dlm.train.losses import binomial_logit_weights

METHODS: tuple[str, ...] = ("experimental", "experimental_ctr", "naive", "conditioned",
                             "partial_out", "deconfoundlm")
_EXP, _REG = "experimental (randomised tests)", "CTR regression"
DATA_LOSS: dict[str, tuple[str, str]] = {          # method -> (data source, loss)
    "experimental": (_EXP, "pairwise Bradley-Terry"),
    "experimental_ctr": (_EXP, "CTR regression, within-test centred"),
    "naive": ("observational", _REG),
    "deconfoundlm": ("deconfounded observational", _REG)}
# which observational target each regression method fits ("raw": the empirical logit CTR)
_TARGET = {"naive": "raw", "conditioned": "raw", "partial_out": "partial_out",
           "deconfoundlm": "deconfoundlm"}
Scorer = Callable[[Sequence[str]], np.ndarray]


def adjusted_outcomes(obs: ObservationalLog, seed: int) -> dict[str, Adjusted]:
    """Cross-fitted adjustments of the observational log (grouped by test): partial_out on
    the week alone, and DeconfoundLM with the estimator's default text term (DEFAULT_SPEC,
    so scripts.deconfound gives the same adjusted outcomes for the same seed)."""
    est = EstimatorConfig(seed=seed)
    return {"partial_out": partial_out(obs, est),
            "deconfoundlm": deconfound(obs, text_representation(obs.content, DEFAULT_SPEC), est)}


@dataclasses.dataclass(frozen=True, eq=False)
class RewardData:
    """Everything the reward models are trained on; `*_val` marks validation rows."""

    obs_text: np.ndarray                  # [N] one random arm per test
    obs_week: np.ndarray                  # [N] int week codes 0..n_weeks-1
    obs_weight: np.ndarray                # [N] inverse variance of the logit CTR, mean 1
    obs_val: np.ndarray                   # [N] bool
    targets: Mapping[str, np.ndarray]     # "raw", "partial_out", "deconfoundlm" -> [N]
    win_text: np.ndarray                  # [P] within-test pairs: the higher-CTR headline
    lose_text: np.ndarray                 # [P]
    pair_val: np.ndarray                  # [P] bool
    arm_text: np.ndarray                  # [A] arms of the experimental tests (2+ arms)
    arm_target: np.ndarray                # [A] within-test centred logit CTR
    arm_weight: np.ndarray                # [A]
    arm_val: np.ndarray                   # [A] bool
    n_weeks: int
    ref_week: int                         # the week conditioned rewards are evaluated at

    @classmethod
    def build(cls, obs: ObservationalLog, obs_val, adjusted: Mapping[str, Adjusted],
              arms: ObservationalLog, arms_val, pairs, week: str = "week") -> "RewardData":
        """From the observational log (with its adjustments), the headline-level log `arms`
        of the experimental tests ([A] bool `arms_val`: validation test) and its
        within-test `pairs` (dlm.realdata.pairs.Pairs)."""
        from dlm.realdata.pairs import centred_logit_ctr

        weeks = obs.confounders[week]
        targets = {"raw": obs.logit_outcome(),
                   **{k: np.asarray(a.logit_adjusted, np.float64) for k, a in adjusted.items()}}
        arms_val, text = np.asarray(arms_val, bool), np.asarray(arms.content)
        rows, arm_target, arm_weight = centred_logit_ctr(arms)
        return cls(np.asarray(obs.content), np.asarray(weeks.values, np.int64),
                   binomial_logit_weights(obs.successes, obs.trials), np.asarray(obs_val, bool),
                   targets, text[pairs.win], text[pairs.lose], arms_val[pairs.win],
                   text[rows], arm_target, arm_weight, arms_val[rows],
                   weeks.n_levels, int(np.median(weeks.values)))


def fit_rewards(data: RewardData, backend, methods: Sequence[str] = METHODS) -> dict[str, Scorer]:
    """One scorer per method, all from the same backend (representation)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown reward methods {unknown}; known: {', '.join(METHODS)}")
    out = {}
    for m in methods:
        if m == "experimental":
            out[m] = backend.compare(m, data.win_text, data.lose_text, data.pair_val)
        elif m == "experimental_ctr":
            out[m] = backend.regress(m, data.arm_text, None, data.n_weeks, data.ref_week,
                                     data.arm_target, data.arm_weight, data.arm_val)
        else:
            weeks = data.obs_week if m == "conditioned" else None
            out[m] = backend.regress(m, data.obs_text, weeks, data.n_weeks, data.ref_week,
                                     data.targets[_TARGET[m]], data.obs_weight, data.obs_val)
    return out


def _weighted_mse(pred, y, w) -> float:
    return float(np.sum(w * (pred - y) ** 2) / np.sum(w))


def _bt_loss(s_win, s_lose) -> float:
    return float(np.mean(np.logaddexp(0.0, -(np.asarray(s_win) - np.asarray(s_lose)))))


def _week_onehot(weeks, n_weeks: int) -> scipy.sparse.csr_matrix:
    weeks = np.asarray(weeks, np.int64)
    ones = np.ones(weeks.size, np.float32)
    return scipy.sparse.csr_matrix((ones, (np.arange(weeks.size), weeks)),
                                   shape=(weeks.size, n_weeks))


# ---- linear models on a fixed featuriser ------------------------------------------------------
class LinearBackend:
    """Ridge (regressions) and linear Bradley-Terry (pairs) on `featurise(texts) -> [N, D]`
    (dense or scipy.sparse). The l2 strength is chosen on the validation rows by the
    method's own loss, then the model is refitted on training + validation rows."""

    def __init__(self, featurise: Callable[[Sequence[str]], object],
                 l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2), history: list | None = None,
                 name: str = "linear"):
        self.featurise, self.l2_grid, self.name = featurise, tuple(l2_grid), name
        self.history = [] if history is None else history

    def _design(self, texts, weeks, n_weeks: int):
        X = self.featurise(list(texts))
        if weeks is None:
            return X
        week_cols = _week_onehot(weeks, n_weeks)
        return scipy.sparse.hstack([scipy.sparse.csr_matrix(X), week_cols]).tocsr()

    def _select(self, method: str, fit_on: Callable[[np.ndarray, float], Callable],
                val_loss: Callable[[Callable], float], val: np.ndarray):
        """Best l2 by validation loss (the first if there are no validation rows)."""
        best, best_loss = self.l2_grid[0], np.inf
        if val.any() and len(self.l2_grid) > 1:
            for l2 in self.l2_grid:
                loss = val_loss(fit_on(~val, l2))
                self.history.append({"representation": self.name, "method": method, "l2": l2,
                                     "val_loss": loss})
                if loss < best_loss:
                    best, best_loss = l2, loss
        return fit_on(np.ones_like(val), best)

    def regress(self, method, texts, weeks, n_weeks, ref_week, target, weight, val) -> Scorer:
        from dlm.data.ngrams import fit_linear

        X = self._design(texts, weeks, n_weeks)
        val = np.asarray(val, bool)

        def fit_on(rows, l2):
            return fit_linear(X[rows], target[rows], weight[rows], l2=l2)

        model = self._select(method, fit_on, lambda m: _weighted_mse(
            m(X[val]), target[val], weight[val]), val)

        def score(new_texts):
            ref = None if weeks is None else np.full(len(new_texts), ref_week)
            return model(self._design(new_texts, ref, n_weeks))
        return score

    def compare(self, method, win, lose, val) -> Scorer:
        from dlm.data.ngrams import fit_bradley_terry_linear

        texts = np.concatenate([np.asarray(win), np.asarray(lose)])
        uniq, inv = np.unique(texts.astype(str), return_inverse=True)
        X = self.featurise(list(uniq))
        a, b = inv[:len(win)], inv[len(win):]
        val = np.asarray(val, bool)

        def fit_on(rows, l2):
            return fit_bradley_terry_linear(X, a[rows], b[rows], l2=l2)

        model = self._select(method, fit_on, lambda m: _bt_loss(
            m(X[a[val]]), m(X[b[val]])), val)
        return lambda new_texts: model(self.featurise(list(new_texts)))


def ngram_featuriser(n_features: int = 2 ** 14, ngram_range: tuple[int, int] = (1, 2)):
    """Hashed word n-grams (sparse, l2-normalised rows): the linear baseline's h(X)."""
    from dlm.data.ngrams import hashed_ngrams

    return lambda texts: hashed_ngrams(texts, n_features=n_features, ngram_range=tuple(ngram_range))


def llm_featuriser(name: str, batch_size: int = 64, max_len: int = 40):
    """Frozen pretrained LM states (dlm.models.pretrained): the mean of the final hidden
    states over each text's tokens -> dense [N, D]. Every distinct text is encoded once,
    in batches of similar length (padded to a multiple of 8, so a few compilations)."""
    import jax
    import jax.numpy as jnp

    from dlm.data.batching import encode_texts
    from dlm.models.decoder import Decoder
    from dlm.models.pretrained import load_model

    cfg, params, tok = load_model(name)

    @jax.jit
    def pooled(params, tokens_BxL, lengths_B):       # params as an argument, not a constant
        h_BxLxD, _ = Decoder(cfg).apply({"params": params}, tokens_BxL, method=Decoder.hidden)
        mask = (jnp.arange(tokens_BxL.shape[1])[None] < lengths_B[:, None]).astype(jnp.float32)
        return (h_BxLxD.astype(jnp.float32) * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)

    cache: dict[str, np.ndarray] = {}

    def featurise(texts):
        texts = [str(t) for t in texts]
        todo = [t for t in dict.fromkeys(texts) if t not in cache]
        n_tok = {t: len(tok.encode(t)) + 2 for t in todo}            # + BOS, EOS
        todo.sort(key=n_tok.get)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            width = min(max_len, -(-max(n_tok[t] for t in chunk) // 8) * 8)
            tokens, lengths = encode_texts(tok, chunk + [""] * (batch_size - len(chunk)), width)
            for t, v in zip(chunk, np.asarray(pooled(params, tokens, lengths))):
                cache[t] = v
        return np.stack([cache[t] for t in texts]) if texts else np.zeros((0, cfg.d_model))
    return featurise


# ---- the from-scratch reward trunk ------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrunkConfig:
    """A small byte-level RewardModel trained from scratch; early-stopped on validation."""

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    d_ff: int = 192
    max_len: int = 128              # bytes per headline incl. BOS/EOS (longer ones are cut)
    steps: int = 1000
    batch_size: int = 64            # sequences per step: rows, or batch_size // 2 pairs
    lr: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    eval_every: int = 100           # validation loss (and best-params snapshot) every N steps
    seed: int = 0
    dtype: str = "float32"


class TrunkBackend:
    """The RewardModel (decoder trunk + last-token head) trained by the generic train step:
    reward_regression with binomial weights, or bradley_terry on pairs. The parameters
    with the lowest validation loss (checked every eval_every steps) are kept."""

    _CHUNK = 256                    # rows per scoring call (padded, so one compilation)

    def __init__(self, cfg: TrunkConfig = TrunkConfig(), history: list | None = None,
                 progress: bool = False, name: str = "trunk"):
        from dlm.data.tokenizer import ByteTokenizer

        self.cfg, self.name, self.progress, self.tok = cfg, name, progress, ByteTokenizer()
        self.history = [] if history is None else history
        self._kits: dict = {}

    def _model(self, n_conf: int):
        from dlm.models.decoder import DecoderConfig
        from dlm.models.reward import RewardModel

        c = self.cfg
        dec = DecoderConfig(d_model=c.d_model, n_layers=c.n_layers, n_heads=c.n_heads,
                            n_kv_heads=c.n_kv_heads, d_ff=c.d_ff, max_len=c.max_len, dtype=c.dtype)
        return RewardModel(dec, n_confounders=n_conf)

    def _encode(self, texts) -> tuple[np.ndarray, np.ndarray]:
        from dlm.data.batching import encode_texts

        return encode_texts(self.tok, [str(t) for t in texts], self.cfg.max_len)

    def _predictor(self, model):
        """predict(params)(tokens, lengths, conf | None) -> rewards, in fixed-size chunks
        through one jitted apply (compiled once per model)."""
        import jax

        apply = jax.jit(lambda p, t, n, c: model.apply({"params": p}, t, n, c)["reward"])
        return lambda params: functools.partial(self._predict, apply, params)

    def _predict(self, apply, params, tokens, lengths, conf=None) -> np.ndarray:
        out, k = [], self._CHUNK
        for s in range(0, len(tokens), k):
            rows = min(k, len(tokens) - s)
            pad = ((0, k - rows),)                    # every call sees [k, ...]
            c = None if conf is None else np.pad(conf[s:s + k], pad + ((0, 0),))
            t = np.pad(tokens[s:s + k], pad + ((0, 0),))
            n = np.pad(lengths[s:s + k], pad, constant_values=1)
            out.append(np.asarray(apply(params, t, n, c), np.float64)[:rows])
        return np.concatenate(out) if out else np.zeros(0)

    def _kit(self, kind: str, n_conf: int = 0):
        """(model, tx, jitted train step, predictor, initial params on host) per architecture
        and loss, built once: methods that differ only by their targets (carried in the
        batch) share one compilation and start from the same seeded initialisation."""
        key = (kind, n_conf)
        if key in self._kits:
            return self._kits[key]
        import jax

        from dlm.models.reward import init_reward_params
        from dlm.train.losses import bradley_terry, reward_regression
        from dlm.train.optim import OptimConfig, make_optimizer, make_schedule
        from dlm.train.step import make_train_step

        model, c = self._model(n_conf), self.cfg

        def regression_loss(params, batch, rng):
            r = model.apply({"params": params}, batch["tokens"], batch["lengths"],
                            batch.get("conf"))
            return reward_regression(r["reward"], batch["target"], batch["weight"])

        def pair_loss(params, batch, rng):      # rows: the B winners, then their B losers
            r = model.apply({"params": params}, batch["tokens"], batch["lengths"])["reward"]
            half = r.shape[0] // 2
            return bradley_terry(r[:half], r[half:])

        opt = OptimConfig(lr=c.lr, warmup_steps=c.warmup_steps, total_steps=c.steps,
                          weight_decay=c.weight_decay)
        tx = make_optimizer(opt)
        loss_fn = regression_loss if kind == "regress" else pair_loss
        init = jax.jit(lambda k: init_reward_params(model, k, c.max_len))   # one compilation
        self._kits[key] = (model, tx, make_train_step(loss_fn, tx, make_schedule(opt)),
                           self._predictor(model), jax.device_get(init(jax.random.key(c.seed))))
        return self._kits[key]

    def _train(self, method: str, kit, batch_of, n_train: int, val_loss, batch: int):
        """Generic loop: batches -> the params with the best validation loss, as a predictor."""
        import jax
        import jax.numpy as jnp
        from tqdm.auto import tqdm

        from dlm.train.step import TrainState

        c = self.cfg
        model, tx, step, predictor, params0 = kit
        # fresh device buffers: the step donates the state, params0 stays valid for the next method
        state = TrainState.create(jax.tree.map(jnp.asarray, params0), tx)
        rng, perm = np.random.default_rng(c.seed), np.zeros(0, np.int64)
        best, best_loss = None, np.inf
        bar = tqdm(range(c.steps), desc=f"{self.name} {method}", disable=not self.progress,
                   dynamic_ncols=True)
        for s in bar:
            while perm.size < batch:                  # per-epoch permutations, seeded
                perm = np.concatenate([perm, rng.permutation(n_train)])
            rows, perm = perm[:batch], perm[batch:]
            state, metrics = step(state, batch_of(rows), jax.random.key(s))
            if (s + 1) % c.eval_every == 0 or s + 1 == c.steps:
                host = jax.device_get(state.params)
                loss = val_loss(predictor(host))
                row = {"representation": self.name, "method": method, "step": s + 1,
                       "loss": float(metrics["loss"]), "val_loss": loss}
                self.history.append(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", val=f"{loss:.4f}")
                if not loss >= best_loss:              # nan (no validation rows): keep the last
                    best, best_loss = host, loss
        return predictor(best)

    def regress(self, method, texts, weeks, n_weeks, ref_week, target, weight, val) -> Scorer:
        val = np.asarray(val, bool)
        tokens, lengths = self._encode(texts)
        conf = None if weeks is None else np.eye(n_weeks, dtype=np.float32)[np.asarray(weeks)]
        train = np.flatnonzero(~val)
        offset = float(np.sum(weight[train] * target[train]) / np.sum(weight[train]))
        y = np.asarray(target - offset, np.float32)

        def batch_of(rows):
            idx = train[rows]
            batch = {"tokens": tokens[idx], "lengths": lengths[idx], "target": y[idx],
                     "weight": np.asarray(weight[idx], np.float32)}
            return batch if conf is None else {**batch, "conf": conf[idx]}

        def val_loss(predict):
            if not val.any():
                return float("nan")
            pred = predict(tokens[val], lengths[val], None if conf is None else conf[val])
            return _weighted_mse(pred, y[val], weight[val])

        kit = self._kit("regress", 0 if conf is None else n_weeks)
        predict = self._train(method, kit, batch_of, train.size, val_loss, self.cfg.batch_size)
        ref = None if conf is None else np.eye(n_weeks, dtype=np.float32)[ref_week]

        def score(new_texts):
            t, n = self._encode(new_texts)
            c = None if ref is None else np.tile(ref, (len(t), 1))
            return predict(t, n, c) + offset
        return score

    def compare(self, method, win, lose, val) -> Scorer:
        val = np.asarray(val, bool)
        uniq, inv = np.unique(np.concatenate([win, lose]).astype(str), return_inverse=True)
        tokens, lengths = self._encode(uniq)
        a, b = inv[:len(win)], inv[len(win):]
        train = np.flatnonzero(~val)

        def batch_of(rows):
            idx = np.concatenate([a[train[rows]], b[train[rows]]])
            return {"tokens": tokens[idx], "lengths": lengths[idx]}

        seen, where = np.unique(np.concatenate([a[val], b[val]]), return_inverse=True)

        def val_loss(predict):      # scores only the validation pairs' texts
            if not val.any():
                return float("nan")
            s = predict(tokens[seen], lengths[seen])
            return _bt_loss(s[where[:val.sum()]], s[where[val.sum():]])

        pairs_per_step = max(1, self.cfg.batch_size // 2)   # two sequences per pair
        predict = self._train(method, self._kit("pairs"), batch_of, train.size, val_loss,
                              pairs_per_step)
        return lambda new_texts: predict(*self._encode(new_texts))
