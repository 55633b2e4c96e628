"""A loss that turns NaN stops training with a clear error and keeps the last good checkpoint."""
import json

import jax
import numpy as np
import pytest

from dlm.train.checkpoint import Checkpointer
from dlm.train.loop import NonFiniteLossError
from tests import _tiny_train as tiny


@pytest.mark.parametrize("nan_at", [6, 8])   # update 7: just after a checkpoint; 9: at one
def test_nan_loss_raises_and_last_good_checkpoint_restores(tmp_path, nan_at):
    # batch index nan_at is the (nan_at + 1)-th update; checkpoints every 3 updates
    with pytest.raises(NonFiniteLossError) as info:
        tiny.run(tmp_path, n_steps=12, ckpt_every=3, nan_at=nan_at)
    err = info.value
    assert err.step == nan_at + 1 and np.isnan(err.loss)
    assert f"step {nan_at + 1}" in str(err) and "last good checkpoint" in str(err)
    assert err.last_good == tmp_path.absolute() / "checkpoints" / "6"
    with Checkpointer(tmp_path / "checkpoints") as ck:
        assert ck.latest_step() == 6                         # the bad state was never saved
        state = ck.restore(None, tiny.init_state(0, 12))
    assert int(state.step) == 6
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(state.params)))
    # the log stops at the last finite step
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == nan_at and all(np.isfinite(r["loss"]) for r in rows)
