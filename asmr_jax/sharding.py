"""Data parallelism over local devices with a ``Mesh`` and ``NamedSharding``.

One code path for 1 CPU, forced host devices (tests), a GPU, or a TPU slice: the leading
(batch/signal) axis of data is split over a 1-D mesh axis ``"data"``, parameters and
optimizer state are replicated, and ``jax.jit`` inserts the collectives. For multi-host
runs call ``jax.distributed.initialize()`` first; ``jax.devices()`` then spans all hosts.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices) named ``"data"``."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(n: int, mesh: Mesh, what: str = "batch size"):
    if n % mesh.size:
        raise ValueError(f"{what} {n} is not divisible by the {mesh.size} devices of the mesh")


def shard_batch(tree, mesh: Mesh):
    """Places every array of ``tree`` with its leading axis split over the mesh."""
    for leaf in jax.tree.leaves(tree):
        check_divisible(np.shape(leaf)[0], mesh, "leading axis")
    return jax.device_put(tree, batch_sharding(mesh))


def replicate(tree, mesh: Mesh):
    """Places every array of ``tree`` on all devices of the mesh."""
    return jax.device_put(tree, replicated(mesh))
