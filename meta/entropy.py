"""The symbol model and entropy coder of latent files.

A :class:`SymbolModel` is a categorical distribution over the ``2**bits`` symbols of a
quantizer, per dimension or shared by all dimensions, estimated from the quantized
training latents. Counts are smoothed towards the shared histogram and that towards a
discretized standard normal; the smoothing strengths are picked by the code length on a
held-out fifth of the training latents, so every symbol keeps a nonzero probability and
stays codable. Coding is ``constriction``'s range coder with that model; the payload is
the coder's 32-bit words, big-endian, with up to 3 trailing zero bytes dropped (restored
exactly on decode).
"""

from __future__ import annotations

import dataclasses

import numpy as np

MAX_TABLE_ENTRIES = 1 << 21



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
