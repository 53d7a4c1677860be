"""Fitting one signal.

Adam (lr 1e-4, optionally cosine-decayed to 1e-5 as the official code does) on the MSE
of ``[0, 1]`` data. Small signals train full batch through the activation-sharing
:meth:`render`; large ones draw points with the block sampler (the grid is cut into
16-per-axis blocks and every step takes the next few points of a per-block random
permutation, so each point is visited once per epoch). Steps run inside ``jax.jit``
as ``lax.scan`` chunks; the host only sees one PSNR per chunk for the progress bar.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from asmr_jax import metrics, models

BLOCK = 16
# Above this many values (samples x channels) a fit uses the block sampler by default.
FULL_BATCH_LIMIT = 1 << 22


def check_signal(model, signal) -> np.ndarray:
    """Validates ``signal`` for ``model`` and returns it as float32 ``[*shape, channels]``."""
    arr = np.asarray(signal)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"signal must be a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    want = tuple(model.shape) + (model.channels,)
    if arr.shape != want:
        raise ValueError(f"signal has shape {arr.shape}, the model expects {want} (spatial shape + channels)")
    if arr.size == 0 or math.prod(model.shape) < 2:
        raise ValueError(f"signal of shape {arr.shape} has fewer than 2 samples: nothing to fit")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"signal has {int(bad.sum())} non-finite values (NaN/inf), first at index {idx}")
    return arr


def device_memory_bytes() -> int:
    """Memory of the default device: its allocator's limit where it reports one (GPU, TPU),
    else the host's physical memory (CPU)."""
    import os

    stats = jax.local_devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_memory(model, copies: int = 4, what: str = "a fit") -> None:
    """Refuses a model whose parameters alone (``copies`` float32 copies: weights, gradient
    and Adam's two moments) exceed the device's memory, before anything is allocated."""
    need = 4 * copies * int(model.num_params())
    have = device_memory_bytes()
    if need > have:
        widths = getattr(model, "widths", None)
        raise MemoryError(f"{what} of this {model.kind} (widths {widths}) needs {model.num_params():,} parameters, "
                          f"{need / 2**30:,.1f} GiB for them and their optimizer state alone; the device has "
                          f"{have / 2**30:,.1f} GiB. Use a smaller --width")


@functools.lru_cache(maxsize=64)
def make_optimizer(lr: float = 1e-4, steps: int | None = None, cosine: bool = False, final_lr: float = 1e-5):
    """Adam with a constant rate, or cosine decay from ``lr`` to ``final_lr`` over ``steps``.

    One object per setting (cached), so the jitted loops that take it as a static
    argument compile once per model and setting, not once per :func:`fit` call.
    """
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if cosine:
        if not steps:
            raise ValueError("cosine decay needs the number of steps")
        lr = optax.cosine_decay_schedule(lr, steps, alpha=final_lr / lr)
    return optax.adam(lr)


def init_params(model, key, signal=None) -> dict:
    """Fresh parameters; given ``signal [*shape, C]``, the output bias starts at its mean.

    At Adam's 1e-4 a bias moves about 1e-4 per step, so a network whose last hidden layer
    has no constant component (ASMR: the finest modulation makes it high-frequency)
    would spend thousands of steps just reaching the signal's mean. Starting the output
    bias there (a data-dependent init, the only departure from SIREN's init) lets the
    steps go to detail (experiments/README.md measures the difference).
    """
    params = model.init(key)
    if signal is None:
        return params
    return set_output_bias(params, jnp.mean(jnp.reshape(signal, (-1, signal.shape[-1])), axis=0))


def set_output_bias(params: dict, value) -> dict:
    """``params`` with the output layer's bias ``[C]`` (or ``[..., C]``: one per cell or expert, each
    set) replaced by ``value`` (the rest shared)."""
    layers = list(params["layers"])
    b = layers[-1]["b"]
    layers[-1] = {**layers[-1], "b": jnp.broadcast_to(jnp.asarray(value, b.dtype).reshape(-1), b.shape)}
    return {**params, "layers": layers}


def full_batch_loss(model, params, target, shifts=None):
    """MSE of the activation-sharing render against ``target [*shape, C]``."""
    return jnp.mean((model.render(params, shifts) - target) ** 2)


@dataclasses.dataclass(frozen=True)
class BlockSampler:
    """Uniform per-block sampling: every point once per epoch.

    The grid is split into blocks of ``BLOCK`` samples per axis; a step takes
    ``per_block`` points from each block, following a fresh random permutation of the
    block's offsets each epoch. Points past the signal's edge (partial blocks) are masked.
    """

    shape: tuple[int, ...]
    per_block: int

    @property
    def block(self) -> tuple[int, ...]:
        return tuple(min(BLOCK, s) for s in self.shape)

    @property
    def nblocks(self) -> tuple[int, ...]:
        return tuple(-(-s // b) for s, b in zip(self.shape, self.block))

    @property
    def steps_per_epoch(self) -> int:
        return math.prod(self.block) // self.per_block

    @property
    def batch_size(self) -> int:
        return math.prod(self.nblocks) * self.per_block

    @classmethod
    def for_batch(cls, shape, batch_size: int) -> BlockSampler:
        shape = tuple(shape)
        probe = cls(shape, 1)
        per = max(1, min(math.prod(probe.block), round(batch_size / math.prod(probe.nblocks))))
        return cls(shape, per)

    def epoch(self, key):
        """Per-block permutations for one epoch: ``[n_blocks, block_volume]`` ints."""
        nb, vol = math.prod(self.nblocks), math.prod(self.block)
        keys = jax.random.split(key, nb)
        return jax.vmap(lambda k: jax.random.permutation(k, vol))(keys)

    def batch(self, perms, step):
        """Coordinates ``[batch, d]`` and mask ``[batch]`` of the ``step``-th batch of an epoch."""
        d = len(self.shape)
        offs = jax.lax.dynamic_slice_in_dim(perms, step * self.per_block, self.per_block, axis=1)  # [nb, k]
        within = jnp.stack(jnp.unravel_index(offs, self.block), axis=-1)  # [nb, k, d]
        origin = np.stack(
            np.meshgrid(*[np.arange(n) * b for n, b in zip(self.nblocks, self.block)], indexing="ij"), -1
        ).reshape(-1, 1, d)  # [nb, 1, d]
        coords = (within + origin).reshape(-1, d)  # [batch, d]
        shape = np.array(self.shape)[None]  # [1, d]
        mask = jnp.all(coords < shape, axis=-1)
        return jnp.minimum(coords, shape - 1), mask


def sampled_loss(model, params, target, coords, mask, shifts=None):
    """Masked MSE of the per-point forward on ``coords [B, d]`` against ``target [*shape, C]``."""
    flat = target.reshape(-1, target.shape[-1])
    idx = jnp.ravel_multi_index(tuple(coords.T), model.shape, mode="clip")
    err = (model.apply(params, coords, shifts) - flat[idx]) ** 2  # [B, C]
    w = mask.astype(err.dtype)[:, None]
    return jnp.sum(err * w) / (jnp.sum(w) * err.shape[-1])


def _render_losses(model, params, target):
    """MSE of the render (what is trained) and of the render clipped to [0, 1] (what PSNR sees)."""
    pred = model.render(params)
    return jnp.mean((pred - target) ** 2), jnp.mean((jnp.clip(pred, 0.0, 1.0) - target) ** 2)


def start_best(params):
    """The best-so-far record :func:`run_full_batch` carries: params, clipped MSE, step."""
    return params, jnp.asarray(jnp.inf, jnp.float32), jnp.asarray(-1, jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "tx", "n"))
def run_full_batch(model, tx, params, opt_state, target, n: int, best=None, start=0):
    """``n`` full-batch Adam steps in one ``lax.scan``, the first being step ``start``.

    Every step's forward pass also gives the clipped-prediction MSE of the parameters it
    starts from, so the best parameters seen are kept without an extra render (the
    official code likewise keeps its best-PSNR model). Returns ``params, opt_state,
    losses [n], best``, with ``best = (params, clipped_mse, step)`` updated from ``best``
    (default: nothing seen yet); ``step`` counts the updates those params had.
    """
    best = start_best(params) if best is None else best

    def step(carry, t):
        params, opt_state, (best_params, best_err, best_step) = carry
        (loss, err), grads = jax.value_and_grad(
            lambda p: _render_losses(model, p, target), has_aux=True)(params)
        better = err < best_err
        best = (jax.tree.map(lambda new, old: jnp.where(better, new, old), params, best_params),
                jnp.where(better, err, best_err), jnp.where(better, t, best_step))
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, best), loss

    steps = start + jnp.arange(n, dtype=jnp.int32)
    (params, opt_state, best), losses = jax.lax.scan(step, (params, opt_state, best), steps)
    return params, opt_state, losses, best


@functools.partial(jax.jit, static_argnames=("model", "tx", "sampler", "n"))
def run_sampled(model, tx, sampler, params, opt_state, target, key, start, n: int):
    """``n`` sampled steps starting at step ``start`` of an epoch drawn from ``key``."""
    perms = sampler.epoch(key)

    def step(carry, j):
        params, opt_state = carry
        coords, mask = sampler.batch(perms, j)
        loss, grads = jax.value_and_grad(sampled_loss, argnums=1)(model, params, target, coords, mask)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), start + jnp.arange(n))
    return params, opt_state, losses


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns. Times are seconds; ``history`` holds ``(step, psnr)``."""

    model: object
    params: dict
    psnr: float
    ssim: float | None
    steps: int
    fit_seconds: float
    step_seconds: float
    history: list
    reconstruction: np.ndarray  # the full render of ``params``, [*shape, C]
    best_step: int = 0  # updates ``params`` had (``steps`` unless an earlier step was better)


def fit(
    model,
    signal,
    steps: int = 1000,
    *,
    lr: float = 1e-4,
    cosine: bool = False,
    batch_size: int | None = None,
    key=None,
    params=None,
    chunk: int = 100,
    progress: bool = True,
    keep_best: bool = True,
) -> FitResult:
    """Fits ``model`` to one signal.

    Args:
      model: an :class:`~asmr_jax.asmr.ASMR` or :class:`~asmr_jax.siren.SIREN`.
      signal: ``[*model.shape, model.channels]`` on ``[0, 1]``.
      steps: optimizer steps.
      lr, cosine: Adam rate; cosine decays it to 1e-5 over ``steps``.
      batch_size: points per step; ``None`` trains full batch when the signal has at
        most ``FULL_BATCH_LIMIT`` values, else about 2**18 points per step.
      key: PRNG key for init and sampling (default ``jax.random.key(0)``).
      params: start from these instead of a fresh :func:`init_params` (SIREN init with
        the output bias at the signal's mean).
      chunk: steps per jitted ``lax.scan`` call (one progress-bar update each).
      progress: show a progress bar with the current PSNR.
      keep_best: (full batch) return the parameters with the best PSNR seen during
        training rather than the last ones, as the official code reports; the step
        they come from is ``FitResult.best_step``. Sampled fits always return the last.

    Returns:
      :class:`FitResult` with PSNR/SSIM measured on a full render of the returned params.
    """
    target_np = check_signal(model, signal)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    check_memory(model)
    key = jax.random.key(0) if key is None else key
    k_init, k_data = jax.random.split(key)
    params = init_params(model, k_init, target_np) if params is None else params
    tx = make_optimizer(float(lr), int(steps) if cosine else None, bool(cosine))
    opt_state = tx.init(params)
    target = jnp.asarray(target_np)

    if batch_size is None and target_np.size > FULL_BATCH_LIMIT:
        batch_size = 1 << 18
    sampler = None if batch_size is None else BlockSampler.for_batch(model.shape, batch_size)
    if sampler is not None:
        chunk = sampler.steps_per_epoch if chunk is None else min(chunk, sampler.steps_per_epoch)

    history, times = [], []
    best = start_best(params) if sampler is None else None
    done, t_start = 0, time.perf_counter()
    bar = tqdm(total=steps, disable=not progress, desc=f"fit {model.kind}", unit="step", leave=False)
    epoch_key, pos = k_data, 0
    while done < steps:
        n = min(chunk, steps - done)
        if sampler is not None:
            if pos == sampler.steps_per_epoch:
                epoch_key, pos = jax.random.fold_in(epoch_key, 1), 0
            n = min(n, sampler.steps_per_epoch - pos)
        t0 = time.perf_counter()
        if sampler is None:
            params, opt_state, losses, best = run_full_batch(model, tx, params, opt_state, target, n, best, done)
        else:
            params, opt_state, losses = run_sampled(
                model, tx, sampler, params, opt_state, target, epoch_key, pos, n
            )
            pos += n
        last = float(losses[-1])
        times.append((time.perf_counter() - t0) / n)
        done += n
        if not math.isfinite(last):
            bar.close()
            raise FloatingPointError(f"loss became {last} at step {done}; try a lower learning rate")
        history.append((done, float(metrics.mse_to_psnr(last))))
        bar.update(n)
        bar.set_postfix(psnr=f"{history[-1][1]:.2f}")
    bar.close()
    fit_seconds = time.perf_counter() - t_start
    render = models.jitted_render(model)
    recon = np.asarray(render(params))
    best_step = steps
    if keep_best and best is not None:
        final_err = float(np.mean((np.clip(recon, 0.0, 1.0) - target_np) ** 2))
        if float(best[1]) < final_err:
            params, best_step = best[0], int(best[2])
            recon = np.asarray(render(params))
    steady = times[1:] if len(times) > 1 else times
    return FitResult(
        model=model,
        params=params,
        psnr=metrics.psnr(recon, target_np),
        ssim=metrics.ssim(recon, target_np) if model.ndim == 2 else None,
        steps=steps,
        fit_seconds=fit_seconds,
        step_seconds=float(np.median(steady)),
        history=history,
        reconstruction=recon,
        best_step=best_step,
    )
