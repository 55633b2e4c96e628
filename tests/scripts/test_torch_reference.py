"""dlm.experiments.torch_twin (the PyTorch twin scripts.bench times dlm against) computes
what dlm's decoder computes; and no other dlm module imports torch."""
import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm.models.decoder import PRESETS, Decoder, count_params, init_params
from dlm.train.losses import next_token_loss
from dlm.train.optim import OptimConfig, make_optimizer
from dlm.train.step import TrainState, make_train_step

DLM = pathlib.Path(__file__).resolve().parents[2] / "dlm"


def _imports(path, top_level_only=False):
    """(line, imported module) of every import in `path` (module level only if asked)."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            out += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def test_no_module_under_dlm_imports_torch():
    """Only the twin (dlm/experiments/torch_twin.py) imports torch, and nothing imports the
    twin at module level: importing any other dlm module never needs torch."""
    twin = DLM / "experiments" / "torch_twin.py"
    offenders = [f"{p}:{line}" for p in sorted(DLM.rglob("*.py")) if p != twin
                 for line, n in _imports(p) if n.split(".")[0] == "torch"]
    assert len(list(DLM.rglob("*.py"))) > 20 and offenders == []
    assert any(n.split(".")[0] == "torch" for _, n in _imports(twin))   # the check can fail
    eager = [f"{p}:{line}" for root in ("dlm", "sims", "scripts")
             for p in sorted((DLM.parent / root).rglob("*.py"))
             for line, n in _imports(p, top_level_only=True) if n.endswith("torch_twin")]
    assert eager == []


def _setup(preset):
    torch = pytest.importorskip("torch",
                                reason="torch is a benchmark extra (requirements-bench.txt)")
    from dlm.experiments import torch_twin as torch_reference
    cfg = PRESETS[preset]
    # larger-than-init weights and non-unit norm gains, so a wrong layout shows in the loss
    rng = np.random.default_rng(1)
    leaves, tree = jax.tree_util.tree_flatten(init_params(cfg, jax.random.key(0)))
    params = tree.unflatten([jnp.asarray(1 + 0.1 * rng.standard_normal(x.shape) if x.ndim == 1
                                         else 0.2 * rng.standard_normal(x.shape), jnp.float32)
                             for x in leaves])
    model = torch_reference.TorchDecoder(cfg)
    torch_reference.load_dlm_params(model, params)
    tokens = rng.integers(0, cfg.vocab_size, (3, 24)).astype(np.int32)
    mask = (rng.random((3, 24)) < 0.7).astype(np.float32)
    return torch, torch_reference, cfg, params, model, tokens, mask


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_same_parameter_count_and_loss_given_the_same_weights(preset):
    torch, ref, cfg, params, model, tokens, mask = _setup(preset)
    assert sum(p.numel() for p in model.parameters()) == count_params(params)
    logits, _ = Decoder(cfg).apply({"params": params}, jnp.asarray(tokens))
    ours = float(next_token_loss(logits, jnp.asarray(tokens), jnp.asarray(mask))[0])
    with torch.no_grad():
        t = torch.from_numpy(tokens).long()
        theirs = float(ref.next_token_loss(model(t), t, torch.from_numpy(mask)))
    assert ours > 1.0 and theirs == pytest.approx(ours, abs=1e-4, rel=1e-5)


def test_three_train_steps_track_dlm():
    """Same loss after two AdamW updates (warmup, clipping, decay all active): the optimiser,
    not only the forward pass, matches."""
    torch, ref, cfg, params, model, tokens, mask = _setup("tiny")
    ocfg = OptimConfig(lr=1e-2, warmup_steps=2, total_steps=5, clip_norm=0.5)
    tx = make_optimizer(ocfg)
    step = make_train_step(lambda p, b, r: next_token_loss(
        Decoder(cfg).apply({"params": p}, b["tokens"])[0], b["tokens"], b["loss_mask"]), tx)
    state, batch = TrainState.create(params, tx), {"tokens": jnp.asarray(tokens),
                                                   "loss_mask": jnp.asarray(mask)}
    tstep = ref.make_train_step(model, ocfg)
    t, m = torch.from_numpy(tokens).long(), torch.from_numpy(mask)
    losses = []
    for _ in range(3):
        state, metrics = step(state, batch, jax.random.key(0))
        loss, grad_norm = tstep(t, m)
        assert float(loss) == pytest.approx(float(metrics["loss"]), abs=2e-4)
        assert float(grad_norm) == pytest.approx(float(metrics["grad_norm"]), rel=1e-3)
        losses.append(float(loss))
    assert losses[2] < losses[0] - 0.01   # the updates moved the weights, identically
