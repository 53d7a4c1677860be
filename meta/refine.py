"""Quantization-aware refinement of functa latents before they are coded (COIN++).

:func:`refine` runs Adam on latents through the codec's straight-through quantizer, on the
Lagrangian of :func:`lagrangian`: the MSE of the quantized render plus ``rate_weight``
times the code length under the codec's symbol model (``0``: distortion only). Each
latent comes back as the best iterate by the exact Lagrangian, so refinement never
makes it worse. :mod:`meta.compress` calls it when encoding with ``refine_steps``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from asmr_jax.arrays import with_rank
from meta.entropy import SymbolModel
from meta.quantize import Quantizer


def refine(latents, images, render, quantizer: Quantizer, steps: int, lr: float = 0.1,
           symbols: SymbolModel | None = None, rate_weight: float = 0.0) -> np.ndarray:
    """Quantization-aware refinement (COIN++): Adam on latents through the straight-through quantizer.

    ``latents``: ``[n, D]`` (or one ``[D]``); ``images``: ``[n, *shape, C]`` (or one);
    ``render(latents [n, D]) -> [n, *shape, C]``, differentiable in JAX. The Adam rate is ``lr``
    quantizer steps per dimension (small, so the latent stays near the cells it had).

    Each latent minimizes the Lagrangian of :func:`lagrangian`: the MSE of its quantized
    render plus ``rate_weight`` times its code length in bits per pixel under ``symbols``
    (the codec's symbol model; needed when ``rate_weight > 0``). With ``rate_weight = 0``
    this is distortion only, and the rate grows as components leave the cheap middle cells
    (``experiments/README.md`` measures by how much). The code length is followed through a
    relaxation (the bits of the two nearest cells, interpolated), but every iterate is
    judged by the exact Lagrangian: each returned latent (float32, the shape of
    ``latents``) is the iterate with the lowest exact value among the start and all
    ``steps`` updates, so refinement never makes it worse.
    """
    latents = np.asarray(latents, np.float32)
    single = latents.ndim == 1
    images = np.asarray(images, np.float32)
    if single:
        latents, images = latents[None], images[None]
    rate_weight = _check_rate_weight(rate_weight, symbols)
    if int(steps) < 1:
        return latents[0] if single else latents
    table = None if not rate_weight else _bits_table(symbols, quantizer.dim)
    out = np.asarray(_refiner(render, quantizer, int(steps), float(lr), rate_weight,
                              None if table is None else _Hashable(table))(latents, images))
    return out[0] if single else out


def _check_rate_weight(rate_weight, symbols) -> float:
    rate_weight = float(rate_weight)
    if not (math.isfinite(rate_weight) and rate_weight >= 0):
        raise ValueError(f"rate_weight must be a finite number >= 0 (0: distortion only), got {rate_weight}")
    if rate_weight and symbols is None:
        raise ValueError("a rate-aware refinement (rate_weight > 0) needs the symbol model")
    return rate_weight


def _bits_table(symbols: SymbolModel, dim: int) -> np.ndarray:
    """``[D, L]`` code length in bits of every symbol at every position."""
    return (-np.log2(symbols.table(dim).astype(np.float64))).astype(np.float32)


class _Hashable:
    """An array that ``functools.lru_cache`` can key on (by its bytes)."""

    def __init__(self, array):
        self.array = np.ascontiguousarray(array)
        self._key = (self.array.shape, self.array.dtype.str, self.array.tobytes())

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Hashable) and self._key == other._key


def lagrangian(latents, images, render, quantizer: Quantizer, symbols: SymbolModel | None = None,
               rate_weight: float = 0.0) -> np.ndarray:
    """``[n]``: MSE of each latent's quantized render (``latents [n, D]`` against ``images
    [n, *shape, C]``) plus ``rate_weight`` times its code
    length in bits per pixel (``symbols``' ideal code length of its quantized symbols);
    what :func:`refine` minimizes."""
    latents, images = np.asarray(latents, np.float32), np.asarray(images, np.float32)
    if latents.ndim != 2 or len(images) != len(latents):
        raise ValueError(f"lagrangian takes latents [n, D] and images [n, ...], got {latents.shape} and "
                         f"{images.shape}")
    rate_weight = _check_rate_weight(rate_weight, symbols)
    recon = np.asarray(render(quantizer.round_trip(latents)), np.float64)
    mse = np.mean((recon - images) ** 2, axis=tuple(range(1, images.ndim)))
    if not rate_weight:
        return mse
    pixels = int(np.prod(images.shape[1:-1]))
    return mse + rate_weight * symbols.bits(quantizer.quantize(latents)).sum(-1) / pixels


@functools.lru_cache(maxsize=16)
def _refiner(render, quantizer: Quantizer, steps: int, lr: float, rate_weight: float = 0.0, table=None):
    """Jitted ``(latents [n, D], images [n, ...]) -> [n, D]``, cached per render function,
    quantizer and rate term."""
    import jax
    import jax.numpy as jnp
    import optax

    step = with_rank(jnp.asarray(quantizer.latent_step), 2)  # [1, D] against latents [n, D]
    opt = optax.adam(1.0)
    bits = None if table is None else jnp.asarray(table.array)  # [D, L]
    low, width = (with_rank(jnp.asarray(v), 2) for v in (quantizer.low, quantizer.step))
    cols = jnp.arange(quantizer.dim)[None, :]

    def rates(z, pixels, exact):  # [n] bits per pixel: exact (the quantized symbols) or relaxed
        if exact:
            sym = quantizer.quantize(z, jnp)
            return jnp.sum(bits[cols, sym], axis=-1) / pixels
        u = jnp.clip((quantizer.coords(z, jnp) - low) / width - 0.5, 0.0, quantizer.levels - 1.0)
        i0 = jnp.minimum(jnp.floor(u), quantizer.levels - 2.0).astype(jnp.int32)
        frac = u - i0
        return jnp.sum((1.0 - frac) * bits[cols, i0] + frac * bits[cols, i0 + 1], axis=-1) / pixels

    def refine(z0, targets):
        pixels = math.prod(targets.shape[1:-1])

        def distortion(z):  # [n]: each latent's quantized MSE (independent, so grad of the sum is each one's)
            err = (render(quantizer.ste(z)) - targets) ** 2
            return jnp.mean(err, axis=tuple(range(1, err.ndim)))

        def exact(z):
            d = distortion(z)
            return d if bits is None else d + rate_weight * rates(z, pixels, True)

        def total(z):
            d = distortion(z)
            relaxed = d if bits is None else d + rate_weight * rates(z, pixels, False)
            return jnp.sum(relaxed), exact(z) if bits is not None else d

        def body(carry, _):
            z, state, best_z, best = carry
            (_, per), g = jax.value_and_grad(total, has_aux=True)(z)
            better = per < best  # exact Lagrangian at z, before the update
            best_z, best = jnp.where(better[:, None], z, best_z), jnp.where(better, per, best)
            upd, state = opt.update(g, state)  # Adam is elementwise: each row is its own optimizer
            return (z + lr * step * upd, state, best_z, best), None

        init = (z0, opt.init(z0), z0, jnp.full(z0.shape[:1], jnp.inf, jnp.float32))
        (z, _, best_z, best), _ = jax.lax.scan(body, init, None, length=steps)
        return jnp.where((exact(z) < best)[:, None], z, best_z)

    return jax.jit(refine)
