"""Array helpers that work on NumPy and JAX arrays alike (and import neither JAX nor Flax)."""

from __future__ import annotations

import numpy as np


def with_rank(v, ndim: int):
    """``v`` with leading axes of size 1 up to rank ``ndim``: the explicit form of broadcasting
    a per-feature vector ``[F]`` against ``[..., F]`` (the tests run with
    ``jax_numpy_rank_promotion="raise"``, which refuses the implicit one). NumPy or JAX arrays."""
    v = v if hasattr(v, "reshape") else np.asarray(v)
    return v.reshape((1,) * (ndim - v.ndim) + tuple(v.shape))
