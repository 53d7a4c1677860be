"""Instant-NGP's multiresolution hash encoding with a tiny MLP (Mueller et al., 2022).

``levels`` grids of resolution ``N_l = floor(base_resolution * growth ** l)`` cover the
unit cube; a position ``u`` on ``[0, 1]^d`` is scaled to ``u * N_l`` and the features
(``features`` per level) of the ``2^d`` surrounding vertices are interpolated
(bilinear in 2D, trilinear in 3D). A level's vertices index its table directly when
all ``(N_l + 1)^d`` of them fit in ``2 ** log2_table`` entries (then there are no
collisions and the table is exactly that size), otherwise through the paper's spatial
hash ``(x_1 * 1 XOR x_2 * 2654435761 XOR x_3 * 805459861) mod T`` in uint32
arithmetic. The ``levels * features`` values feed a ReLU MLP (``widths``, then a
linear output). Tables start ``U(-1e-4, 1e-4)`` as in the paper, the MLP at PyTorch's
``Linear`` default bound.

Parameters: ``{"tables": [[T_l, features]] * levels, "layers": [{"w", "b"}, ...]}``.
``modulate`` says where per-instance shifts go (for meta-learning): ``"mlp"`` adds
``shifts[i]`` to hidden layer ``i``'s pre-activation; ``"features"`` adds ``shifts[0]``
(``[levels * features]``) to the interpolated grid features before the MLP.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from asmr_jax import coords as coords_lib
from asmr_jax.field import CoordinateNetwork
from asmr_jax.siren import affine, hidden_widths, init_linear, modulate

PRIMES = (1, 2654435761, 805459861, 3674653429)


@dataclasses.dataclass(frozen=True)
class InstantNGP(CoordinateNetwork):
    """A hash-grid encoding + ReLU MLP on a ``shape``-sized grid of ``channels`` values.

    >>> model = InstantNGP(shape=(16, 16), channels=3, levels=4, log2_table=8, widths=(16,))
    >>> model.render(model.init(jax.random.key(0))).shape
    (16, 16, 3)
    """

    shape: tuple[int, ...]
    channels: int
    levels: int = 16
    features: int = 2
    log2_table: int = 14
    base_resolution: int = 16
    growth: float = 1.5
    widths: tuple[int, ...] = (64, 64)
    modulate: str = "mlp"

    kind = "ngp"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.levels < 1 or self.features < 1 or self.channels < 1 or not self.widths or min(self.widths) < 1:
            raise ValueError("InstantNGP levels, features, channels and widths must be >= 1")
        if not 1 <= self.log2_table <= 30:
            raise ValueError(f"log2_table must be in 1..30, got {self.log2_table}")
        if self.base_resolution < 1 or not self.growth >= 1.0:
            raise ValueError(f"base_resolution must be >= 1 and growth >= 1, got {self.base_resolution}, "
                             f"{self.growth}")
        if self.modulate not in ("mlp", "features"):
            raise ValueError(f"modulate must be 'mlp' or 'features', got {self.modulate!r}")
        if self.ndim > len(PRIMES):
            raise ValueError(f"InstantNGP supports up to {len(PRIMES)} axes, got {self.ndim}")

    @classmethod
    def build(cls, shape, channels: int, width: int = 64, depth: int = 3, **kwargs) -> InstantNGP:
        """The encoding plus a ReLU MLP of ``depth - 1`` hidden layers of ``width``."""
        return cls(tuple(shape), channels, widths=hidden_widths("InstantNGP MLP", width, depth), **kwargs)

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(int(math.floor(self.base_resolution * self.growth ** level)) for level in range(self.levels))

    @property
    def table_sizes(self) -> tuple[int, ...]:
        """Entries of each level's table: the dense vertex count, capped at ``2 ** log2_table``."""
        return tuple(min(2 ** self.log2_table, (n + 1) ** self.ndim) for n in self.resolutions)

    @property
    def encoding_width(self) -> int:
        return self.levels * self.features

    @property
    def shift_widths(self) -> tuple[int, ...]:
        return self.widths if self.modulate == "mlp" else (self.encoding_width,)

    def init(self, key) -> dict:
        kt, km = jax.random.split(key)
        tables = [jax.random.uniform(k, (t, self.features), jnp.float32, -1e-4, 1e-4)
                  for k, t in zip(jax.random.split(kt, self.levels), self.table_sizes)]
        sizes = (self.encoding_width,) + self.widths + (self.channels,)
        layers = [init_linear(k, fi, fo, 1.0 / math.sqrt(fi))
                  for k, fi, fo in zip(jax.random.split(km, len(sizes) - 1), sizes[:-1], sizes[1:])]
        return {"tables": tables, "layers": layers}

    def vertex_index(self, vertex, level: int):
        """Table rows of integer grid vertices ``[..., d]`` at ``level`` (dense or hashed)."""
        n, size = self.resolutions[level], self.table_sizes[level]
        if (n + 1) ** self.ndim <= size:  # every vertex has its own row
            return jnp.ravel_multi_index(tuple(jnp.moveaxis(vertex, -1, 0)), (n + 1,) * self.ndim, mode="clip")
        v = vertex.astype(jnp.uint32)
        h = v[..., 0] * jnp.uint32(PRIMES[0])
        for a in range(1, self.ndim):
            h = h ^ (v[..., a] * jnp.uint32(PRIMES[a]))
        return (h % jnp.uint32(size)).astype(jnp.int32)

    def encode(self, params, u):
        """Positions ``u [..., d]`` on ``[0, 1]`` -> interpolated features ``[..., levels * features]``."""
        corners = np.array(np.meshgrid(*[[0, 1]] * self.ndim, indexing="ij")).reshape(self.ndim, -1).T  # [2^d, d]
        out = []
        for level, (n, table) in enumerate(zip(self.resolutions, params["tables"])):
            p = u * n
            base = jnp.clip(jnp.floor(p), 0, n - 1).astype(jnp.int32)  # cell corner, so u = 1 stays inside
            frac = p - base
            feats = 0.0
            for corner in corners:
                weight = jnp.prod(jnp.where(corner == 1, frac, 1.0 - frac), axis=-1, keepdims=True)
                vertex = base + coords_lib.with_rank(corner, base.ndim)
                feats = feats + weight * table[self.vertex_index(vertex, level)]
            out.append(feats)
        return jnp.concatenate(out, axis=-1)

    def forward(self, params, u, shifts=None):
        """``u [..., d]`` on ``[0, 1]`` -> ``[..., channels]``."""
        h = self.encode(params, u)
        if self.modulate == "features":
            h = modulate(h, 0, shifts)
        layers = params["layers"]
        for i, layer in enumerate(layers[:-1]):
            pre = affine(h, layer)
            h = jax.nn.relu(modulate(pre, i, shifts) if self.modulate == "mlp" else pre)
        return affine(h, layers[-1])

    def apply(self, params, coords, shifts=None):
        """Per-point forward: integer ``coords [..., d]`` -> ``[..., channels]``."""
        return self.forward(params, coords_lib.normalize(coords, self.shape, low=0.0), shifts)

    def render(self, params, shifts=None):
        """The whole grid ``[*shape, channels]``."""
        return self.forward(params, coords_lib.unit_grid(self.shape, low=0.0), shifts)

    def num_params(self) -> int:
        sizes = (self.encoding_width,) + self.widths + (self.channels,)
        return sum(self.table_sizes) * self.features + sum(fi * fo + fo for fi, fo in zip(sizes[:-1], sizes[1:]))

    def macs(self) -> float:
        """Per-sample MACs: the MLP's weights and biases plus the interpolation (``2^d``
        weighted feature reads per level, ``features`` MACs each)."""
        sizes = (self.encoding_width,) + self.widths + (self.channels,)
        mlp = sum(fi * fo + fo for fi, fo in zip(sizes[:-1], sizes[1:]))
        return float(mlp + self.levels * 2 ** self.ndim * self.features)

    def transcendentals(self) -> float:
        return 0.0

