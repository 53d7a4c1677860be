"""Fitting many signals at once: ``jax.vmap`` over networks, sharded over devices.

:func:`fit_many` trains one independent network per signal. Parameters, Adam state and
targets carry a leading signal axis ``[n, ...]``; one jitted step ``jax.vmap``-s the
single-signal full-batch step (:func:`asmr_jax.fit.full_batch_loss`, Adam from
:func:`asmr_jax.fit.make_optimizer`) over that axis, and steps run in ``lax.scan`` chunks.
Signal ``i`` starts from ``fit.init_params(model, split(fold_in(key, index_i))[0],
signal_i)`` (the output bias at the signal's mean), where ``index_i`` is its global
index (its position in the dataset), so a signal's fit does not depend on which other
signals share its batch, on the chunk size or on the device count, and it equals
``asmr_jax.fit.fit(model, signal_i, key=fold_in(key, index_i), keep_best=False)``, up to float32
rounding (XLA may block a batched matmul differently for another per-device batch size,
and long runs at high learning rates amplify such differences). With
``init=params`` every signal starts from that shared (e.g. meta-learned) initialization.

Early stopping: with ``target_psnr`` a signal whose full-batch loss reaches
``10 ** (-target_psnr / 10)`` is frozen (a mask keeps its parameters and optimizer state
from then on) and its number of applied updates is recorded; the loop ends early once
every signal is frozen.

Sharding: the signal axis is split over a 1-D ``Mesh`` of all devices (or ``mesh=``) with
``NamedSharding`` (:mod:`asmr_jax.sharding`); the same code runs on one CPU, on forced host
devices, on a GPU or on a TPU slice. When ``n`` is not a multiple of the device count the
batch is padded with copies of the last signal (same key), which are dropped from every
result. Multi-host: call ``jax.distributed.initialize()`` on every host before anything
else; ``jax.devices()`` then spans all hosts and the mesh covers them. Each process loads
only the signals its own devices hold (:func:`asmr_jax.sharding.global_batch`), results
are gathered with ``multihost_utils.process_allgather``, and only process 0 writes the
store, which must be on a file system every host sees (``asmr fit-many --distributed``
does the initialization).

The chunked on-disk store that :func:`fit_dataset` writes is :mod:`asmr_jax.store`.

>>> from asmr_jax.siren import SIREN
>>> model = SIREN((8, 8), 1, widths=(16,))
>>> res = fit_many(model, np.full((3, 8, 8, 1), 0.5, np.float32), steps=10, progress=False)
>>> res.psnr.shape, jax.tree.leaves(res.params)[0].shape[0]
((3,), 3)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from asmr_jax import fit as fit_lib
from asmr_jax import metrics, sharding, store
from asmr_jax.store import Store, leaf_path, load_store


# ----------------------------------------------------------------------------- pytree helpers
def _check_init(model, init):
    """Validates a shared init against ``model.init``'s structure; returns it as float32 arrays."""
    abstract = jax.eval_shape(model.init, jax.random.key(0))
    want = jax.tree.structure(abstract)
    got = jax.tree.structure(init)
    if want != got:
        raise ValueError(f"init has tree structure {got}, the model's parameters are {want}")
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(abstract), jax.tree.leaves(init)):
        if tuple(np.shape(b)) != tuple(a.shape):
            raise ValueError(
                f"init leaf {leaf_path(path)} has shape {np.shape(b)}, expected {a.shape} "
                "(one network's parameters, no signal axis)"
            )
    return jax.tree.map(lambda x: np.asarray(x, np.float32), init)


# ----------------------------------------------------------------------------- jitted pieces
@functools.partial(jax.jit, static_argnames=("model", "impl"))
def _init_random(model, key_data, impl, indices, targets):
    """``[b]`` global indices -> stacked params ``[b, ...]``, as ``fit.fit(key=fold_in(key, i))``."""
    key = jax.random.wrap_key_data(key_data, impl=impl)
    return jax.vmap(
        lambda i, t: fit_lib.init_params(model, jax.random.split(jax.random.fold_in(key, i))[0], t)
    )(indices, targets)


def _key_parts(key):
    """A PRNG key (typed or legacy ``uint32``) as host key data and its implementation.

    Host data (not a committed device array) can be placed on a mesh that spans processes.
    """
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    return np.asarray(jax.random.key_data(key)), jax.random.key_impl(key)


@functools.partial(jax.jit, static_argnames=("b",))
def _init_shared(init, b: int):
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (b,) + x.shape), init)


@functools.partial(jax.jit, static_argnames=("tx",))
def _init_opt(tx, params):
    return jax.vmap(tx.init)(params)


def _signal_step(model, tx, params, opt_state, steps, frozen, target, threshold):
    """One Adam step on one signal unless it is (or now becomes) frozen.

    ``target [*shape, C]``; ``steps`` counts applied updates; ``frozen`` is a bool scalar.
    The loss is that of the parameters before the step, so a signal freezes at the first
    parameters whose loss is ``<= threshold``.
    """
    loss, grads = jax.value_and_grad(fit_lib.full_batch_loss, argnums=1)(model, params, target)
    frozen = frozen | (loss <= threshold)
    updates, new_opt = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jnp.where(frozen, old, new)
    params = jax.tree.map(keep, new_params, params)
    opt_state = jax.tree.map(keep, new_opt, opt_state)
    return params, opt_state, steps + (~frozen).astype(steps.dtype), frozen, loss


def _run(model, tx, state, targets, threshold, n: int):
    """``n`` steps of every signal in one ``lax.scan``; ``state`` leaves are ``[b, ...]``.

    Returns the new state and the last step's loss per signal ``[b]``.
    """
    vstep = jax.vmap(functools.partial(_signal_step, model, tx), in_axes=(0, 0, 0, 0, 0, None))

    def body(state, _):
        *state, loss = vstep(*state, targets, threshold)
        return tuple(state), loss

    state, losses = jax.lax.scan(body, tuple(state), None, length=n)
    return state, losses[-1]


# Donating the state halves peak memory on accelerators; CPU ignores donation (and warns).
_RUNNERS = {
    donate: jax.jit(_run, static_argnames=("model", "tx", "n"), donate_argnames=("state",) if donate else ())
    for donate in (False, True)
}


def _runner():
    return _RUNNERS[jax.default_backend() != "cpu"]


@functools.partial(jax.jit, static_argnames=("model",))
def _final_psnr(model, params, targets):
    """Full-render PSNR per signal ``[b]`` (prediction clipped to [0, 1], as ``metrics.psnr``)."""

    def one(p, t):
        pred = jnp.clip(model.render(p), 0.0, 1.0)
        return metrics.mse_to_psnr(jnp.mean((pred - t) ** 2))

    return jax.vmap(one)(params, targets)


# ----------------------------------------------------------------------------- fit_many
@dataclasses.dataclass
class BatchResult:
    """What :func:`fit_many` returns (host numpy arrays).

    ``params``: stacked pytree, every leaf ``[n, *leaf_shape]``; ``psnr [n]`` final
    full-render PSNR (dB); ``steps [n]`` updates applied per signal; ``stopped [n]`` whether
    the signal reached ``target_psnr``; ``indices [n]`` global indices used for the keys.
    """

    model: object
    params: dict
    psnr: np.ndarray
    steps: np.ndarray
    stopped: np.ndarray
    indices: np.ndarray
    fit_seconds: float


def check_signals(model, signals, indices=None) -> np.ndarray:
    """Validates a batch for ``model``; returns float32 ``[n, *model.shape, model.channels]``.

    ``signals`` is an array ``[n, *shape, C]`` or a sequence of ``[*shape, C]`` arrays;
    ``indices [n]`` (default ``0..n-1``) name signals in errors.
    """
    if isinstance(signals, (list, tuple)):
        if not signals:
            raise ValueError("signals is empty: need at least one signal")
        arrs = [np.asarray(s) for s in signals]
        for i, a in enumerate(arrs[1:], 1):
            if a.shape != arrs[0].shape:
                raise ValueError(
                    f"signals 0 and {i} have different shapes {arrs[0].shape} and {a.shape}; "
                    "one fit_many call fits signals of one shape (group them by shape)"
                )
        arr = np.stack(arrs)
    else:
        arr = np.asarray(signals)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"signals must be a numeric array, got dtype {arr.dtype}")
    want = tuple(model.shape) + (model.channels,)
    if arr.ndim != len(want) + 1 or arr.shape[1:] != want:
        raise ValueError(
            f"signals have shape {arr.shape}, expected [n, *{want}] "
            "(signal axis, then the model's spatial shape and channels)"
        )
    if arr.shape[0] == 0:
        raise ValueError("signals is empty: need at least one signal")
    arr = arr.astype(np.float32)
    finite = np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        if indices is not None and len(indices) == arr.shape[0]:
            bad = np.asarray(indices)[bad]
        raise ValueError(
            f"signals {bad[:10].tolist()}{' ...' if len(bad) > 10 else ''} contain NaN/inf values "
            f"({len(bad)} of {arr.shape[0]} signals)"
        )
    return arr


def fit_many(
    model,
    signals,
    steps: int = 1000,
    *,
    lr: float = 1e-4,
    cosine: bool = False,
    key=None,
    seed: int = 0,
    indices=None,
    init=None,
    target_psnr: float | None = None,
    mesh=None,
    steps_per_call: int = 100,
    progress: bool = True,
) -> BatchResult:
    """Fits one network per signal, all at once.

    Args:
      model: an ASMR or SIREN (any registered model with ``init`` and ``render``).
      signals: ``[n, *model.shape, model.channels]`` on ``[0, 1]`` (or a list of
        ``[*shape, C]`` arrays of one shape).
      steps: full-batch Adam steps per signal.
      lr, cosine: as :func:`asmr_jax.fit.fit`.
      key, seed: base PRNG key (default ``jax.random.key(seed)``); signal ``i`` uses
        ``fold_in(key, indices[i])``.
      indices: ``[n]`` global indices of the signals (default ``0..n-1``).
      init: one network's parameters to start every signal from (no signal axis);
        ``None`` draws a fresh init per signal.
      target_psnr: freeze a signal once its training PSNR reaches this (dB).
      mesh: a 1-D ``Mesh`` (axis ``"data"``); default all devices.
      steps_per_call: steps per jitted ``lax.scan`` call (one progress update each).
      progress: show a progress bar over steps.

    Returns:
      :class:`BatchResult`; every array has the ``n`` real signals (padding dropped).
    """
    if indices is not None:
        indices = np.asarray(indices, np.int64).reshape(-1)
    targets_np = check_signals(model, signals, indices)
    n = targets_np.shape[0]
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
    if target_psnr is not None and not math.isfinite(target_psnr):
        raise ValueError(f"target_psnr must be a finite number of dB, got {target_psnr}")
    indices = np.arange(n, dtype=np.int64) if indices is None else indices
    if indices.shape[0] != n:
        raise ValueError(f"indices has {indices.shape[0]} entries for {n} signals")
    if indices.min() < 0 or indices.max() >= 2**31:
        raise ValueError(f"indices must lie in [0, 2**31), got range [{indices.min()}, {indices.max()}]")
    init = None if init is None else _check_init(model, init)
    key = jax.random.key(seed) if key is None else key
    mesh = sharding.data_mesh() if mesh is None else mesh
    return _fit(model, lambda rows: targets_np[rows], indices, steps, lr=lr, cosine=cosine, key=key, init=init,
                target_psnr=target_psnr, mesh=mesh, steps_per_call=steps_per_call, progress=progress)


def _fit(model, load_rows, indices, steps, *, lr, cosine, key, init, target_psnr, mesh, steps_per_call, progress):
    """:func:`fit_many` on signals ``indices``, of which this process loads only the rows its
    devices hold: ``load_rows(positions [m]) -> [m, *shape, C]`` (positions in ``indices``)."""
    n, given = len(indices), indices
    tx = fit_lib.make_optimizer(float(lr), int(steps) if cosine else None, bool(cosine))
    t_start = time.perf_counter()
    # Pad to a multiple of the device count with copies of the last signal (dropped below).
    b = -(-n // mesh.size) * mesh.size
    pad = b - n
    order = np.concatenate([np.arange(n), np.full(pad, n - 1)])  # padded row -> signal position
    indices = indices[order]

    def put(fn):  # a global [b, ...] array from this process's rows
        return sharding.global_batch(lambda rows: fn(order[rows]), b, mesh)

    def local_targets(pos):  # each distinct signal loaded and checked once (padding repeats the last)
        uniq, inverse = np.unique(pos, return_inverse=True)
        return check_signals(model, load_rows(uniq), given[uniq])[inverse]

    targets = put(local_targets)  # [b, *shape, C]
    if init is None:
        key_data, impl = _key_parts(key)
        params = _init_random(model, sharding.replicate(key_data, mesh), impl,
                              put(lambda pos: indices[pos].astype(np.int32)), targets)
    else:
        params = jax.device_put(_init_shared(sharding.replicate(init, mesh), b), sharding.batch_sharding(mesh))
    # Constant leaves (Adam's step count) come out unsharded; placing everything keeps one jit cache entry.
    batch = sharding.batch_sharding(mesh)
    params = jax.device_put(params, batch)
    opt_state = jax.device_put(_init_opt(tx, params), batch)
    state = (
        params,
        opt_state,
        put(lambda pos: np.zeros(len(pos), np.int32)),
        put(lambda pos: np.zeros(len(pos), bool)),
    )
    threshold = np.float32(-np.inf if target_psnr is None else 10.0 ** (-target_psnr / 10.0))

    run = _runner()
    quiet = not progress or jax.process_index() != 0  # one bar, from process 0
    bar = tqdm(total=steps, disable=quiet, desc=f"fit_many {model.kind} x{n}", unit="step", leave=False)
    done = 0
    while done < steps:
        k = min(steps_per_call, steps - done)
        state, loss = run(model, tx, state, targets, threshold, k)
        done += k
        loss_h = sharding.to_host(loss)[:n]
        if not np.isfinite(loss_h).all():
            bar.close()
            bad = np.flatnonzero(~np.isfinite(loss_h))
            raise FloatingPointError(
                f"loss became non-finite for signals {indices[bad[:10]].tolist()} by step "
                f"{done}; try a lower learning rate"
            )
        bar.update(k)
        bar.set_postfix(psnr=f"{float(np.mean(metrics.mse_to_psnr(loss_h))):.2f}")
        if target_psnr is not None and sharding.to_host(state[3])[:n].all():
            break
    bar.close()
    params, _, steps_done, frozen = state
    psnr = sharding.to_host(_final_psnr(model, params, targets))[:n]
    params_h = jax.tree.map(lambda x: sharding.to_host(x)[:n], params)
    return BatchResult(
        model=model,
        params=params_h,
        psnr=psnr.astype(np.float32),
        steps=sharding.to_host(steps_done)[:n],
        stopped=sharding.to_host(frozen)[:n],
        indices=indices[:n],
        fit_seconds=time.perf_counter() - t_start,
    )


# ----------------------------------------------------------------------------- fit_dataset
def fit_dataset(
    model,
    dataset,
    out_dir,
    chunk: int,
    steps: int,
    *,
    resume: bool = False,
    limit: int | None = None,
    lr: float = 1e-4,
    cosine: bool = False,
    seed: int = 0,
    init=None,
    target_psnr: float | None = None,
    mesh=None,
    steps_per_call: int = 100,
    progress: bool = True,
) -> Store:
    """Fits every signal of ``dataset`` (or the first ``limit``) into the store ``out_dir``.

    Args:
      model: the network fitted to every signal.
      dataset: any object with ``__len__`` and ``get(indices [m] int64) -> [m, *shape, C]``
        float32 on ``[0, 1]`` (e.g. :func:`asmr_jax.datasets.load_dataset`); read one
        chunk at a time.
      out_dir: store directory (format in the module docstring).
      chunk: signals per chunk (held in memory and fitted together).
      steps, lr, cosine, seed, init, target_psnr, mesh, steps_per_call: as :func:`fit_many`;
        signal ``i`` of the dataset uses ``fold_in(key(seed), i)``.
      resume: continue an interrupted store; without it an existing store is refused.
      limit: fit only the first ``limit`` signals.
      progress: progress bar over signals.

    Returns:
      The finished :class:`Store`.
    """
    if not (hasattr(dataset, "get") and hasattr(dataset, "__len__")):
        raise ValueError(f"dataset must have __len__ and get(indices); got {type(dataset).__name__}")
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk size must be an integer >= 1, got {chunk!r}")
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if steps_per_call < 1:  # checked before the store is created, so a corrected rerun is not blocked
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
    if target_psnr is not None and not (math.isfinite(target_psnr) and target_psnr > 0):
        raise ValueError(f"target_psnr must be a positive finite number of dB, got {target_psnr}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"learning rate must be a positive finite number, got {lr}")
    fit_lib.check_memory(model, copies=4 * int(chunk), what=f"fitting {chunk} signals at once")
    total = len(dataset)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        total = min(total, int(limit))
    if total < 1:
        raise ValueError("the dataset is empty: nothing to fit")
    for attr, want in (("shape", tuple(model.shape)), ("channels", model.channels)):
        have = getattr(dataset, attr, None)
        if have is not None and (tuple(have) if attr == "shape" else have) != want:
            raise ValueError(f"dataset {attr} is {have}, the model expects {want}")
    if init is not None:
        init = _check_init(model, init)
    out_dir = os.path.abspath(os.fspath(out_dir))
    writer = jax.process_index() == 0
    fit = store.fit_record(steps, lr, cosine, seed, target_psnr, init)
    manifest = store.open_store(out_dir, model, dataset, chunk, total, fit, resume, writer)
    finished = {e["start"] // chunk for e in manifest["chunks"]}
    nchunks = -(-total // chunk)
    todo = [c for c in range(nchunks) if c not in finished]
    done = sum(e["count"] for e in manifest["chunks"])
    bar = tqdm(total=total, initial=done, disable=not progress or not writer, desc=f"fit {model.kind}",
               unit="signal")
    for c in todo:
        idx = np.arange(c * chunk, min(total, (c + 1) * chunk), dtype=np.int64)

        def load(pos, idx=idx):  # only the rows this process's devices hold
            out = np.asarray(dataset.get(idx[pos]))
            if out.shape[:1] != pos.shape:
                raise ValueError(f"dataset.get returned {out.shape[:1]} signals for {len(pos)} indices")
            return out

        res = _fit(model, load, idx, steps, lr=lr, cosine=cosine, key=jax.random.key(seed), init=init,
                   target_psnr=target_psnr, mesh=sharding.data_mesh() if mesh is None else mesh,
                   steps_per_call=steps_per_call, progress=False)
        if writer:
            store.write_chunk(out_dir, manifest, c, idx, res.psnr, res.steps, res.params)
        bar.update(len(idx))
        bar.set_postfix(psnr=f"{float(np.mean(res.psnr)):.2f}")
    bar.close()
    sharding.barrier("asmr_jax.batch: store written")  # process 0 wrote it; the others read it now
    return load_store(out_dir)


