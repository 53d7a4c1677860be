"""Data parallelism over devices and processes with a ``Mesh`` and ``NamedSharding``.

One code path for 1 CPU, forced host devices (tests), a GPU, a TPU slice, or many
processes: the leading (batch/signal) axis of data is split over a 1-D mesh axis
``"data"``, parameters and optimizer state are replicated, and ``jax.jit`` inserts the
collectives. For multi-process runs call :func:`initialize_distributed` first in every
process; ``jax.devices()`` then spans all processes, and :func:`global_batch` lets each
process load only the rows its own devices hold.
"""

from __future__ import annotations

import os

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
    """Places every array of ``tree`` on all devices of the mesh (of every process: then
    each process must pass the same values)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, replicated(mesh))
    rep = replicated(mesh)

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, rep)
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(rep, x, x.shape)

    return jax.tree.map(one, tree)


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, timeout_s: int = 300):
    """``jax.distributed.initialize`` for this process (call before any other JAX use).

    With no arguments the cluster is detected from the environment (TPU pods, SLURM,
    Open MPI, ...); otherwise give all three (``coordinator`` is ``HOST:PORT`` of process
    0). The values may also come from ``ASMR_COORDINATOR``, ``ASMR_NUM_PROCESSES`` and
    ``ASMR_PROCESS_ID``. On CPU, cross-process collectives use gloo.
    """
    coordinator = coordinator or os.environ.get("ASMR_COORDINATOR")
    if num_processes is None and os.environ.get("ASMR_NUM_PROCESSES"):
        num_processes = int(os.environ["ASMR_NUM_PROCESSES"])
    if process_id is None and os.environ.get("ASMR_PROCESS_ID"):
        process_id = int(os.environ["ASMR_PROCESS_ID"])
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError(f"multi-process launch needs all of coordinator, num_processes and process_id "
                         f"(got {coordinator!r}, {num_processes!r}, {process_id!r}), or none of them")
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    if coordinator is not None and process_id:
        wait_for_coordinator(coordinator, timeout_s)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # used only by the CPU backend
    jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=int(timeout_s))


def wait_for_coordinator(coordinator: str, timeout_s: float) -> None:
    """Waits until ``HOST:PORT`` accepts a TCP connection; ``ValueError`` after ``timeout_s``.

    JAX's own client aborts the whole process (a C++ fatal error, no Python exception)
    when it cannot register with the coordinator in time, so a process other than 0
    looks first.
    """
    import socket
    import time

    host, sep, port = coordinator.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"coordinator must be HOST:PORT, got {coordinator!r}")
    deadline = time.monotonic() + float(timeout_s)
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise ValueError(f"no coordinator answered at {coordinator} within {timeout_s:g} s ({e}); start "
                                 f"process 0 first, or check the address") from None
            time.sleep(0.2)


def local_rows(mesh: Mesh, batch: int) -> slice:
    """The rows ``[a, b)`` of a ``[batch, ...]`` array that this process's devices hold."""
    check_divisible(batch, mesh)
    spans = batch_sharding(mesh).addressable_devices_indices_map((batch,)).values()
    starts = [s[0].start or 0 for s in spans]
    stops = [batch if s[0].stop is None else s[0].stop for s in spans]
    a, b = min(starts), max(stops)
    if b - a != len(set(starts)) * (batch // mesh.size):
        raise ValueError("this process's devices do not hold one contiguous block of the batch")
    return slice(a, b)


def global_batch(load_rows, batch: int, mesh: Mesh):
    """A global ``[batch, ...]`` array split over ``mesh``, of which this process loads only its rows.

    ``load_rows(slice) -> array [rows, ...]`` (or a pytree of them) is called once with
    :func:`local_rows`; in a single process that is the whole batch.
    """
    rows = local_rows(mesh, batch)
    local = load_rows(rows)
    bs = batch_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(bs, np.asarray(x), (batch,) + np.shape(x)[1:]), local)


def to_host(tree):
    """Host numpy copies of a pytree of replicated (possibly multi-process) arrays."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.is_fully_replicated:
                from jax.experimental import multihost_utils

                return np.asarray(multihost_utils.process_allgather(x, tiled=True))
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def barrier(name: str):
    """Waits until every process reaches the barrier ``name`` (nothing in a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
