"""Fourier feature network (Tancik et al., 2020): the FFN baseline of the paper's Table 3.

Coordinates ``v`` on ``[0, 1]`` per axis are encoded with a fixed Gaussian matrix
``B [d, m]`` (entries ``~ N(0, sigma^2)``)::

    gamma(v) = [cos(2 pi v @ B), sin(2 pi v @ B)]          # [..., 2m]

and a ReLU MLP maps ``gamma(v)`` to the signal. ``B`` is not a parameter: it is drawn
from ``seed`` (part of the model's static config) with NumPy each time the model is
traced, so it is a compile-time constant that no optimizer can see or change, and a
model rebuilt from :meth:`FFN.config` encodes with exactly the same matrix.

Parameters are ``{"layers": [{"w": [fan_in, fan_out], "b": [fan_out]}, ...]}`` with the
first layer's ``fan_in = 2m``. ``shifts[i]`` (optional) adds to hidden layer ``i``'s
pre-activation, as for SIREN, so the model also fits the meta-learning interface.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from asmr_jax import coords as coords_lib
from asmr_jax.field import CoordinateNetwork
from asmr_jax.siren import affine, init_linear, modulate


def fourier_matrix(ndim: int, n_freqs: int, sigma: float, seed: int) -> np.ndarray:
    """The fixed encoding matrix ``B [ndim, n_freqs]``, entries ``~ N(0, sigma^2)``."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((ndim, n_freqs)) * sigma).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class FFN(CoordinateNetwork):
    """A Gaussian Fourier-feature ReLU MLP on a ``shape``-sized grid of ``channels`` values.

    Args:
      shape: spatial shape, e.g. ``(512, 768)``.
      channels: output values per sample.
      widths: hidden widths of the ReLU MLP after the encoding.
      n_freqs: ``m``, the number of Gaussian frequencies (the encoding has ``2m`` values).
      sigma: standard deviation of the frequencies (Tancik et al.: 10 for natural images;
        in cycles per unit length, so a 1D signal of many samples needs a larger one).
      seed: seed of the fixed matrix ``B`` (see the module docstring).

    With ``2m`` equal to the hidden width the encoding plays the role of SIREN's first
    layer: ``FFN(widths=(256, 256), n_freqs=128)`` has 132,355 parameters on RGB images,
    SIREN-4 (``widths=(256,) * 3``) 133,123 (the paper's Table 3: 132.4K and 133.1K).

    >>> model = FFN(shape=(32, 32), channels=3, widths=(64, 64), n_freqs=32)
    >>> params = model.init(jax.random.key(0))
    >>> model.render(params).shape
    (32, 32, 3)
    """

    shape: tuple[int, ...]
    channels: int
    widths: tuple[int, ...] = (256, 256)
    n_freqs: int = 128
    sigma: float = 10.0
    seed: int = 0

    kind = "ffn"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not self.shape or min(self.shape) < 1:
            raise ValueError(f"FFN shape must have positive sizes, got {self.shape}")
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"FFN widths must be positive, got {self.widths}")
        if self.n_freqs < 1:
            raise ValueError(f"n_freqs must be >= 1, got {self.n_freqs}")
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise ValueError(f"sigma must be a positive finite number, got {self.sigma}")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")

    @classmethod
    def build(cls, shape, channels: int, width: int = 256, depth: int = 4, **kwargs) -> FFN:
        """The paper-style "FFN-L": the encoding (``2m = width`` values) counts as layer 1.

        ``depth - 2`` hidden ReLU layers of ``width`` follow, then the linear output, so
        FFN-L and SIREN-L of one width have nearly equal parameter counts.
        """
        if depth < 3:
            raise ValueError(f"FFN depth must be >= 3 (encoding + hidden + output), got {depth}")
        if width < 2 or width % 2:
            raise ValueError(f"FFN width must be an even number >= 2 (2m encoding values), got {width}")
        return cls(tuple(shape), channels, widths=(width,) * (depth - 2), n_freqs=width // 2, **kwargs)

    @property
    def depth(self) -> int:
        """Encoding + hidden layers + output (the convention of :meth:`build`)."""
        return len(self.widths) + 2

    @property
    def in_features(self) -> int:
        """Inputs of the first weight layer: the ``2 * n_freqs`` Fourier features."""
        return 2 * self.n_freqs

    @property
    def matrix(self) -> np.ndarray:
        """The fixed encoding matrix ``B [d, n_freqs]`` (a NumPy constant, never trained)."""
        return fourier_matrix(self.ndim, self.n_freqs, self.sigma, self.seed)

    def init(self, key) -> dict:
        """PyTorch-default (Kaiming-uniform, ``a = sqrt(5)``) init of the ReLU MLP, as the
        reference implementation uses: ``w, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
        sizes = (2 * self.n_freqs,) + self.widths + (self.channels,)
        keys = jax.random.split(key, len(sizes) - 1)
        return {
            "layers": [init_linear(k, fi, fo, 1.0 / math.sqrt(fi)) for k, fi, fo in zip(keys, sizes[:-1], sizes[1:])]
        }

    def encode(self, v):
        """``v [..., d]`` on ``[0, 1]`` -> Fourier features ``[..., 2 * n_freqs]``."""
        proj = (2.0 * math.pi) * (v @ jnp.asarray(self.matrix))  # [..., m]
        return jnp.concatenate([jnp.cos(proj), jnp.sin(proj)], axis=-1)

    def _mlp(self, params, feats, shifts=None):
        layers = params["layers"]
        h = feats
        for i, layer in enumerate(layers[:-1]):
            h = jax.nn.relu(modulate(affine(h, layer), i, shifts))
        return affine(h, layers[-1])

    def normalize(self, coords):
        """Integer coordinates ``[..., d]`` -> floats on ``[0, 1]`` (``x / (N - 1)``)."""
        return coords_lib.normalize(coords, self.shape, low=0.0)

    def apply(self, params, coords, shifts=None):
        """Per-point forward: integer ``coords [..., d]`` -> ``[..., channels]``."""
        return self._mlp(params, self.encode(self.normalize(coords)), shifts)

    def render(self, params, shifts=None):
        """The whole grid: ``[*shape, channels]``."""
        axes = [np.arange(s, dtype=np.float32) / max(s - 1, 1) for s in self.shape]
        v = jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)  # [*shape, d]
        return self._mlp(params, self.encode(v), shifts)

    def num_params(self) -> int:
        """Trainable parameters (``B`` is not one)."""
        sizes = (2 * self.n_freqs,) + self.widths + (self.channels,)
        return sum(fi * fo + fo for fi, fo in zip(sizes[:-1], sizes[1:]))

    def encoding_macs(self) -> int:
        """MACs of the encoding per sample: ``v @ B`` (``d * m``); cos/sin not counted."""
        return self.ndim * self.n_freqs

