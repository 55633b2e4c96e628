"""Orbax checkpoints of a TrainState pytree: save every N steps, keep the last k, resume.

Saves are synchronous, and Orbax writes each step to a temporary directory that it
renames into place when complete, so a process killed mid-save leaves the previous
checkpoints intact (leftover temporaries are cleaned up on the next start).
"""
from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """A directory of numbered checkpoints (step = number of updates applied)."""

    def __init__(self, directory: pathlib.Path | str, keep: int = 3):
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state: Any) -> pathlib.Path:
        """Write `state` as checkpoint `step` (replacing one of that number if present)."""
        if step in self._manager.all_steps():
            self._manager.delete(step)
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()
        return self.path(step)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def path(self, step: int) -> pathlib.Path:
        return self.directory / str(step)

    def _existing(self, step: int | None) -> int:
        step = self.latest_step() if step is None else step
        if step is None or step not in self._manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint {step if step is not None else '(any)'} in {self.directory}; "
                f"have {self.all_steps()}")
        return step

    def restore(self, step: int | None, target_like_state: Any) -> Any:
        """Restore checkpoint `step` (None: the latest) into the structure, dtypes and
        shardings of `target_like_state` (a concrete state or ShapeDtypeStructs)."""
        step = self._existing(step)
        abstract = jax.tree.map(ocp.tree.to_shape_dtype_struct, target_like_state)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_params(self, step: int | None = None) -> Any:
        """Only the "params" of a saved TrainState, as plain nested dicts of arrays.

        Needs no optimiser or target structure: how a later stage (reward model, DPO, PG)
        loads the SFT policy from its checkpoint directory.
        """
        step = self._existing(step)
        return self._manager.restore(step, args=ocp.args.StandardRestore())["params"]

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
