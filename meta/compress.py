"""COIN++-style compression of functa latents: quantize, entropy-code, write a file.

An image is compressed to one latent vector ``phi`` (``[D]``) of a meta-learned
network (``meta.functa``), then:

1. **Quantizer** (:class:`Quantizer`): uniform, ``2**bits`` cells per coordinate on
   ``[center - clip * scale, center + clip * scale]``. By default (``mode="pca"``) the
   coordinates are the latent's principal components on the training functaset
   (``y = (z - mean) @ basis``), every one with the same cell width, set by the widest
   component's std; zero is a cell midpoint, so a component far narrower than a cell
   costs almost nothing. ``mode="dim"``/``"global"`` quantize the latent itself with the
   per-dimension (or global) mean/std. A value is mapped to the index of its cell, and
   back to the cell's midpoint, so inside the clip range ``|y - dequantize(quantize(y))|
   <= step / 2`` per coordinate, with ``step = 2 * clip * scale / 2**bits``.
2. **Symbol model** (:class:`SymbolModel`): a categorical distribution over the
   ``2**bits`` symbols, per dimension or shared by all dimensions, estimated from the
   quantized training latents. Counts are smoothed towards the shared histogram and
   that towards a discretized standard normal; the smoothing strengths are picked by
   the code length on a held-out fifth of the training latents, so every symbol keeps a
   nonzero probability and stays codable.
3. **Entropy coder**: ``constriction``'s range coder with that model; the payload is
   the coder's 32-bit words, big-endian, with up to 3 trailing zero bytes dropped
   (restored exactly on decode).
4. **File**: :mod:`meta.container` (one signal per file, or many in one container whose
   payload is a single range-coded stream).

The quantizer + symbol model (a :class:`Codec`) is fitted once on a training
functaset (``asmr codec-fit``) and saved as ``.npz``; encoder and decoder load the same
file, so the probability tables are bit-identical on both sides.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import struct
import zipfile
import zlib

import numpy as np

from asmr_jax import io
from asmr_jax.coords import with_rank
from meta import checkpoint, container

MAX_BITS = 16
CODEC_FORMAT = "asmr-functa-codec"
CODEC_VERSION = 2  # 2 added the rotation (mean, basis); version-1 files still load
READABLE_VERSIONS = (1, 2)
# per-dimension tables above this many entries (D * 2**bits) fall back to one shared table
MAX_TABLE_ENTRIES = 1 << 21


def check_bits(bits) -> int:
    """Returns ``bits`` as an int; raises ``ValueError`` unless it is in ``1..16``."""
    if isinstance(bits, bool) or int(bits) != bits or not 1 <= int(bits) <= MAX_BITS:
        raise ValueError(f"bits must be an integer in 1..{MAX_BITS}, got {bits!r}")
    return int(bits)


# ----------------------------------------------------------------------------- quantizer
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


# ----------------------------------------------------------------------------- symbol model
def _entropy_model():
    import constriction

    return constriction.stream.model, constriction.stream.queue


@dataclasses.dataclass(frozen=True, eq=False)
class SymbolModel:
    """Categorical symbol distribution: ``probs`` ``[D, L]`` (per dimension) or ``[1, L]`` (shared).

    Rows are float32 and sum to 1; every entry is > 0.
    """

    probs: np.ndarray

    def __post_init__(self):
        p = np.asarray(self.probs, np.float32)
        if p.ndim != 2 or p.shape[1] < 2:
            raise ValueError(f"probs must be [D or 1, L >= 2], got shape {p.shape}")
        if not np.all(np.isfinite(p)) or np.any(p <= 0):
            raise ValueError("symbol probabilities must be finite and > 0")
        object.__setattr__(self, "probs", p)

    @property
    def levels(self) -> int:
        return int(self.probs.shape[1])

    @property
    def shared(self) -> bool:
        return self.probs.shape[0] == 1

    def table(self, dim: int) -> np.ndarray:
        """``[dim, L]`` probabilities, one row per symbol position."""
        if self.shared:
            return np.broadcast_to(self.probs, (dim, self.levels))
        if self.probs.shape[0] != dim:
            raise ValueError(f"symbol model has {self.probs.shape[0]} per-dimension tables, message has "
                             f"{dim} symbols")
        return self.probs

    def bits(self, symbols) -> np.ndarray:
        """Ideal code length ``-log2 p`` in bits of ``symbols`` ``[..., D]`` (same shape)."""
        symbols = np.asarray(symbols)
        table = self.table(symbols.shape[-1])
        p = np.take_along_axis(np.broadcast_to(table, symbols.shape + (self.levels,)), symbols[..., None], -1)
        return -np.log2(p[..., 0].astype(np.float64))

    def _check_symbols(self, symbols) -> np.ndarray:
        symbols = np.asarray(symbols)
        if symbols.ndim not in (1, 2):
            raise ValueError(f"symbols must be one message [D] or several [n, D], got shape {symbols.shape}")
        if not np.issubdtype(symbols.dtype, np.integer):
            raise ValueError(f"symbols must be integers, got dtype {symbols.dtype}")
        if symbols.size and (symbols.min() < 0 or symbols.max() >= self.levels):
            raise ValueError(f"symbols must lie in 0..{self.levels - 1}, got "
                             f"{symbols.min()}..{symbols.max()}")
        return symbols.astype(np.int32)

    def encode(self, symbols) -> bytes:
        """Range-codes ``symbols`` (``[D]``, or ``[n, D]`` as one stream) into bytes."""
        model, queue = _entropy_model()
        symbols = self._check_symbols(symbols)
        enc = queue.RangeEncoder()
        if self.shared:
            enc.encode(symbols.reshape(-1), model.Categorical(self.probs[0], perfect=False))
        else:
            table = self.table(symbols.shape[-1])
            rows = 1 if symbols.ndim == 1 else symbols.shape[0]
            enc.encode(symbols.reshape(-1), model.Categorical(perfect=False), np.tile(table, (rows, 1)))
        return _words_to_bytes(enc.get_compressed())

    def decode(self, payload: bytes, dim: int, count: int | None = None) -> np.ndarray:
        """Inverse of :meth:`encode`: bytes -> ``[dim]`` (or ``[count, dim]``) int32 symbols."""
        model, queue = _entropy_model()
        table = self.table(dim)  # raises on a dimension mismatch
        rows = 1 if count is None else int(count)
        dec = queue.RangeDecoder(_bytes_to_words(payload))
        if self.shared:
            out = dec.decode(model.Categorical(self.probs[0], perfect=False), rows * dim)
        else:
            out = dec.decode(model.Categorical(perfect=False), np.tile(table, (rows, 1)))
        out = np.asarray(out, np.int32)
        return out if count is None else out.reshape(rows, dim)


def _words_to_bytes(words) -> bytes:
    raw = np.asarray(words, np.uint32).astype(">u4").tobytes()
    # trailing zero bytes of the last word carry no information; keep >= 1 byte of it so
    # the word count is ceil(len / 4)
    keep = len(raw)
    while keep > len(raw) - 3 and keep > 0 and raw[keep - 1] == 0:
        keep -= 1
    return raw[:keep]


def _bytes_to_words(payload: bytes) -> np.ndarray:
    pad = (-len(payload)) % 4
    return np.frombuffer(bytes(payload) + b"\0" * pad, ">u4").astype(np.uint32)


def _normal_cells(levels: int, clip: float) -> np.ndarray:
    """``[L]`` mass of a standard normal in each quantizer cell of ``[-clip, clip]`` (tails folded in)."""
    from math import erf, sqrt

    edges = np.linspace(-clip, clip, levels + 1)
    cdf = np.array([0.5 * (1.0 + erf(e / sqrt(2.0))) for e in edges])
    cdf[0], cdf[-1] = 0.0, 1.0
    return np.maximum(np.diff(cdf), 1e-12)


def _smoothed(counts_dim, counts_all, prior, beta: float, gamma: float) -> np.ndarray:
    """``[D or 1, L]``: per-dim counts + beta * shared, shared = counts + gamma * prior."""
    shared = counts_all + gamma * prior
    shared = shared / shared.sum()
    if beta == np.inf:
        return shared[None]
    p = counts_dim + beta * shared[None]
    return p / p.sum(-1, keepdims=True)


def fit_symbol_model(symbols, levels: int, clip: float = 3.0, per_dim: bool | None = None,
                     seed: int = 0) -> SymbolModel:
    """Estimates a :class:`SymbolModel` from training symbols ``[n, D]`` over ``levels`` values.

    ``per_dim=None`` chooses by held-out code length (and uses a shared table when the
    per-dimension tables would exceed ``MAX_TABLE_ENTRIES``); ``True``/``False`` force it.
    """
    symbols = np.asarray(symbols)
    if symbols.ndim != 2 or symbols.shape[0] < 2:
        raise ValueError(f"training symbols must be [n >= 2, D], got shape {symbols.shape}")
    n, dim = symbols.shape
    if symbols.min() < 0 or symbols.max() >= levels:
        raise ValueError(f"training symbols must lie in 0..{levels - 1}")
    if per_dim and dim * levels > MAX_TABLE_ENTRIES:
        raise ValueError(f"per-dimension tables need {dim} x {levels} entries (> {MAX_TABLE_ENTRIES}); "
                         f"use shared")
    prior = _normal_cells(levels, clip)
    allow_dim = per_dim is not False and dim * levels <= MAX_TABLE_ENTRIES
    betas = [n / 64, n / 16, n / 4, n, 4 * n] if allow_dim else []
    if per_dim is None or not allow_dim:
        betas.append(np.inf)  # inf = the shared table alone
    gammas = [g * n * dim for g in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)]

    def counts(s):
        c = np.zeros((dim, levels))
        np.add.at(c, (np.broadcast_to(np.arange(dim), s.shape), s), 1.0)
        return c

    # pick the smoothing strengths on a held-out fifth, then refit on everything
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, n // 5)
    val, train = symbols[perm[:n_val]], symbols[perm[n_val:]]
    c_dim = counts(train)
    best = None
    for beta in betas:
        for gamma in gammas:
            scale = len(train) / n  # strengths were set for n samples
            p = _smoothed(c_dim, c_dim.sum(0), prior, beta * scale, gamma * scale)
            p = np.broadcast_to(p, (dim, levels))
            cost = -np.log2(p[np.arange(dim), val]).sum()
            if best is None or cost < best[0]:
                best = (cost, beta, gamma)
    _, beta, gamma = best
    c_dim = counts(symbols)
    return SymbolModel(_smoothed(c_dim, c_dim.sum(0), prior, beta, gamma).astype(np.float32))


# ----------------------------------------------------------------------------- codec
@dataclasses.dataclass(frozen=True, eq=False)
class Codec:
    """A quantizer, its symbol model, and the model id of the network it was fitted for."""

    quantizer: Quantizer
    symbols: SymbolModel
    model_id: bytes

    def __post_init__(self):
        if self.symbols.levels != self.quantizer.levels:
            raise ValueError(f"symbol model has {self.symbols.levels} symbols, quantizer "
                             f"{self.quantizer.levels}")
        if not self.symbols.shared and self.symbols.probs.shape[0] != self.quantizer.dim:
            raise ValueError("per-dimension symbol tables do not match the latent dimension")

    @property
    def bits(self) -> int:
        return self.quantizer.bits

    @property
    def dim(self) -> int:
        return self.quantizer.dim

    @property
    def codec_id(self) -> bytes:
        """4-byte sha256 prefix of every table the decoder depends on."""
        h = hashlib.sha256()
        q = self.quantizer
        h.update(struct.pack(">Bd", q.bits, q.clip))
        rotation = () if q.basis is None else (q.mean, q.basis)  # absent: the version-1 id, unchanged
        for arr in (q.center, q.scale, self.symbols.probs, *rotation):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr, "<f4").tobytes())
        return h.digest()[:4]

    def encode_latent(self, latent) -> tuple[bytes, np.ndarray]:
        """``[D]`` latent (or ``[n, D]``, one stream) -> (payload bytes, int32 symbols of that shape)."""
        symbols = self.quantizer.quantize(np.asarray(latent, np.float32))
        return self.symbols.encode(symbols), symbols

    def decode_latent(self, payload: bytes, count: int | None = None) -> np.ndarray:
        """Payload -> ``[D]`` (or ``[count, D]``) float32 dequantized latents."""
        return self.quantizer.dequantize(self.symbols.decode(payload, self.dim, count))

    def save(self, path, overwrite: bool = False) -> str:
        """Writes the codec as ``.npz`` atomically; returns the path."""
        q = self.quantizer
        meta = json.dumps({"format": CODEC_FORMAT, "version": CODEC_VERSION})

        def write(f):
            rotation = {} if q.basis is None else {"mean": q.mean, "basis": q.basis}
            np.savez(f, meta=np.array(meta), bits=np.int64(q.bits), clip=np.float64(q.clip), center=q.center,
                     scale=q.scale, probs=self.symbols.probs, model_id=np.frombuffer(self.model_id, np.uint8),
                     **rotation)

        return io.atomic_write(path, write, overwrite=overwrite)

    @classmethod
    def load(cls, path) -> Codec:
        """Reads a codec written by :meth:`save`; raises ``ValueError`` if it is not one."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"codec file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in ("bits", "clip", "center", "scale", "probs", "model_id")}
                rotation = [z[k] for k in ("mean", "basis") if k in z.files]
        except (OSError, ValueError, KeyError, zlib.error, EOFError, AttributeError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path} is not a readable codec file (truncated or damaged?): "
                             f"{type(e).__name__}: {e}") from None
        if (not isinstance(meta, dict) or meta.get("format") != CODEC_FORMAT
                or meta.get("version") not in READABLE_VERSIONS):
            raise ValueError(f"{path} is not a {CODEC_FORMAT} file of version "
                             f"{' or '.join(map(str, READABLE_VERSIONS))} ({meta})")
        if len(rotation) == 1 or (rotation and meta["version"] < 2):
            raise ValueError(f"{path}: a version-{meta['version']} codec with {len(rotation)} of the 2 rotation "
                             "arrays (mean, basis) is damaged")
        try:
            q = Quantizer(int(arrays["bits"]), arrays["center"], arrays["scale"], float(arrays["clip"]), *rotation)
        except ValueError as e:
            raise ValueError(f"{path}: damaged codec tables: {e}") from None
        return cls(q, SymbolModel(arrays["probs"]), bytes(arrays["model_id"].astype(np.uint8)))


def fit_codec(latents, bits: int, model_id: bytes, clip: float = 3.0, mode: str = "pca",
              per_dim_symbols: bool | None = None) -> Codec:
    """Fits quantizer (:func:`fit_quantizer`'s ``mode``) and symbol model on training latents ``[n, D]``."""
    q = fit_quantizer(latents, bits, clip=clip, mode=mode)
    sym = fit_symbol_model(q.quantize(np.asarray(latents, np.float32)), q.levels, clip=clip,
                           per_dim=per_dim_symbols)
    return Codec(q, sym, bytes(model_id))


# ----------------------------------------------------------------------------- identity
def model_id(params, config=None) -> bytes:
    """8-byte prefix of :func:`asmr_jax.io.params_digest` of a network's config and parameters:
    a different architecture or different weights give a different id."""
    from asmr_jax.io import params_digest

    return bytes.fromhex(params_digest(params, config))[:8]


# ----------------------------------------------------------------------------- encode / decode
@dataclasses.dataclass
class Encoded:
    """Result of :func:`encode`: file bytes plus what was measured on the way.

    Arrays have a leading signal axis ``n`` (1 for a single-signal file).
    """

    data: bytes
    symbols: np.ndarray  # [n, D] int32
    latents: np.ndarray  # [n, D] float32, the dequantized latents the decoder will see
    images: np.ndarray  # [n, *shape, C] reconstructions from ``latents``
    psnr: np.ndarray  # [n] PSNR of ``images`` against the inputs
    psnr_unquantized: np.ndarray  # [n] PSNR before quantization
    bpp: float  # file bits per pixel (header included), over all signals
    payload_bpp: float  # payload bits per pixel


def refine(latents, images, render, quantizer: Quantizer, steps: int, lr: float = 0.1) -> np.ndarray:
    """Quantization-aware refinement (COIN++): Adam on latents through the straight-through quantizer.

    ``latents``: ``[n, D]`` (or one ``[D]``); ``images``: ``[n, *shape, C]`` (or one);
    ``render(latents [n, D]) -> [n, *shape, C]``, differentiable in JAX. The Adam rate is ``lr``
    quantizer steps per dimension (small, so the latent stays near the cells it had).
    Refinement optimizes distortion only, so the rate grows: little at fine steps, much at
    coarse ones, where components that sat in the free middle cell move out of it (with the
    principal-component quantizer, measured +0-18% at 7-10 bits, up to +92% at 4 bits,
    ``experiments/README.md``). Returns float32 latents
    (same shape as ``latents``), each the iterate whose *quantized* reconstruction had the
    lowest MSE among the start and all ``steps`` updates, so refinement never makes the
    result worse.
    """
    latents = np.asarray(latents, np.float32)
    single = latents.ndim == 1
    images = np.asarray(images, np.float32)
    if single:
        latents, images = latents[None], images[None]
    if int(steps) < 1:
        return latents[0] if single else latents
    out = np.asarray(_refiner(render, quantizer, int(steps), float(lr))(latents, images))
    return out[0] if single else out


@functools.lru_cache(maxsize=16)
def _refiner(render, quantizer: Quantizer, steps: int, lr: float):
    """Jitted ``(latents [n, D], images [n, ...]) -> [n, D]``, cached per render function and quantizer."""
    import jax
    import jax.numpy as jnp
    import optax

    step = with_rank(jnp.asarray(quantizer.latent_step), 2)  # [1, D] against latents [n, D]
    opt = optax.adam(1.0)

    def refine(z0, targets):
        def losses(z):  # [n]: each latent's quantized loss (independent, so grad of the sum is each one's)
            err = (render(quantizer.ste(z)) - targets) ** 2
            return jnp.mean(err, axis=tuple(range(1, err.ndim)))

        def total(z):
            per = losses(z)
            return jnp.sum(per), per

        def body(carry, _):
            z, state, best_z, best = carry
            (_, per), g = jax.value_and_grad(total, has_aux=True)(z)
            better = per < best  # quantized loss at z, before the update
            best_z, best = jnp.where(better[:, None], z, best_z), jnp.where(better, per, best)
            upd, state = opt.update(g, state)  # Adam is elementwise: each row is its own optimizer
            return (z + lr * step * upd, state, best_z, best), None

        init = (z0, opt.init(z0), z0, jnp.full(z0.shape[:1], jnp.inf, jnp.float32))
        (z, _, best_z, best), _ = jax.lax.scan(body, init, None, length=steps)
        return jnp.where((losses(z) < best)[:, None], z, best_z)

    return jax.jit(refine)


def check_image(image, shape, channels) -> np.ndarray:
    """Returns ``image`` as float32 ``[*shape, channels]`` on [0, 1]; ``ValueError`` otherwise."""
    image = np.asarray(image)
    want = tuple(shape) + (channels,)
    if image.shape != want:
        raise ValueError(f"image has shape {image.shape}, but the model takes {'x'.join(map(str, want))} "
                         "(resize or crop it first)")
    image = image.astype(np.float32)
    if not np.all(np.isfinite(image)) or image.min() < 0 or image.max() > 1:
        raise ValueError("image values must be finite and on [0, 1]")
    return image


def _check_ids(codec: Codec, model_id_: bytes):
    if bytes(model_id_) != codec.model_id:
        raise ValueError(f"codec was fitted for network {codec.model_id.hex()}, this network is "
                         f"{bytes(model_id_).hex()}; refit it with `asmr codec-fit`")


def psnr_each(pred, target) -> np.ndarray:
    """``[n]`` PSNR in dB of ``pred`` (clipped to [0, 1]) against ``target``, both ``[n, ...]``."""
    from asmr_jax import metrics

    return np.array([metrics.psnr(np.clip(p, 0, 1), t) for p, t in zip(np.asarray(pred), np.asarray(target))])


def encode(images, codec: Codec, model_id_: bytes, fit, render, *, many: bool = False, refine_steps: int = 0,
           refine_lr: float = 0.1, render_jax=None) -> Encoded:
    """Compresses one signal (a single-signal file) or, with ``many``, several into one container.

    ``images``: one ``[*shape, C]`` signal on [0, 1], or ``[n, *shape, C]`` with ``many``;
    ``fit(images [n, ...]) -> [n, D]`` latents; ``render(latents [n, D]) -> [n, *shape, C]``;
    ``render_jax``: a differentiable JAX ``render`` of latents ``[n, D]`` for the
    refinement. ``model_id_`` must be the id the codec was fitted for (the network's
    :func:`model_id`). File formats: :mod:`meta.container`.
    """
    _check_ids(codec, model_id_)
    images = np.asarray(images, np.float32)
    batch = images if many else images[None]
    if not len(batch):
        raise ValueError("nothing to encode: no signals given")
    latents = np.asarray(fit(batch), np.float32)
    if latents.shape != (len(batch), codec.dim):
        raise ValueError(f"the network's latents are {latents.shape[1:]}, the codec expects [{codec.dim}]")
    psnr_float = psnr_each(render(latents), batch)
    if int(refine_steps) < 0:
        raise ValueError(f"refine steps must be >= 0 (0: no refinement), got {refine_steps}")
    if refine_steps:
        if render_jax is None:
            raise ValueError("refinement needs render_jax, a differentiable render of latents [n, D]")
        latents = refine(latents, batch, render_jax, codec.quantizer, refine_steps, refine_lr)
    payload, symbols = codec.encode_latent(latents if many else latents[0])
    mid, cid = container.short_ids(model_id_, codec.codec_id)
    data = container.pack(container.Stream(mid, cid, len(batch) if many else None, payload))
    deq = codec.quantizer.dequantize(symbols.reshape(len(batch), -1))
    recon = np.asarray(render(deq))
    pixels = len(batch) * int(np.prod(batch.shape[1:-1]))
    return Encoded(data, symbols.reshape(len(batch), -1), deq, recon, psnr_each(recon, batch), psnr_float,
                   8 * len(data) / pixels, 8 * len(payload) / pixels)


def check_model(stream: container.Stream, model_id_: bytes, name: str = "input", model: str = "the given model"):
    """Raises ``ValueError`` unless ``stream`` was written for the network ``model_id_``."""
    mid, _ = container.short_ids(model_id_, b"")
    if stream.model_id != mid:
        raise ValueError(f"{name} was encoded with network {stream.model_id.hex()}..., but {model} is "
                         f"{mid.hex()}...; decode it with the checkpoint it was encoded with")


def check_stream(stream: container.Stream, codec: Codec, model_id_: bytes, name: str = "input"):
    """Raises ``ValueError`` unless ``stream`` was written with this network and codec."""
    check_model(stream, model_id_, name)
    _, cid = container.short_ids(model_id_, codec.codec_id)
    if stream.codec_id != cid:
        raise ValueError(f"{name} was encoded with codec {stream.codec_id.hex()}..., the codec found is "
                         f"{cid.hex()}... ({codec.bits} bits)")


def decode(data: bytes, codec: Codec, model_id_: bytes, render, name: str = "input"):
    """Decompresses file bytes -> ``(images, latents, stream)``.

    ``render(latents [n, D]) -> [n, *shape, C]``. For a single-signal file ``images`` is
    ``[*shape, C]`` and ``latents`` ``[D]``; for a container ``[n, *shape, C]`` and
    ``[n, D]``. Raises ``ValueError`` for a truncated or corrupt file, or one written for
    another network or codec.
    """
    stream = container.unpack(data, name)
    check_stream(stream, codec, model_id_, name)
    try:
        latents = codec.decode_latent(stream.payload, stream.count)
    except (ValueError, RuntimeError) as e:  # a payload that is not a stream of this codec
        raise ValueError(f"{name}: the payload does not decode with codec {codec.codec_id.hex()}: {e}") from None
    images = np.asarray(render(latents if stream.count else latents[None]))
    return (images if stream.count else images[0]), latents, stream


# ----------------------------------------------------------------------------- meta-learned networks
class MetaNetwork:
    """A meta-learned checkpoint (``meta.functa``) seen as ``fit``/``render`` functions.

    ``fit(images [n, H, W, C]) -> [n, D]`` runs ``steps`` inner steps (default the
    checkpoint's ``k``); ``render(latents [n, D]) -> [n, H, W, C]`` (numpy, clipped to
    [0, 1]); ``render_jax`` renders latents ``[*batch, D]`` (or one ``[D]``), traceable and
    differentiable, through the network's batched render.
    ``id`` is :func:`model_id` of the shared parameters and the meta config.
    """

    def __init__(self, path, steps: int | None = None):
        from meta import functa

        self.path = os.fspath(path)
        self.meta, self.params = checkpoint.load(self.path)
        self.steps = self.meta.inner_steps if steps is None else int(steps)
        if self.steps < 0:
            raise ValueError(f"--steps must be >= 0, got {self.steps}")
        self.id = model_id(self.params, self.meta.config())
        self._functa = functa

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.meta.shape)

    @property
    def channels(self) -> int:
        return int(self.meta.channels)

    @property
    def dim(self) -> int:
        return int(self.meta.latent_dim)

    def fit(self, images) -> np.ndarray:
        """``[n, H, W, C]`` -> latents ``[n, D]``."""
        return self._functa.fit_latents(self.meta, self.params, images, self.steps)[0]

    def render(self, latents) -> np.ndarray:
        """``[n, D]`` -> ``[n, H, W, C]``."""
        return self._functa.render_latents(self.meta, self.params, latents)

    @functools.cached_property
    def render_jax(self):
        import jax.numpy as jnp

        functa, meta, params = self._functa, self.meta, self.params
        return lambda z: jnp.clip(functa.render(meta, params, z), 0.0, 1.0)


def codec_path(checkpoint, bits: int) -> str:
    """Default codec location: ``CHECKPOINT/codec/bits{bits}.npz``."""
    return os.path.join(os.fspath(checkpoint), "codec", f"bits{check_bits(bits)}.npz")


def find_codec(net: MetaNetwork, stream: container.Stream, name: str = "input") -> Codec:
    """The codec in ``CHECKPOINT/codec/`` whose id ``stream`` names; a clear error if none."""
    check_model(stream, net.id, name, net.path)
    folder = os.path.dirname(codec_path(net.path, 1))
    found = []
    for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if entry.endswith(".npz"):
            codec = Codec.load(os.path.join(folder, entry))
            found.append(f"{entry} ({codec.codec_id[:container.CODEC_ID_BYTES].hex()})")
            if codec.codec_id.startswith(stream.codec_id) and codec.model_id == net.id:
                return codec
    raise FileNotFoundError(f"{name} needs codec {stream.codec_id.hex()}..., not among the codecs in {folder}: "
                            f"{', '.join(found) or 'none'}; pass the codec file with --codec")


def load_codec_for(net: MetaNetwork, bits: int, path=None) -> Codec:
    """Loads the codec for ``net`` at ``bits`` (default :func:`codec_path`); clear errors if missing/stale."""
    path = path or codec_path(net.path, bits)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {bits}-bit codec at {path}; create it with "
                                f"`asmr codec-fit {net.path} --bits {bits} --functaset TRAIN.npz` "
                                f"(or --dataset NAME to fit latents of a training split)")
    codec = Codec.load(path)
    if codec.bits != bits:
        raise ValueError(f"codec {path} is for {codec.bits} bits, {bits} were asked for")
    if codec.model_id != net.id:
        raise ValueError(f"codec {path} was fitted for network {codec.model_id.hex()}, but {net.path} is now "
                         f"{net.id.hex()} (trained further?); refit it with `asmr codec-fit --overwrite`")
    if codec.dim != net.dim:
        raise ValueError(f"codec {path} has latent dim {codec.dim}, the network {net.dim}")
    return codec
