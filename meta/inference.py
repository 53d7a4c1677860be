"""Latents of new signals and their renders, on the host: chunked, padded to one compiled shape.

* :func:`fit_latents` ``(meta, params, signals [n, *shape, C], steps) -> (latents [n, D], psnrs [n])``.
* :func:`render_latents` ``(meta, params, latents [n, D]) -> signals [n, *shape, C]`` on ``[0, 1]``.
* :func:`evaluate` ``(meta, params, signals)``: mean PSNR and SSIM after ``k`` steps, PSNR
  after more steps, and the renders (what a held-out test reports).

With :func:`meta.checkpoint.load` ``(path) -> (meta, params)`` this is what compression
and functasets use.

>>> import jax
>>> from asmr_jax.asmr import ASMR
>>> from meta.functa import MetaModel
>>> meta = MetaModel(ASMR((32, 32), 3, levels=3, widths=32), latent_dim=16)
>>> params = meta.init(jax.random.key(0))
>>> images = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype(np.float32)
>>> latents, psnrs = fit_latents(meta, params, images)
>>> latents.shape, render_latents(meta, params, latents).shape
((4, 16), (4, 32, 32, 3))
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from asmr_jax import metrics
from asmr_jax.imageset import check_images
from meta.functa import MetaModel, inner_loop, render


@functools.partial(jax.jit, static_argnums=(0, 1))
def _fit_chunk(meta: MetaModel, steps: int, params, images):
    phi = inner_loop(meta, params, images, steps)  # [n, D]
    pred = jnp.clip(render(meta, params, phi), 0.0, 1.0)
    return phi, metrics.mse_to_psnr(jnp.mean((pred - images) ** 2, axis=tuple(range(1, images.ndim))))


@functools.partial(jax.jit, static_argnums=0)
def _render_chunk(meta: MetaModel, params, latents):
    return jnp.clip(render(meta, params, latents), 0.0, 1.0)


def _chunks(n: int, chunk: int):
    for start in range(0, n, chunk):
        yield start, min(start + chunk, n)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    """Pads the leading axis to ``size`` (repeating row 0) so every chunk has one compiled shape."""
    if len(x) == size:
        return x
    return np.concatenate([x, np.repeat(x[:1], size - len(x), axis=0)])


def fit_latents(meta: MetaModel, params, images, steps: int | None = None, chunk: int = 64):
    """Latents of new signals by ``steps`` inner steps (default ``meta.inner_steps``).

    Args:
      images: float ``[n, *shape, C]`` on ``[0, 1]`` (or one ``[*shape, C]`` signal).
      steps: inner SGD steps (the meta-learned rates); more than ``k`` usually helps a bit.
      chunk: images per compiled call (memory bound).

    Returns:
      ``(latents [n, D] float32, psnrs [n] float64)``; PSNR in dB of the clipped render.
    """
    images = np.asarray(images, np.float32)
    want = (*meta.shape, meta.channels)
    if images.ndim == len(want):
        images = images[None]
    if images.shape[1:] != want:
        raise ValueError(f"signals have shape {images.shape[1:]} each, the model expects {want} "
                         f"(spatial shape, then channels)")
    check_images(images, "images", spatial_dims=len(meta.shape))
    steps = meta.inner_steps if steps is None else int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    n, chunk = len(images), max(1, min(int(chunk), len(images)))
    latents, psnrs = [], []
    for a, b in _chunks(n, chunk):
        z, p = _fit_chunk(meta, steps, params, _pad(images[a:b], chunk))
        latents.append(np.asarray(z)[: b - a])
        psnrs.append(np.asarray(p)[: b - a])
    return np.concatenate(latents).astype(np.float32), np.concatenate(psnrs).astype(np.float64)


def render_latents(meta: MetaModel, params, latents, chunk: int = 64) -> np.ndarray:
    """Signals ``[n, *shape, C]`` on ``[0, 1]`` (clipped) from latents ``[n, D]`` (or one ``[D]``)."""
    latents = np.asarray(latents, np.float32)
    if latents.ndim == 1:
        latents = latents[None]
    if latents.ndim != 2 or latents.shape[1] != meta.latent_dim:
        raise ValueError(f"latents must have shape [n, {meta.latent_dim}], got {latents.shape}")
    if not np.isfinite(latents).all():
        raise ValueError(f"latents have {int((~np.isfinite(latents)).sum())} NaN/inf values")
    n, chunk = len(latents), max(1, min(int(chunk), len(latents)))
    out = [np.asarray(_render_chunk(meta, params, _pad(latents[a:b], chunk)))[: b - a] for a, b in _chunks(n, chunk)]
    return np.concatenate(out)


def evaluate(meta: MetaModel, params, images, more_steps: int = 10) -> dict:
    """Held-out measures of ``images [n, *shape, C]``: ``psnr`` and ``ssim`` (means over the
    images) of the render after ``meta.inner_steps`` inner steps, ``psnr_more`` after
    ``more_steps`` steps (more inner steps at encode time), and ``recon``, the renders."""
    from asmr_jax import metrics

    latents, psnr = fit_latents(meta, params, images)
    recon = render_latents(meta, params, latents)
    _, psnr_more = fit_latents(meta, params, images, steps=more_steps)
    ssim = [metrics.ssim(r, t) for r, t in zip(recon, np.asarray(images, np.float32))]
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)), "psnr_more": float(np.mean(psnr_more)),
            "recon": recon}
