"""KiloNeRF-style grid of tiny MLPs (Reiser et al., 2021), for the paper's Tables 2 and 4.

The domain is cut into ``grid`` cells per axis and every cell owns an independent small
MLP; a sample is evaluated only by its cell's MLP. Our reading for 2D/1D signals (the
ASMR paper gives no code for it): each cell MLP is a SIREN (sine activations, SIREN
init) on the sample's coordinate *local to its cell*, mapped to ``[-1, 1]``, so every
tiny network covers the same range it would cover alone. ``depth`` counts weight
layers (KiloNeRF-3: two hidden layers and the output).

Parameters: ``{"layers": [{"w": [G, fan_in, fan_out], "b": [G, fan_out]}, ...]}`` with
``G = grid ** d`` cells in C order. Evaluation is one batched matmul per layer over all
cells (``einsum``): :meth:`KiloNeRF.render` groups the grid's samples by cell when the
shape divides evenly, and :meth:`KiloNeRF.apply` gathers each sample's weights.
``shifts[i]`` (optional) adds to hidden layer ``i``'s pre-activation of every cell.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from asmr_jax import sine
from asmr_jax.arrays import with_rank
from asmr_jax.field import CoordinateNetwork
from asmr_jax.siren import hidden_widths, init_banks, modulate, normalize_fields


@dataclasses.dataclass(frozen=True)
class KiloNeRF(CoordinateNetwork):
    """``grid ** d`` independent SIRENs of ``widths`` on a ``shape``-sized grid.

    >>> import jax
    >>> model = KiloNeRF(shape=(16, 16), channels=1, grid=4, widths=(8, 8))
    >>> model.render(model.init(jax.random.key(0))).shape
    (16, 16, 1)
    """

    shape: tuple[int, ...]
    channels: int
    grid: int = 16
    widths: tuple[int, ...] = (30, 30)
    w0: float = 30.0

    kind = "kilonerf"

    def __post_init__(self):
        normalize_fields(self, "KiloNeRF")
        if not 1 <= self.grid <= min(self.shape):
            raise ValueError(f"KiloNeRF grid must be in 1..{min(self.shape)} cells per axis (the signal is "
                             f"{self.shape}), got {self.grid}")

    @classmethod
    def build(cls, shape, channels: int, width: int = 30, depth: int = 3, grid: int = 16, **kwargs) -> KiloNeRF:
        """KiloNeRF-L: ``depth - 1`` hidden layers of ``width`` in each of ``grid ** d`` cells."""
        return cls(tuple(shape), channels, grid=grid, widths=hidden_widths("KiloNeRF", width, depth), **kwargs)

    @property
    def cells(self) -> int:
        return self.grid ** self.ndim

    def init(self, key) -> dict:
        sizes = (self.ndim,) + self.widths + (self.channels,)
        return {"layers": init_banks(key, sizes, self.w0, [self.cells] * (len(sizes) - 1))}

    def locate(self, coords):
        """Integer ``coords [..., d]`` -> (cell index ``[...]``, local coordinate ``[..., d]`` on [-1, 1])."""
        coords = jnp.asarray(coords)
        shape = np.array(self.shape)
        lo = (np.arange(self.grid)[:, None] * shape[None] // self.grid)  # [grid, d] first sample of a cell
        hi = (np.arange(1, self.grid + 1)[:, None] * shape[None] // self.grid) - 1
        cell = jnp.clip(coords * self.grid // with_rank(shape, coords.ndim), 0, self.grid - 1)  # [..., d]
        start = jnp.take_along_axis(jnp.asarray(lo), cell.reshape(-1, self.ndim), 0).reshape(cell.shape)
        stop = jnp.take_along_axis(jnp.asarray(hi), cell.reshape(-1, self.ndim), 0).reshape(cell.shape)
        local = (coords - start) / jnp.maximum(stop - start, 1) * 2.0 - 1.0
        index = jnp.ravel_multi_index(tuple(jnp.moveaxis(cell, -1, 0)), (self.grid,) * self.ndim, mode="clip")
        return index, local.astype(jnp.float32)

    def _mlp(self, layers, x, shifts, index=None):
        """Cells' MLPs on ``x``: ``[G, P, in]`` (``P`` samples of every cell), or ``[N, in]``
        with ``index [N]`` naming each sample's cell (its weights are gathered)."""
        spec = "gpi,gio->gpo" if index is None else "ni,nio->no"
        for i, layer in enumerate(layers):
            w, b = (layer["w"], layer["b"][:, None]) if index is None else (layer["w"][index], layer["b"][index])
            x = jnp.einsum(spec, x, w) + b
            if i < len(layers) - 1:
                x = sine.sin(self.w0 * modulate(x, i, shifts))
        return x

    def apply(self, params, coords, shifts=None):
        """Per-point forward: integer ``coords [..., d]`` -> ``[..., channels]``."""
        index, local = self.locate(coords)
        lead = local.shape[:-1]
        out = self._mlp(params["layers"], local.reshape(-1, self.ndim), shifts, index.reshape(-1))
        return out.reshape(*lead, self.channels)

    def render(self, params, shifts=None):
        """The whole grid ``[*shape, channels]``: one batched matmul per layer over the cells."""
        if any(s % self.grid for s in self.shape):  # uneven cells: per-sample weights
            from asmr_jax.coords import grid_coords

            return self.apply(params, grid_coords(self.shape), shifts).reshape(*self.shape, self.channels)
        d, g = self.ndim, self.grid
        block = tuple(s // g for s in self.shape)
        local = np.stack(np.meshgrid(*[np.linspace(-1, 1, b, dtype=np.float32) if b > 1 else
                                       np.full(1, -1.0, np.float32) for b in block], indexing="ij"), -1)
        x = jnp.broadcast_to(local.reshape(1, -1, d), (self.cells, math.prod(block), d))
        y = self._mlp(params["layers"], x, shifts)  # [G, P, C]
        # [g..., b..., C] -> interleave cell and in-cell axes -> [*shape, C]
        y = y.reshape((g,) * d + block + (self.channels,))
        order = [ax for pair in zip(range(d), range(d, 2 * d)) for ax in pair] + [2 * d]
        return y.transpose(order).reshape(*self.shape, self.channels)

    def num_params(self) -> int:
        sizes = (self.ndim,) + self.widths + (self.channels,)
        return self.cells * sum(fi * fo + fo for fi, fo in zip(sizes[:-1], sizes[1:]))

    def macs(self) -> float:
        """Per-sample MACs: one cell's MLP (weights and biases)."""
        return float(self.num_params() // self.cells)

    def transcendentals(self) -> float:
        return float(sum(self.widths))

