"""Reconstruction metrics on ``[0, 1]`` data."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def mse_to_psnr(mse):
    """``10 log10(1 / mse)`` for data on ``[0, 1]``; works on arrays and floats."""
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-20))


def psnr(pred, target) -> float:
    """PSNR in dB of ``pred`` against ``target`` (both on ``[0, 1]``; ``pred`` is clipped)."""
    pred = np.clip(np.asarray(pred, np.float64), 0.0, 1.0)
    mse = float(np.mean((pred - np.asarray(target, np.float64)) ** 2))
    return float(10.0 * np.log10(1.0 / max(mse, 1e-20)))


def ssim(pred, target) -> float | None:
    """SSIM of an image ``[H, W, C]`` (scikit-image, data range 1); ``None`` for other signals."""
    from skimage.metrics import structural_similarity

    pred = np.clip(np.asarray(pred, np.float64), 0.0, 1.0)
    target = np.asarray(target, np.float64)
    if pred.ndim != 3 or min(pred.shape[:2]) < 7:
        return None
    return float(structural_similarity(pred, target, data_range=1.0, channel_axis=-1))
