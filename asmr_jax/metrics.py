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


def _curve(rates, psnrs, what: str):
    """Sorted (log10 rate, PSNR) of a rate-distortion curve; ``ValueError`` unless it has
    >= 2 points, positive finite rates and a PSNR that rises with the rate."""
    r, p = np.asarray(rates, np.float64), np.asarray(psnrs, np.float64)
    if r.shape != p.shape or r.ndim != 1 or len(r) < 2:
        raise ValueError(f"{what}: need >= 2 (rate, PSNR) points of one shape, got {r.shape} and {p.shape}")
    if not (np.all(np.isfinite(r)) and np.all(r > 0) and np.all(np.isfinite(p))):
        raise ValueError(f"{what}: rates must be positive and finite, PSNRs finite")
    order = np.argsort(r)
    r, p = np.log10(r[order]), p[order]
    if np.any(np.diff(r) <= 0) or np.any(np.diff(p) <= 0):
        raise ValueError(f"{what}: the PSNR must rise strictly with the rate (pass the curve's front)")
    return r, p


def _mean_over(x, y, lo: float, hi: float) -> float:
    """Mean of the piecewise-cubic (PCHIP) interpolant of ``y(x)`` over ``[lo, hi]``."""
    from scipy.interpolate import PchipInterpolator

    return float(PchipInterpolator(x, y).integrate(lo, hi) / (hi - lo))


def _bd(ref_rates, ref_psnrs, rates, psnrs, over_psnr: bool, rate_range=None) -> float:
    """Mean gap of the curve over the reference, over the range both cover: of PSNR as a
    function of log10 rate, or (``over_psnr``) of log10 rate as a function of PSNR."""
    xa, ya = _curve(ref_rates, ref_psnrs, "reference curve")
    xb, yb = _curve(rates, psnrs, "curve")
    if over_psnr:
        xa, ya, xb, yb = ya, xa, yb, xb
    lo, hi = max(xa[0], xb[0]), min(xa[-1], xb[-1])
    if rate_range is not None:
        a, b = (float(v) for v in rate_range)
        if not 0 < a < b:
            raise ValueError(f"rate_range must be (low, high) with 0 < low < high, got {rate_range}")
        lo, hi = max(lo, np.log10(a)), min(hi, np.log10(b))
    if hi <= lo:
        what = "PSNRs" if over_psnr else "rates (log10)"
        raise ValueError(f"the curves' {what} do not overlap ({xa[0]:.3g}..{xa[-1]:.3g} against "
                         f"{xb[0]:.3g}..{xb[-1]:.3g})")
    return _mean_over(xb, yb, lo, hi) - _mean_over(xa, ya, lo, hi)


def bd_psnr(ref_rates, ref_psnrs, rates, psnrs, rate_range=None) -> float:
    """Bjontegaard delta PSNR (dB) of a curve against a reference: the mean PSNR gap over
    the rates both cover (and, given ``rate_range=(low, high)``, only over that part of
    them), each curve's PSNR a piecewise-cubic (PCHIP) function of log10 rate. Positive:
    the curve is better. ``ValueError`` if the rate ranges do not overlap."""
    return _bd(ref_rates, ref_psnrs, rates, psnrs, over_psnr=False, rate_range=rate_range)


def psnr_at(rates, psnrs, rate: float) -> float | None:
    """PSNR of a rate-distortion curve at ``rate``, from the same piecewise-cubic function of
    log10 rate that :func:`bd_psnr` integrates; ``None`` outside the curve's rates."""
    from scipy.interpolate import PchipInterpolator

    x, y = _curve(rates, psnrs, "curve")
    at = np.log10(float(rate))
    if not x[0] <= at <= x[-1]:
        return None
    return float(PchipInterpolator(x, y)(at))


def bd_rate(ref_rates, ref_psnrs, rates, psnrs) -> float:
    """Bjontegaard delta rate (%) of a curve against a reference: the mean rate ratio over
    the PSNRs both reach, log10 rate a piecewise-cubic (PCHIP) function of PSNR.
    Negative: the curve needs fewer bits. ``ValueError`` if the PSNR ranges do not overlap."""
    return float((10 ** _bd(ref_rates, ref_psnrs, rates, psnrs, over_psnr=True) - 1) * 100)
