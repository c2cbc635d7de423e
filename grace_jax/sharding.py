"""Device mesh, parameter shardings and global batches.

The mesh has three named axes, `data`, `fsdp` and `model`, whose sizes come from config (-1 takes the
devices left over). Batches are split over `data` x `fsdp`; parameters are sharded over `fsdp` along
their largest divisible dimension (ZeRO-3 style: gathered for use, updated sharded) and replicated over
`data`. `model` is kept in the mesh so configs written for tensor parallelism load unchanged; with the
default size 1 it changes nothing. Axis types are `Auto`: jit propagates shardings for intermediate
values, and only the inputs and outputs of a step are pinned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Resolves `{"data": -1, "fsdp": 2, "model": 1}` into concrete axis sizes for `num_devices`."""
    unknown = [a for a in AXES if sizes.get(a, 1) == -1]
    if len(unknown) > 1:
        raise ValueError(f"mesh: at most one axis may be -1, got {unknown}.")
    known = math.prod(sizes.get(a, 1) for a in AXES if a not in unknown)
    if num_devices % known:
        raise ValueError(f"mesh: {dict(sizes)} does not divide {num_devices} devices.")
    shape = tuple(num_devices // known if a in unknown else sizes.get(a, 1) for a in AXES)
    if math.prod(shape) != num_devices:
        raise ValueError(f"mesh: {dict(sizes)} uses {math.prod(shape)} of {num_devices} devices.")
    return shape


def make_mesh(sizes: Mapping[str, int], devices=None) -> jax.sharding.Mesh:
    """A mesh over all devices (or `devices`) with axes ('data', 'fsdp', 'model')."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(sizes, len(devices))
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) dimension split over data x fsdp; the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def param_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int = 2**14) -> P:
    """FSDP spec: the largest dimension divisible by the fsdp size is sharded; small arrays are not.

    Sharding tiny arrays (biases, norms) saves no memory and costs a collective each.
    """
    if fsdp_size == 1 or math.prod(shape) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(mesh: jax.sharding.Mesh, abstract_state):
    """NamedShardings for every array in a (possibly abstract) pytree of parameters/optimizer state."""
    fsdp_size = mesh.shape["fsdp"]

    def one(leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        return NamedSharding(mesh, param_spec(shape, fsdp_size))

    return jax.tree.map(one, abstract_state)


def global_batch(local: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Process-local numpy batch -> global jax.Arrays sharded over the batch axes.

    Each process passes its own rows (per-process batch = global batch / process count).
    """
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}
