"""Uniform quantizers of latent vectors, on their principal components or on the latents
themselves; NumPy only (what encoder and decoder share bit for bit).

A :class:`Quantizer` has ``2**bits`` cells per coordinate on ``[center - clip * scale,
center + clip * scale]``. By default (``mode="pca"``) the coordinates are the latent's
principal components on the training latents (``y = (z - mean) @ basis``), every one with
the same cell width, set by the widest component's std; zero is a cell midpoint, so a
component far narrower than a cell costs almost nothing. ``mode="dim"``/``"global"``
quantize the latent itself with the per-dimension (or global) mean/std. A value is
mapped to the index of its cell and back to the cell's midpoint, so inside the clip
range ``|y - dequantize(quantize(y))| <= step / 2`` per coordinate, with
``step = 2 * clip * scale / 2**bits``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from asmr_jax.arrays import with_rank

MAX_BITS = 16


def check_bits(bits) -> int:
    """Returns ``bits`` as an int; raises ``ValueError`` unless it is in ``1..16``."""
    if isinstance(bits, bool) or int(bits) != bits or not 1 <= int(bits) <= MAX_BITS:
        raise ValueError(f"bits must be an integer in 1..{MAX_BITS}, got {bits!r}")
    return int(bits)



@dataclasses.dataclass(frozen=True, eq=False)
class Quantizer:
    """Uniform midpoint quantizer with per-coordinate offset and scale, optionally after a rotation.

    ``center``, ``scale``: ``[D]`` float32; ``clip``: half-width of the range in units of
    ``scale``. Symbols are ints in ``0 .. 2**bits - 1``. With ``basis`` (``[D, D]``,
    orthonormal columns) and ``mean`` (``[D]``) the quantized coordinates are
    ``y = (z - mean) @ basis`` and the reconstruction is ``y_hat @ basis.T + mean``;
    without them ``y = z``.
    """

    bits: int
    center: np.ndarray
    scale: np.ndarray
    clip: float
    mean: np.ndarray | None = None
    basis: np.ndarray | None = None

    def __post_init__(self):
        check_bits(self.bits)
        object.__setattr__(self, "center", np.asarray(self.center, np.float32).reshape(-1))
        object.__setattr__(self, "scale", np.asarray(self.scale, np.float32).reshape(-1))
        if self.center.shape != self.scale.shape:
            raise ValueError(f"center {self.center.shape} and scale {self.scale.shape} must have one "
                             f"shape [D]")
        if not np.all(np.isfinite(self.scale)) or np.any(self.scale <= 0):
            raise ValueError("quantizer scale must be finite and > 0 in every dimension")
        if not self.clip > 0:
            raise ValueError(f"clip must be > 0 standard deviations, got {self.clip}")
        if (self.mean is None) != (self.basis is None):
            raise ValueError("a rotated quantizer needs both mean [D] and basis [D, D]")
        if self.basis is not None:
            mean = np.asarray(self.mean, np.float32)
            basis = np.asarray(self.basis, np.float32)
            if mean.shape != self.center.shape or basis.shape != self.center.shape * 2:
                raise ValueError(f"mean {mean.shape} and basis {basis.shape} must be [D] and [D, D] with "
                                 f"D = {self.dim}")
            if not np.allclose(basis.T @ basis, np.eye(self.dim), atol=1e-4):
                raise ValueError("basis columns must be orthonormal")
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "basis", basis)

    @property
    def dim(self) -> int:
        return int(self.center.shape[0])

    @property
    def levels(self) -> int:
        return 1 << self.bits

    @property
    def low(self) -> np.ndarray:
        """``[D]`` lower end of the clip range (quantized coordinates)."""
        return (self.center - np.float32(self.clip) * self.scale).astype(np.float32)

    @property
    def step(self) -> np.ndarray:
        """``[D]`` cell width ``2 * clip * scale / 2**bits`` (quantized coordinates)."""
        return (np.float32(2.0 * self.clip / self.levels) * self.scale).astype(np.float32)

    @property
    def latent_step(self) -> np.ndarray:
        """``[D]`` cell width seen along each latent dimension (the rms of the steps it mixes)."""
        if self.basis is None:
            return self.step
        return np.sqrt((self.basis**2) @ self.step.astype(np.float64) ** 2).astype(np.float32)

    def _check(self, latents):
        if latents.shape[-1:] != (self.dim,):
            raise ValueError(f"latents have shape {tuple(latents.shape)}; this quantizer takes [..., "
                             f"{self.dim}]")

    def coords(self, latents, xp=np):
        """``[..., D]`` latents -> the quantized coordinates ``(latents - mean) @ basis`` (or the latents)."""
        self._check(latents)
        if self.basis is None:
            return latents
        if xp is not np:  # the traced path (refinement) need not be bit-exact
            return (latents - with_rank(self.mean, np.ndim(latents))) @ self.basis
        return self._rotation(np.asarray(latents, np.float64) - self.mean)

    def quantize(self, latents, xp=np):
        """``[..., D]`` floats -> ``[..., D]`` int32 symbols (values outside the range clip)."""
        y = self.coords(latents, xp)
        low, step = (with_rank(v, np.ndim(y)) for v in (self.low, self.step))
        q = xp.floor((y - low) / step)
        return xp.clip(q, 0, self.levels - 1).astype(xp.int32)

    def dequantize(self, symbols, xp=np):
        """``[..., D]`` int symbols -> ``[..., D]`` float32 latents (cell midpoints; deterministic)."""
        self._check(symbols)
        symbols = xp.asarray(symbols)
        if xp is np and symbols.size and (symbols.min() < 0 or symbols.max() >= self.levels):
            raise ValueError(f"symbols must lie in 0..{self.levels - 1}, got "
                             f"{symbols.min()}..{symbols.max()}")
        low, step = (with_rank(v, symbols.ndim) for v in (self.low, self.step))
        y = (low + (symbols.astype(xp.float32) + 0.5) * step).astype(xp.float32)
        if self.basis is None:
            return y
        if xp is not np:  # the traced path (refinement) need not be bit-exact
            return (y @ self.basis.T + with_rank(self.mean, symbols.ndim)).astype(xp.float32)
        return (self._inverse(y) + self.mean).astype(np.float32)

    @functools.cached_property
    def _rotation(self) -> ExactProduct:
        return ExactProduct(self.basis)

    @functools.cached_property
    def _inverse(self) -> ExactProduct:
        return ExactProduct(self.basis.T)

    def round_trip(self, latents, xp=np):
        """``dequantize(quantize(latents))`` (``[..., D]``)."""
        return self.dequantize(self.quantize(latents, xp), xp)

    def ste(self, latents):
        """Straight-through quantization for JAX: value of the round trip, gradient of identity."""
        import jax
        import jax.numpy as jnp

        return latents + jax.lax.stop_gradient(self.round_trip(latents, jnp) - latents)


class ExactProduct:
    """``x [..., K] @ m [K, M]`` to about 42 bits, with the same bits alone or in a batch of any
    size, on any machine.

    BLAS rounds differently for different shapes and CPUs; here it never rounds. Each row of
    ``x`` and the whole of ``m`` are split into two integer-valued float64 parts of ``b`` bits
    each, ``b = (52 - ceil(log2 K)) // 2``, so every product of parts is a sum of integers
    below ``2**53``: exact in float64, whatever order BLAS adds it in. The three leading
    products are then scaled by powers of two and added in a fixed order, elementwise. Columns
    of ``x`` that are zero in every row are left out (they add exact zeros): a quantized
    latent's narrow components sit in the zero cell, so decoding reads few rows of ``m``.
    A latent then maps to the same symbols, and symbols to the same latent bits, wherever
    they are coded.
    """

    def __init__(self, m):
        m = np.asarray(m, np.float64)
        if m.ndim != 2:
            raise ValueError(f"ExactProduct takes a matrix [K, M], got shape {m.shape}")
        self.bits = (52 - max(1, math.ceil(math.log2(m.shape[0])))) // 2
        self.shape = m.shape
        self.exponent, self.parts = _split(m, self.bits, axis=None)

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if x.shape[-1:] != self.shape[:1]:
            raise ValueError(f"x has shape {x.shape}; this product takes [..., {self.shape[0]}]")
        lead = x.shape[:-1]
        x = x.reshape(-1, self.shape[0])
        m0, m1 = self.parts
        used = np.flatnonzero(np.any(x != 0, axis=0))  # zero columns add exact zeros: skip them
        if not len(used):  # every column zero (a latent in the zero cell everywhere): exactly zero
            return np.zeros(lead + (self.shape[1],))
        if len(used) < self.shape[0] // 2:
            x, m0, m1 = x[:, used], m0[used], m1[used]
        ex, (x0, x1) = _split(x, self.bits, axis=-1)  # ex: [n, 1] per row (zero columns do not change it)
        b = self.bits
        # x = x0 2^(ex-b) + x1 2^(ex-2b), m = m0 2^(em-b) + m1 2^(em-2b); x1 @ m1 is below 2^-84 of the rest
        top = ex + self.exponent
        out = np.ldexp(x0 @ m0, top - 2 * b) + (np.ldexp(x0 @ m1, top - 3 * b) + np.ldexp(x1 @ m0, top - 3 * b))
        return out.reshape(lead + (self.shape[1],))


def _split(v: np.ndarray, bits: int, axis):
    """``(exponent, (hi, lo))`` with ``v ~= hi 2^(e-bits) + lo 2^(e-2 bits)``, ``|hi|, |lo| <= 2^bits``
    integer-valued float64, ``e`` the binary exponent of ``max |v|`` over ``axis`` (``None``: all)."""
    top = np.max(np.abs(v), axis=axis, keepdims=axis is not None)
    top = np.where(np.isfinite(top), top, 0.0)
    exponent = np.frexp(top)[1].astype(np.int64)  # |v| < 2^exponent
    hi = np.rint(np.ldexp(v, bits - exponent))
    lo = np.rint(np.ldexp(v - np.ldexp(hi, exponent - bits), 2 * bits - exponent))
    return exponent, (hi, lo)


QUANTIZER_MODES = ("pca", "dim", "global")


def principal_axes(latents) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [D], basis [D, D])`` of training latents ``[n, D]``: the covariance's eigenvectors
    as columns, by falling variance, each signed so that its largest entry is positive."""
    latents = np.asarray(latents, np.float64)
    mean = latents.mean(0)
    var, basis = np.linalg.eigh(np.cov(latents - mean, rowvar=False).reshape(latents.shape[1], -1))
    basis = basis[:, np.argsort(-var, kind="stable")]
    sign = np.sign(basis[np.abs(basis).argmax(0), np.arange(basis.shape[1])])
    return mean, basis * np.where(sign == 0, 1.0, sign)


def fit_quantizer(latents, bits: int, clip: float = 3.0, mode: str = "pca") -> Quantizer:
    """Fits a :class:`Quantizer` on training latents ``[n, D]``.

    ``mode``: ``"pca"`` quantizes the principal components with one cell width,
    ``2 * clip * s1 / 2**bits`` for the largest component std ``s1``, zero on a cell
    midpoint; ``"dim"`` the latent dimensions with their own mean/std; ``"global"`` the
    latent dimensions with one mean/std.
    """
    bits = check_bits(bits)
    if not (math.isfinite(float(clip)) and float(clip) > 0):
        raise ValueError(f"clip must be a positive finite number of standard deviations, got {clip}")
    if mode not in QUANTIZER_MODES:
        raise ValueError(f"quantizer mode must be one of {', '.join(QUANTIZER_MODES)}, got {mode!r}")
    latents = np.asarray(latents, np.float64)
    if latents.ndim != 2 or latents.shape[0] < 2:
        raise ValueError(f"training latents must be [n >= 2, D], got shape {latents.shape}")
    if not np.all(np.isfinite(latents)):
        raise ValueError("training latents contain NaN or inf")
    dim = latents.shape[1]
    if mode == "pca":
        mean, basis = principal_axes(latents)
        top = max(float(((latents - mean) @ basis[:, 0]).std()), 1e-12)
        step = 2.0 * clip * top / (1 << bits)
        return Quantizer(bits, np.full(dim, -step / 2), np.full(dim, top), float(clip), mean, basis)
    if mode == "dim":
        center, scale = latents.mean(0), latents.std(0)
    else:
        center, scale = np.full(dim, latents.mean()), np.full(dim, latents.std())
    # constant dimensions (e.g. never updated) still need a positive cell width
    floor = max(float(scale.max()) * 1e-3, 1e-12)
    return Quantizer(bits, center, np.maximum(scale, floor), float(clip))
