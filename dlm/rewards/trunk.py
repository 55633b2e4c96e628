"""The from-scratch byte-level reward trunk as a reward backend (the unfrozen-trunk path of
the Upworthy comparison): a small dlm.models.reward.RewardModel trained by the generic
dlm.train step and loop (step_loop), early-stopped on the validation rows.

Same interface as dlm.rewards.linear.LinearBackend: regress(...) fits the weighted
regression loss, compare(...) Bradley-Terry on pairs; each returns texts -> rewards.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from dlm.rewards.linear import Scorer, bt_loss, weighted_mse


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
        """dlm.train.loop.step_loop over seeded per-epoch permutations of the training rows
        -> the params with the best validation loss (checked every eval_every steps), as a
        predictor."""
        import jax
        import jax.numpy as jnp

        from dlm.train.loop import step_loop
        from dlm.train.step import TrainState

        c = self.cfg
        model, tx, step, predictor, params0 = kit
        # fresh device buffers: the step donates the state, params0 stays valid for the next method
        state = TrainState.create(jax.tree.map(jnp.asarray, params0), tx)
        rng, perm = np.random.default_rng(c.seed), [np.zeros(0, np.int64)]
        best = {"params": None, "loss": np.inf}

        def batch_fn(s, state):               # called once per step, in order
            while perm[0].size < batch:       # per-epoch permutations, seeded
                perm[0] = np.concatenate([perm[0], rng.permutation(n_train)])
            rows, perm[0] = perm[0][:batch], perm[0][batch:]
            return batch_of(rows)

        def on_log(done, state, metrics):
            host = jax.device_get(state.params)
            loss = val_loss(predictor(host))
            self.history.append({"representation": self.name, "method": method, "step": done,
                                 "loss": metrics["loss"], "val_loss": loss})
            if not loss >= best["loss"]:      # nan (no validation rows): keep the last
                best.update(params=host, loss=loss)

        step_loop(state, step, batch_fn, c.steps, jax.random.key, log_every=c.eval_every,
                  on_log=on_log, desc=f"{self.name} {method}", quiet=not self.progress)
        return predictor(best["params"])

    def regress(self, method, texts, weeks, n_weeks, ref_week, target, weight, val,
                groups=None) -> Scorer:
        # groups (fixed effects) are not modelled by the trunk: it fits the within-group
        # centred target on the text alone, so its scale is attenuated by ~(1 - 1/arms)
        # (rankings are not); LinearBackend demeans its design instead
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
            return weighted_mse(pred, y[val], weight[val])

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
            return bt_loss(s[where[:val.sum()]], s[where[val.sum():]])

        pairs_per_step = max(1, self.cfg.batch_size // 2)   # two sequences per pair
        predict = self._train(method, self._kit("pairs"), batch_of, train.size, val_loss,
                              pairs_per_step)
        return lambda new_texts: predict(*self._encode(new_texts))
