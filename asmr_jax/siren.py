"""SIREN (Sitzmann et al., 2020): the baseline, and the trunk ASMR reuses.

Parameters are plain pytrees: ``{"layers": [{"w": [fan_in, fan_out], "b": [fan_out]}, ...]}``.
Every hidden layer computes ``sin(w0 * (z @ w + b + shift))``; the last layer is linear.

Renders take a batch of modulations: leading axes of ``shifts[i]`` / ``scales[i]``
(``[*batch, width_i]``) become leading axes of the output (``[*batch, *shape, C]``), and
every layer is one 2-D matmul over batch and grid together (:func:`dense`). That is the
same function as ``jax.vmap`` over the modulations, but its gradients stay 2-D GEMMs: under
``vmap`` the gradient of a shared weight contracts over the batch and the grid axes
together, which XLA on CPU lowers as a transposing copy of the activation (with the
sine's polynomial recomputed inside it) before the GEMM; the batched form has no such
copies (``experiments/meta_step_profile.py`` times both).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from asmr_jax import coords as coords_lib
from asmr_jax import sine
from asmr_jax.field import CoordinateNetwork


def init_linear(key, fan_in: int, fan_out: int, w_bound: float, bias: bool = True) -> dict:
    """``w`` and ``b`` both ``~ U(-w_bound, w_bound)`` (SIREN initializes biases like weights)."""
    kw, kb = jax.random.split(key)
    out = {"w": jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -w_bound, w_bound)}
    if bias:
        out["b"] = jax.random.uniform(kb, (fan_out,), jnp.float32, -w_bound, w_bound)
    return out


def siren_bound(fan_in: int, w0: float, first: bool) -> float:
    """SIREN's weight init bound: ``1/fan_in`` for the first layer, ``sqrt(6/fan_in)/w0`` after."""
    return 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / w0


def init_mlp(key, sizes: Sequence[int], w0: float) -> list[dict]:
    """SIREN-initialised layers for ``sizes = [in, hidden..., out]``."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        init_linear(k, fi, fo, siren_bound(fi, w0, first=(i == 0)))
        for i, (k, fi, fo) in enumerate(zip(keys, sizes[:-1], sizes[1:]))
    ]


def init_banks(key, sizes: Sequence[int], w0: float, copies: Sequence[int]) -> list[dict]:
    """SIREN-initialised layers for ``sizes = [in, hidden..., out]`` with ``copies[i]``
    independent copies of layer ``i`` stacked on a leading axis (``w [copies, fan_in, fan_out]``,
    ``b [copies, fan_out]``): KiloNeRF's cells, LoE's experts."""
    keys = jax.random.split(key, 2 * len(sizes))
    layers = []
    for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = siren_bound(fi, w0, first=i == 0)
        layers.append({"w": jax.random.uniform(keys[2 * i], (copies[i], fi, fo), jnp.float32, -bound, bound),
                       "b": jax.random.uniform(keys[2 * i + 1], (copies[i], fo), jnp.float32, -bound, bound)})
    return layers


def normalize_fields(model, name: str) -> None:
    """The shared ``__post_init__`` of the MLP-style models: ``shape`` and ``widths`` as int
    tuples; widths and channels must be positive (``ValueError`` naming ``name``)."""
    object.__setattr__(model, "shape", tuple(int(s) for s in model.shape))
    object.__setattr__(model, "widths", tuple(int(w) for w in model.widths))
    if not model.widths or min(model.widths) < 1 or model.channels < 1:
        raise ValueError(f"{name} widths and channels must be >= 1, got {model.widths}, {model.channels}")


def hidden_widths(name: str, width: int, depth: int) -> tuple[int, ...]:
    """``depth - 1`` hidden layers of ``width`` for the paper's "NAME-L" (``depth`` weight layers
    counting the output); ``ValueError`` naming ``name`` unless ``depth >= 2``."""
    if int(depth) < 2:
        raise ValueError(f"{name} depth must be >= 2 (one hidden layer + output), got {depth}")
    return (int(width),) * (int(depth) - 1)


def dense(x, w):
    """``x [..., fan_in] @ w [fan_in, fan_out]`` as one 2-D matmul (leading axes flattened).

    The same values as ``x @ w``; the point is the gradient: ``w``'s cotangent is a single
    ``[fan_in, n] @ [n, fan_out]`` contraction rather than one over several axes, which
    XLA on CPU would first transpose into a copy.
    """
    out = x.reshape(-1, x.shape[-1]) @ w
    return out.reshape(x.shape[:-1] + (w.shape[-1],))


def modulate(pre, i: int, shifts=None, scales=None, spatial: int | None = None):
    """FiLM modulation of hidden layer ``i``'s pre-activation: ``scales[i] * pre + shifts[i]``.

    Both are added inside the sine's ``w0`` scaling, as in functa: ``sin(w0 * (s * pre + t))``.
    With ``spatial`` (the number of grid axes of ``pre`` before its width), modulations
    ``[*batch, width]`` broadcast over those axes and their batch axes lead the result:
    ``pre [*spatial, K]`` or ``[*batch, *spatial, K]`` -> ``[*batch, *spatial, K]``.
    Without it they broadcast as plain arrays (per-point modulations of ``apply``).
    """

    def expand(v):
        v = jnp.asarray(v)
        return v if spatial is None else v.reshape(v.shape[:-1] + (1,) * spatial + v.shape[-1:])

    def aligned(x, v):  # the same rank for both: a batch of modulations over one grid, or one over many points
        n = max(x.ndim, v.ndim)
        return coords_lib.with_rank(x, n), coords_lib.with_rank(v, n)

    if scales is not None:
        pre, v = aligned(pre, expand(scales[i]))
        pre = pre * v
    if shifts is not None:
        pre, v = aligned(pre, expand(shifts[i]))
        pre = pre + v
    return pre


def mlp_apply(layers: Sequence[dict], x, w0: float, shifts=None, scales=None, spatial: int | None = None):
    """Sine MLP on ``x [..., in]`` -> ``[..., out]``; hidden layer ``i`` is
    ``sin(w0 * (scales[i] * (x @ w + b) + shifts[i]))`` (either may be ``None``).

    ``spatial``: see :func:`modulate` (a grid of ``spatial`` axes with batched modulations
    gives ``[*batch, *grid, out]``)."""
    for i, layer in enumerate(layers[:-1]):
        x = sine.sin(w0 * modulate(affine(x, layer), i, shifts, scales, spatial))
    return affine(x, layers[-1])


def cell_blocks(shape, grid) -> tuple[int, ...]:
    """``(g0, s0 // g0, g1, s1 // g1, ...)``: a grid axis of ``s`` samples cut into ``g`` cells of
    ``s // g``; ``ValueError`` unless every ``g`` divides its ``s``."""
    shape, grid = tuple(int(s) for s in shape), tuple(int(g) for g in grid)
    if len(grid) != len(shape) or any(g < 1 or s % g for s, g in zip(shape, grid)):
        raise ValueError(f"a latent grid of {grid} cells must divide the signal's shape {shape} axis by axis")
    return tuple(v for s, g in zip(shape, grid) for v in (g, s // g))


def affine(x, layer: dict):
    """``x @ w + b`` for ``x [..., in]`` (:func:`dense`; the bias broadcast explicitly)."""
    h = dense(x, layer["w"])
    return h + coords_lib.with_rank(layer["b"], h.ndim)


def count_params(tree) -> int:
    """Number of scalars in a pytree of arrays."""
    return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(tree)))


@dataclasses.dataclass(frozen=True)
class SIREN(CoordinateNetwork):
    """A SIREN on a ``shape``-sized grid of ``channels`` values.

    ``widths`` are the hidden widths: SIREN-4 (as in the paper's tables) has 3 hidden
    layers plus the linear output, ``widths=(256, 256, 256)``. Integer coordinates are
    mapped to ``[-1, 1]`` per axis.

    >>> model = SIREN(shape=(32, 32), channels=1, widths=(64, 64))
    >>> params = model.init(jax.random.key(0))
    >>> model.render(params).shape
    (32, 32, 1)
    """

    shape: tuple[int, ...]
    channels: int
    widths: tuple[int, ...] = (256, 256, 256)
    w0: float = 30.0

    kind = "siren"
    batched_render = True  # render takes [*batch, width] modulations

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"SIREN widths must be positive, got {self.widths}")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")

    @property
    def depth(self) -> int:
        """Number of weight layers (hidden + output): the paper's "SIREN-L"."""
        return len(self.widths) + 1

    def init(self, key) -> dict:
        return {"layers": init_mlp(key, (self.ndim,) + self.widths + (self.channels,), self.w0)}

    def normalize(self, coords):
        """Integer coordinates ``[..., d]`` -> floats in ``[-1, 1]``."""
        return coords_lib.normalize(coords, self.shape, low=-1.0)

    def apply(self, params, coords, shifts=None, scales=None):
        """Per-point forward: integer ``coords [..., d]`` -> ``[..., channels]``."""
        return mlp_apply(params["layers"], self.normalize(coords), self.w0, shifts, scales)

    def render(self, params, shifts=None, shape=None, scales=None, grid=None):
        """The whole grid ``[*batch, *shape, channels]`` (default: the model's shape).

        A different ``shape`` samples the same continuous field on a finer or coarser grid.
        ``shifts`` / ``scales``: one ``[*batch, width_i]`` per hidden layer (module docstring),
        or, with ``grid``, one ``[*batch, *grid, width_i]`` per hidden layer: per-cell
        modulations, each pixel taking those of the cell it lies in (``grid`` must divide
        ``shape``; the grid is blocked into ``[g0, b0, g1, b1, ...]`` so that they broadcast).
        """
        shape = self.shape if shape is None else tuple(shape)
        axes = [np.linspace(-1.0, 1.0, s, dtype=np.float32) if s > 1 else np.zeros(1, np.float32) for s in shape]
        x = jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)  # [*shape, d]
        if grid is None:
            return mlp_apply(params["layers"], x, self.w0, shifts, scales, spatial=len(shape))
        blocked = cell_blocks(shape, grid)  # (g0, b0, g1, b1, ...)
        x = x.reshape(blocked + (len(shape),))  # [g0, b0, g1, b1, ..., d]
        per_cell = tuple(v for g in grid for v in (int(g), 1))

        def expand(mods):
            return None if mods is None else [v.reshape(v.shape[: v.ndim - len(shape) - 1] + per_cell + v.shape[-1:])
                                              for v in mods]

        y = mlp_apply(params["layers"], x, self.w0, expand(shifts), expand(scales))  # [*batch, g0, b0, ..., C]
        return y.reshape(y.shape[: y.ndim - 2 * len(shape) - 1] + shape + y.shape[-1:])

    def num_params(self) -> int:
        sizes = (self.ndim,) + self.widths + (self.channels,)
        return sum(fi * fo + fo for fi, fo in zip(sizes[:-1], sizes[1:]))

