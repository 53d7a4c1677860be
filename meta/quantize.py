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
        return _exact_order_matmul(np.asarray(latents, np.float64) - self.mean, self.basis)

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
        return (_exact_order_matmul(y, self.basis.T) + self.mean).astype(np.float32)

    def round_trip(self, latents, xp=np):
        """``dequantize(quantize(latents))`` (``[..., D]``)."""
        return self.dequantize(self.quantize(latents, xp), xp)

    def ste(self, latents):
        """Straight-through quantization for JAX: value of the round trip, gradient of identity."""
        import jax
        import jax.numpy as jnp

        return latents + jax.lax.stop_gradient(self.round_trip(latents, jnp) - latents)


def _exact_order_matmul(x, m) -> np.ndarray:
    """``x [..., K] @ m [K, M]`` in float64, summed over ``K`` in index order, elementwise.

    The quantizer's rotations go through this rather than BLAS, whose rounding depends on
    the batch's shape: a latent then maps to the same symbols, and symbols to the same
    latent bits, alone or in a batch of any size, on any machine.
    """
    x, m = np.asarray(x, np.float64), np.asarray(m, np.float64)
    out = np.zeros(x.shape[:-1] + m.shape[1:])
    for k in range(m.shape[0]):
        out += x[..., k:k + 1] * m[k]
    return out


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
