"""Multiplicative filter networks (Fathony et al., 2021): FourierNet and GaborNet.

No activation functions: the hidden state is multiplied, layer by layer, by a filter of
the input coordinates ``x`` (on ``[-1, 1]`` per axis)::

    z_1 = g_1(x)
    z_{i+1} = (z_i @ W_i + b_i) * g_{i+1}(x)          i = 1 .. n - 1
    y = z_n @ W_out + b_out

FourierNet: ``g_i(x) = sin(x @ omega_i + phi_i)``. GaborNet:
``g_i(x) = exp(-gamma_i / 2 * |x - mu_i|^2) * sin(x @ omega_i + phi_i)``.

Initialisation follows the paper's code: ``omega`` and ``phi`` start as PyTorch's
``Linear`` default (``U(-1/sqrt(d), 1/sqrt(d))``) with ``omega`` then scaled by
``input_scale / sqrt(n)`` (times ``sqrt(gamma)`` for GaborNet), ``phi ~ U(-pi, pi)``;
GaborNet's ``gamma ~ Gamma(alpha / n, beta)`` and ``mu ~ U(-1, 1)``; hidden weights
``U(-sqrt(weight_scale / H), sqrt(weight_scale / H))``, the output layer and all
biases PyTorch's default. Every one of these is trained. The paper's image defaults:
``input_scale = 256``, ``weight_scale = 1``, ``alpha = 6``, ``beta = 1``, Adam 1e-2.

Parameters: ``{"filters": [{"w": [d, H], "b": [H]} (+ "mu": [H, d], "gamma": [H])] * n,
"layers": [{"w": [H, H], "b": [H]}] * (n - 1) + [{"w": [H, C], "b": [C]}]}``.
``shifts[i]`` (optional) adds to ``z_i @ W_i + b_i``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from asmr_jax import coords as coords_lib
from asmr_jax import sine
from asmr_jax.field import CoordinateNetwork
from asmr_jax.siren import affine, hidden_widths, modulate


@dataclasses.dataclass(frozen=True)
class MFN(CoordinateNetwork):
    """A FourierNet (``filter="fourier"``) or GaborNet (``filter="gabor"``).

    ``width`` is the hidden size ``H``, ``layers`` the number of filters ``n`` (the
    paper's depth: ``n`` filters, ``n - 1`` hidden linear layers, one output layer).

    >>> model = MFN(shape=(16, 16), channels=1, width=32, layers=3)
    >>> model.render(model.init(jax.random.key(0))).shape
    (16, 16, 1)
    """

    shape: tuple[int, ...]
    channels: int
    width: int = 256
    layers: int = 3
    filter: str = "fourier"
    input_scale: float = 256.0
    weight_scale: float = 1.0
    alpha: float = 6.0
    beta: float = 1.0

    kind = "mfn"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.filter not in ("fourier", "gabor"):
            raise ValueError(f"MFN filter must be 'fourier' or 'gabor', got {self.filter!r}")
        if self.width < 1 or self.layers < 1 or self.channels < 1:
            raise ValueError(f"MFN width, layers and channels must be >= 1, got {self.width}, {self.layers}, "
                             f"{self.channels}")

    @classmethod
    def build(cls, shape, channels: int, width: int = 256, depth: int = 4, **kwargs) -> MFN:
        """MFN-L: ``depth - 1`` filters (so ``depth`` weight layers counting the output)."""
        return cls(tuple(shape), channels, width=width, layers=len(hidden_widths("MFN", width, depth)), **kwargs)

    @property
    def shift_widths(self) -> tuple[int, ...]:
        return (self.width,) * (self.layers - 1)

    def init(self, key) -> dict:
        d, h, n = self.ndim, self.width, self.layers
        keys = iter(jax.random.split(key, 6 * n + 2))
        filters = []
        for _ in range(n):
            bound = 1.0 / math.sqrt(d)
            w = jax.random.uniform(next(keys), (d, h), jnp.float32, -bound, bound)
            f = {"b": jax.random.uniform(next(keys), (h,), jnp.float32, -math.pi, math.pi)}
            if self.filter == "gabor":
                gamma = jax.random.gamma(next(keys), self.alpha / n, (h,), jnp.float32) / self.beta
                f["mu"] = jax.random.uniform(next(keys), (h, d), jnp.float32, -1.0, 1.0)
                f["gamma"] = gamma
                f["w"] = w * self.input_scale / math.sqrt(n) * jnp.sqrt(gamma)[None]
            else:
                f["w"] = w * self.input_scale / math.sqrt(n)
            filters.append(f)
        layers = []
        for i, fan_out in enumerate((h,) * (n - 1) + (self.channels,)):
            wb = math.sqrt(self.weight_scale / h) if i < n - 1 else 1.0 / math.sqrt(h)  # output: the default
            layers.append({"w": jax.random.uniform(next(keys), (h, fan_out), jnp.float32, -wb, wb),
                           "b": jax.random.uniform(next(keys), (fan_out,), jnp.float32, -1 / math.sqrt(h),
                                                   1 / math.sqrt(h))})
        return {"filters": filters, "layers": layers}

    def _filter(self, f, x):
        g = sine.sin(affine(x, f))
        if self.filter == "gabor":
            dist = jnp.sum((x[..., None, :] - coords_lib.with_rank(f["mu"], x.ndim + 1)) ** 2, axis=-1)  # [..., H]
            g = g * jnp.exp(-0.5 * coords_lib.with_rank(f["gamma"], dist.ndim) * dist)
        return g

    def forward(self, params, x, shifts=None):
        """``x [..., d]`` on ``[-1, 1]`` -> ``[..., channels]``."""
        z = self._filter(params["filters"][0], x)
        for i, (layer, f) in enumerate(zip(params["layers"][:-1], params["filters"][1:])):
            z = modulate(affine(z, layer), i, shifts) * self._filter(f, x)
        return affine(z, params["layers"][-1])

    def apply(self, params, coords, shifts=None):
        """Per-point forward: integer ``coords [..., d]`` -> ``[..., channels]``."""
        return self.forward(params, coords_lib.normalize(coords, self.shape), shifts)

    def render(self, params, shifts=None):
        """The whole grid ``[*shape, channels]``."""
        return self.forward(params, coords_lib.unit_grid(self.shape), shifts)

    def num_params(self) -> int:
        d, h, n = self.ndim, self.width, self.layers
        per_filter = d * h + h + (h * d + h if self.filter == "gabor" else 0)
        return n * per_filter + (n - 1) * (h * h + h) + h * self.channels + self.channels

    def macs(self) -> float:
        """Per-sample MACs in the paper's convention: every weight multiply-accumulate and bias
        add (filters, hidden, output), plus GaborNet's ``|x - mu|^2`` (``d`` per unit)."""
        d, h, n = self.ndim, self.width, self.layers
        linear = n * (d * h + h) + (n - 1) * (h * h + h) + h * self.channels + self.channels
        return float(linear + (n * d * h if self.filter == "gabor" else 0))

    def transcendentals(self) -> float:
        """sin (and GaborNet's exp) evaluations per sample."""
        return float(self.layers * self.width * (2 if self.filter == "gabor" else 1))

