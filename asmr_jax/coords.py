"""Multi-resolution coordinate decomposition.

A signal with axes of sizes ``N_1..N_d`` is described to ASMR by its *bases*: for each
axis ``a`` a list ``B[a] = (B[a][0], ..., B[a][L-1])``, coarse to fine, whose product
is at least ``N_a``. An integer coordinate ``x`` decomposes into mixed-radix digits,
most significant first::

    G[a][l] = prod(B[a][l+1:])           # cell width at level l (on the padded grid)
    x_l     = (x // G[a][l]) % B[a][l]

and the level-``l`` network input is ``x_l / (B[a][l] - 1)`` (``0`` where ``B == 1``).
When ``prod(B[a]) > N_a`` the grid is padded: renders are computed on the padded grid
and cropped, and the per-point path uses the very same digits.

Bases are stored as a tuple (one entry per axis) of tuples (one entry per level) of
Python ints, so they can be static arguments of ``jax.jit``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from asmr_jax.arrays import with_rank

Bases = tuple[tuple[int, ...], ...]


def normalize_bases(
    bases, shape: Sequence[int] | None = None, levels: int | None = None, ndim: int | None = None
) -> Bases:
    """Validates ``bases`` and returns them as a tuple of per-axis tuples.

    Args:
      bases: per-axis sequences of per-level ints, or one flat sequence used for every
        axis (``[4, 4, 4, 8]`` for a 512x512 image).
      shape: the signal's spatial shape; when given, each axis' product must reach it.
      levels: the expected number of levels, if known.
      ndim: number of axes a flat list is repeated for (default: ``len(shape)`` or 1).

    Raises:
      ValueError: naming the axis and the offending values.
    """
    if isinstance(bases, (int, np.integer)):
        raise ValueError(f"bases must be a sequence of ints per level, got the int {bases}")
    bases = list(bases)
    if not bases:
        raise ValueError("bases are empty: need at least one axis with at least 2 levels")
    if all(isinstance(b, (int, np.integer)) for b in bases):
        if ndim is None:
            ndim = len(shape) if shape is not None else 1
        bases = [bases] * ndim
    out = []
    for axis, per_level in enumerate(bases):
        per_level = tuple(int(b) for b in per_level)
        if any(b < 1 for b in per_level):
            raise ValueError(f"bases for axis {axis} must all be >= 1, got {list(per_level)}")
        out.append(per_level)
    nlev = {len(b) for b in out}
    if len(nlev) != 1:
        raise ValueError(f"every axis needs the same number of levels, got {[len(b) for b in out]}")
    (nlev,) = nlev
    if nlev < 2:
        raise ValueError(f"ASMR needs at least 2 levels, got {nlev} ({[list(b) for b in out]})")
    if levels is not None and nlev != levels:
        raise ValueError(f"bases have {nlev} levels, expected {levels}")
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != len(out):
            raise ValueError(f"bases describe {len(out)} axes but the signal has {len(shape)} ({shape})")
        for axis, (per_level, size) in enumerate(zip(out, shape)):
            prod = math.prod(per_level)
            if prod < size:
                raise ValueError(
                    f"bases for axis {axis} {list(per_level)} multiply to {prod}, need >= {size}"
                )
            if prod > size * max(per_level):
                raise ValueError(
                    f"bases for axis {axis} {list(per_level)} make a grid of {prod} for {size} samples, more than "
                    f"one level's factor ({max(per_level)}) beyond the signal; choose bases that multiply to "
                    f"between {size} and {size * max(per_level)}"
                )
    return tuple(out)


def padded_shape(bases: Bases) -> tuple[int, ...]:
    """The grid the bases describe: ``prod(B[a])`` per axis."""
    return tuple(math.prod(b) for b in bases)


def cells(bases: Bases, level: int) -> int:
    """Number of grid cells at ``level`` (``prod_a prod(B[a][:level+1])``)."""
    return math.prod(math.prod(b[: level + 1]) for b in bases)


def digits_count(bases: Bases, level: int) -> int:
    """Number of distinct level-``level`` digit tuples (``prod_a B[a][level]``)."""
    return math.prod(b[level] for b in bases)


@functools.cache
def _balanced_factorizations(n: int, parts: int, smallest: int = 1) -> tuple[int, ...] | None:
    """Non-decreasing factorization of ``n`` into ``parts`` factors with the smallest maximum."""
    if parts == 1:
        return (n,) if n >= smallest else None
    best = None
    f = max(smallest, 1)
    while f ** parts <= n:
        if n % f == 0:
            rest = _balanced_factorizations(n // f, parts - 1, f)
            if rest is not None:
                cand = (f,) + rest
                if best is None or (cand[-1], -cand[0], cand) < (best[-1], -best[0], best):
                    best = cand
        f += 1
    return best


def max_levels(shape: Sequence[int]) -> int:
    """The most levels whose bases can all be >= 2 on the longest axis (padding allowed):
    ``ceil(log2(max(shape)))``."""
    return max(1, max(math.ceil(math.log2(max(int(n), 1)) - 1e-12) for n in shape))


def auto_bases(shape: Sequence[int], levels: int) -> Bases:
    """Picks balanced bases for ``shape`` with ``levels`` levels (paper style).

    Each axis of size ``N`` gets the factorization of the smallest padded size ``m >= N``
    whose factors, sorted coarse to fine (the largest base at the finest level), are

    * balanced: the largest at most ``max(2, 2 * ceil(m ** (1/levels)))``, and among
      factorizations with the same largest factor the one with the largest smallest;
    * informative: every base >= 2 whenever ``N >= 2 ** levels`` (a base of 1 makes its
      level see coordinate 0 only), so a little padding is preferred over a base of 1.

    So 512 with 4 levels gives ``(4, 4, 4, 8)``, 768 ``(4, 4, 6, 8)``, 451 (11 x 41)
    pads to 480 = ``(4, 4, 5, 6)``, 741 (3 x 13 x 19) to 750 = ``(5, 5, 5, 6)`` and 25
    to 32 = ``(2, 2, 2, 4)`` rather than ``(1, 1, 5, 5)``.

    >>> auto_bases((512, 512), 4)
    ((4, 4, 4, 8), (4, 4, 4, 8))
    """
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    out = []
    for axis, n in enumerate(shape):
        n = int(n)
        if n < 1:
            raise ValueError(f"axis {axis} has size {n}; need >= 1")
        m = n
        smallest = 2 if n >= 2**levels else 1
        while True:
            fac = _balanced_factorizations(m, levels, smallest)
            limit = 2 * math.ceil(m ** (1.0 / levels) - 1e-9)
            if fac is not None and fac[-1] <= max(limit, 2):
                out.append(fac)
                break
            m += 1
    return tuple(out)


def level_values(bases: Bases, level: int) -> list[np.ndarray]:
    """Per-axis network inputs of every level-``level`` digit: ``x_l / (B - 1)``."""
    vals = []
    for b in bases:
        base = b[level]
        vals.append(np.arange(base, dtype=np.float32) / max(base - 1, 1))
    return vals


def level_grid(bases: Bases, level: int) -> np.ndarray:
    """Level-``level`` coordinates of every digit tuple: ``[B[0][l], ..., B[d-1][l], d]``."""
    vals = level_values(bases, level)
    return np.stack(np.meshgrid(*vals, indexing="ij"), axis=-1).astype(np.float32)


def decompose(coords, bases: Bases) -> list:
    """Per-point level coordinates.

    Args:
      coords: integer coordinates, ``[..., d]``, each in ``[0, prod(B[a]))``.
      bases: normalized bases.

    Returns:
      A list of ``L`` float arrays ``[..., d]`` with values in ``[0, 1]``.
    """
    coords = jnp.asarray(coords)
    nlev = len(bases[0])
    out = []
    for level in range(nlev):
        width = np.array([math.prod(b[level + 1 :]) for b in bases], dtype=np.int32)  # [d]
        base = np.array([b[level] for b in bases], dtype=np.int32)  # [d]
        digit = (coords // with_rank(width, coords.ndim)) % with_rank(base, coords.ndim)  # [..., d]
        out.append(digit.astype(jnp.float32) / with_rank(np.maximum(base - 1, 1).astype(np.float32), coords.ndim))
    return out


def normalize(coords, shape: Sequence[int], low: float = -1.0):
    """Integer coordinates ``[..., d]`` -> floats on ``[low, 1]`` per axis (``low`` at 0, 1 at
    ``shape - 1``; an axis of size 1 maps to ``low``)."""
    import jax.numpy as jnp

    coords = jnp.asarray(coords).astype(jnp.float32)
    denom = with_rank(np.maximum(np.array(shape, np.float32) - 1, 1), coords.ndim)
    return coords / denom * (1.0 - low) + low


def unit_grid(shape: Sequence[int], low: float = -1.0) -> np.ndarray:
    """Every point of ``shape`` as :func:`normalize` maps it: ``[*shape, d]`` float32."""
    axes = [np.linspace(low, 1.0, s, dtype=np.float32) if s > 1 else np.full(1, low, np.float32) for s in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def grid_coords(shape: Sequence[int]) -> np.ndarray:
    """Integer coordinates of every point of ``shape`` in C order: ``[prod(shape), d]``."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.int32) for s in shape], indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=-1)


def parse_bases(text: str) -> list:
    """Parses ``"4,4,4,8"`` (all axes) or ``"4,4,4,8;4,4,6,8"`` (per axis) from a CLI flag;
    ``x`` separates bases as a comma does (``"4x4x4x8"``), for places where commas separate
    other things."""
    try:
        per_axis = [[int(v) for v in part.split("," if "," in part else "x") if v.strip()]
                    for part in text.split(";")]
    except ValueError:
        raise ValueError(
            f"cannot parse bases {text!r}: expected comma- (or x-) separated ints per axis, axes "
            "separated by ';' (e.g. '4,4,4,8' or '4,4,4,8;4,4,6,8')"
        ) from None
    return per_axis[0] if len(per_axis) == 1 else per_axis
