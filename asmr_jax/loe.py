"""Levels of Experts (Hao et al., 2022): an MLP whose weights depend on the sample's position.

Weight layer ``i`` holds ``tiles[i] ** d`` weight matrices (experts) and each sample
uses the one its position selects. The paper has no public code; the ASMR paper states
its rule: the product of the layers' tile sizes equals the signal size, and the
smallest tile size is 2. Our reading: a coordinate ``x`` of an axis of size ``N`` is
written in the mixed radix ``tiles`` (``tiles[0]`` most significant), ``x / N =
sum_i digit_i / (tiles[0] * ... * tiles[i])``, and layer ``i`` uses the expert of the
sample's ``digit_i`` on every axis (C order). So the first layer splits the domain into
``tiles[0]`` blocks per axis with one expert each, and every later layer repeats its
experts periodically inside the previous layer's blocks: the same multi-resolution
decomposition ASMR's coordinates use, applied to weights instead of activations.
Activations are sines with SIREN's init (per expert) of the coordinates on ``[-1, 1]``.

Parameters: ``{"layers": [{"w": [E_i, fan_in, fan_out], "b": [E_i, fan_out]}, ...]}``
with ``E_i = tiles[i] ** d``. :meth:`LoE.render` evaluates one batched matmul per layer
(only the selected expert per sample) when ``prod(tiles)`` equals every axis size;
otherwise, and in :meth:`LoE.apply`, every expert of a layer is evaluated and the
selected one kept (``E_i`` times the MACs; :meth:`LoE.macs` counts the one expert, as
the paper does). ``shifts[i]`` (optional) adds to hidden layer ``i``'s pre-activation.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from asmr_jax import coords as coords_lib
from asmr_jax import sine
from asmr_jax.field import CoordinateNetwork
from asmr_jax.siren import hidden_widths, init_banks, modulate, normalize_fields


@dataclasses.dataclass(frozen=True)
class LoE(CoordinateNetwork):
    """A levels-of-experts sine MLP: ``widths`` hidden units, ``tiles[i]`` experts per axis at layer ``i``.

    ``tiles`` has one entry per weight layer (``len(widths) + 1``); ``None`` picks
    :func:`asmr_jax.coords.auto_bases` of the largest axis.

    >>> import jax
    >>> model = LoE(shape=(16, 16), channels=1, widths=(16, 16), tiles=(2, 2, 4))
    >>> model.render(model.init(jax.random.key(0))).shape
    (16, 16, 1)
    """

    shape: tuple[int, ...]
    channels: int
    widths: tuple[int, ...] = (31, 31, 31)
    tiles: tuple[int, ...] | None = None
    w0: float = 30.0

    kind = "loe"

    def __post_init__(self):
        normalize_fields(self, "LoE")
        tiles = self.tiles
        if tiles is None:
            tiles = coords_lib.auto_bases((max(self.shape),), len(self.widths) + 1)[0]
        object.__setattr__(self, "tiles", tuple(int(t) for t in tiles))
        if len(self.tiles) != len(self.widths) + 1 or min(self.tiles) < 1:
            raise ValueError(f"LoE tiles need one size >= 1 per weight layer ({len(self.widths) + 1}), got "
                             f"{self.tiles}")

    @classmethod
    def build(cls, shape, channels: int, width: int = 31, depth: int = 4, **kwargs) -> LoE:
        """LoE-L: ``depth - 1`` hidden layers of ``width``, ``depth`` tiled weight layers."""
        return cls(tuple(shape), channels, widths=hidden_widths("LoE", width, depth), **kwargs)

    def experts(self, layer: int) -> int:
        return self.tiles[layer] ** self.ndim

    def init(self, key) -> dict:
        sizes = (self.ndim,) + self.widths + (self.channels,)
        return {"layers": init_banks(key, sizes, self.w0, [self.experts(i) for i in range(len(sizes) - 1)])}

    def expert_index(self, coords, layer: int):
        """Expert of layer ``layer`` for integer ``coords [..., d]``: ``[...]`` ints."""
        u = jnp.asarray(coords).astype(jnp.float32)
        u = u / coords_lib.with_rank(np.array(self.shape, np.float32), u.ndim)  # [0, 1)
        scale = math.prod(self.tiles[:layer + 1])
        digit = jnp.floor(u * scale + 1e-4).astype(jnp.int32) % self.tiles[layer]
        return jnp.ravel_multi_index(tuple(jnp.moveaxis(digit, -1, 0)), (self.tiles[layer],) * self.ndim,
                                     mode="clip")

    def _layer_act(self, i, h, shifts):
        if i < len(self.widths):
            h = sine.sin(self.w0 * modulate(h, i, shifts))
        return h

    def apply(self, params, coords, shifts=None):
        """Per-point forward: integer ``coords [..., d]`` -> ``[..., channels]``."""
        h = coords_lib.normalize(coords, self.shape)
        for i, layer in enumerate(params["layers"]):
            every = jnp.einsum("...i,eio->...eo", h, layer["w"])  # [..., E, out]
            every = every + coords_lib.with_rank(layer["b"], every.ndim)
            idx = self.expert_index(coords, i)[..., None, None]
            h = self._layer_act(i, jnp.take_along_axis(every, idx, axis=-2)[..., 0, :], shifts)
        return h

    def render(self, params, shifts=None):
        """The whole grid ``[*shape, channels]``."""
        if any(math.prod(self.tiles) != s for s in self.shape):
            return self.apply(params, coords_lib.grid_coords(self.shape), shifts).reshape(*self.shape,
                                                                                       self.channels)
        # every axis as its digits: [t0, t1, ..] per axis; layer i batches over the digit-i axes
        d, nl = self.ndim, len(self.tiles)
        h = jnp.asarray(coords_lib.unit_grid(self.shape)).reshape(tuple(self.tiles) * d + (d,))
        letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        axes = letters[:nl * d]  # axis a's digit j is axes[a * nl + j]
        for i, layer in enumerate(params["layers"]):
            sel = "".join(axes[a * nl + i] for a in range(d))
            w = layer["w"].reshape((self.tiles[i],) * d + layer["w"].shape[1:])
            # the bias of each sample's expert, broadcast over the other digits
            b = layer["b"].reshape(tuple(self.tiles[i] if p % nl == i else 1 for p in range(nl * d)) + (-1,))
            h = self._layer_act(i, jnp.einsum(f"{axes}Y,{sel}YZ->{axes}Z", h, w) + b, shifts)
        return h.reshape(*self.shape, self.channels)

    def num_params(self) -> int:
        sizes = (self.ndim,) + self.widths + (self.channels,)
        return sum(self.experts(i) * (fi * fo + fo) for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])))

    def macs(self) -> float:
        """Per-sample MACs of the selected experts (one per layer), weights and biases."""
        sizes = (self.ndim,) + self.widths + (self.channels,)
        return float(sum(fi * fo + fo for fi, fo in zip(sizes[:-1], sizes[1:])))

    def transcendentals(self) -> float:
        return float(sum(self.widths))

