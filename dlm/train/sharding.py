"""Data parallelism through jax.sharding: one code path for 1 device and N devices.

Parameters and optimiser state are replicated; every batch array is split along its
leading (batch) axis over the mesh axis "data". The jit-compiled step then runs as one
SPMD program, so a mean over the batch is the mean over the global batch and losses
match a single-device run.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed() -> bool:
    """Call jax.distributed.initialize when launched as one process of several.

    Recognised: JAX_COORDINATOR_ADDRESS (+ JAX_NUM_PROCESSES, JAX_PROCESS_ID) set by
    hand, or a multi-task SLURM / Open MPI launch (JAX detects those itself). Must run
    before any other JAX call. Returns True when it initialised.
    """
    if jax.distributed.is_initialized():
        return False
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        num = env.get("JAX_NUM_PROCESSES")
        pid = env.get("JAX_PROCESS_ID")
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(num) if num else None, process_id=int(pid) if pid else None)
        return True
    slurm_tasks = int(env.get("SLURM_NTASKS", "1") or 1)
    mpi_size = int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1)
    if (env.get("SLURM_JOB_ID") and slurm_tasks > 1) or mpi_size > 1:
        jax.distributed.initialize()
        return True
    return False


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis "data" over all devices (each host contributes its local ones)."""
    devs = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devs.reshape(-1), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree (params, optimiser state) in full on every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def _check_divisible(path, leaf, n_dev: int) -> None:
    shape = np.shape(leaf)
    name = jax.tree_util.keystr(path) or "<batch>"
    if len(shape) == 0:
        raise ValueError(f"batch array {name} is a scalar; every batch array needs a batch axis")
    if shape[0] % n_dev:
        raise ValueError(
            f"batch array {name} has batch size {shape[0]}, which is not divisible by the "
            f"{n_dev} devices of the data-parallel mesh; choose a batch size that is a "
            f"multiple of {n_dev}")


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Split every array of `batch` along axis 0 over the "data" axis.

    In a multi-process run each process passes its own local part of the global batch.
    """
    n_local = mesh.local_mesh.size if jax.process_count() > 1 else mesh.size
    jax.tree_util.tree_map_with_path(lambda p, x: _check_divisible(p, x, n_local), batch)
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                        batch)
