"""WIRE (Saragadam et al., 2023): an MLP with the complex Gabor wavelet activation.

Hidden layer ``i`` computes ``psi(u) = exp(j * omega0 * u) * exp(-|s0 * u|^2)`` of its
complex pre-activation ``u = z @ W + b``; the first layer takes the real coordinates
(on ``[-1, 1]``), later layers and the output are complex, and the signal is the real
part of the output. The defaults ``omega0 = 20``, ``s0 = 30`` are the ones the paper's
code suggests for image representation, and :meth:`WIRE.build` divides the hidden width
by ``sqrt(2)`` as that code does, so that a WIRE of nominal width ``W`` has about the
parameters of a real MLP of width ``W``. Weights start ``U(-1/sqrt(fan_in),
1/sqrt(fan_in))`` (PyTorch's ``Linear`` bound), real and imaginary parts each.

Complex weights are stored as real pairs (``"w"``/``"wi"``, ``"b"``/``"bi"``) so every
optimizer sees ordinary real parameters; the output layer keeps only its real bias
(the imaginary one never reaches the real part). ``shifts[i]`` (optional, real) adds to
hidden layer ``i``'s pre-activation.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from asmr_jax import coords as coords_lib
from asmr_jax.field import CoordinateNetwork
from asmr_jax.siren import affine, hidden_widths, init_linear, modulate, normalize_fields


@dataclasses.dataclass(frozen=True)
class WIRE(CoordinateNetwork):
    """A WIRE on a ``shape``-sized grid of ``channels`` values.

    ``widths`` are the actual (complex) hidden widths; :meth:`build` applies the paper's
    ``width / sqrt(2)``.

    >>> model = WIRE(shape=(16, 16), channels=3, widths=(32, 32))
    >>> model.render(model.init(jax.random.key(0))).shape
    (16, 16, 3)
    """

    shape: tuple[int, ...]
    channels: int
    widths: tuple[int, ...] = (181, 181, 181)
    omega0: float = 20.0
    s0: float = 30.0

    kind = "wire"

    def __post_init__(self):
        normalize_fields(self, "WIRE")

    @classmethod
    def build(cls, shape, channels: int, width: int = 256, depth: int = 4, **kwargs) -> WIRE:
        """WIRE-L: ``depth - 1`` hidden layers of ``int(width / sqrt(2))`` complex units."""
        return cls(tuple(shape), channels, widths=hidden_widths("WIRE", int(width / math.sqrt(2)), depth), **kwargs)

    def init(self, key) -> dict:
        sizes = (self.ndim,) + self.widths + (self.channels,)
        keys = jax.random.split(key, 2 * len(sizes))
        layers = []
        for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
            bound = 1.0 / math.sqrt(fi)
            layer = init_linear(keys[2 * i], fi, fo, bound)
            if i > 0:  # complex weights: an imaginary part too
                im = init_linear(keys[2 * i + 1], fi, fo, bound, bias=i < len(sizes) - 2)
                layer.update({"wi": im["w"], **({"bi": im["b"]} if "b" in im else {})})
            layers.append(layer)
        return {"layers": layers}

    def forward(self, params, x, shifts=None):
        """``x [..., d]`` on ``[-1, 1]`` -> ``[..., channels]`` (real part of the output)."""
        layers = params["layers"]
        re, im = x, None
        for i, layer in enumerate(layers[:-1]):
            u_re = affine(re, layer)
            u_im = None if im is None else im @ layer["w"]
            if "wi" in layer:  # (re + j im) (w + j wi) + (b + j bi)
                u_re = u_re - im @ layer["wi"]
                u_im = u_im + affine(re, {"w": layer["wi"], "b": layer["bi"]})
            u_re = modulate(u_re, i, shifts)
            if u_im is None:
                u_im = jnp.zeros_like(u_re)
            # psi(u) = exp(j w0 u - |s0 u|^2) = exp(-w0 u_im - s0^2 |u|^2) (cos + j sin)(w0 u_re)
            mag = jnp.exp(-self.omega0 * u_im - self.s0 ** 2 * (u_re ** 2 + u_im ** 2))
            re, im = mag * jnp.cos(self.omega0 * u_re), mag * jnp.sin(self.omega0 * u_re)
        out = layers[-1]
        return affine(re, out) - im @ out["wi"]

    def apply(self, params, coords, shifts=None):
        """Per-point forward: integer ``coords [..., d]`` -> ``[..., channels]``."""
        return self.forward(params, coords_lib.normalize(coords, self.shape), shifts)

    def render(self, params, shifts=None):
        """The whole grid ``[*shape, channels]``."""
        return self.forward(params, coords_lib.unit_grid(self.shape), shifts)

    def num_params(self) -> int:
        sizes = (self.ndim,) + self.widths + (self.channels,)
        first = sizes[0] * sizes[1] + sizes[1]
        hidden = sum(2 * (fi * fo + fo) for fi, fo in zip(sizes[1:-2], sizes[2:-1]))
        return first + hidden + 2 * sizes[-2] * sizes[-1] + sizes[-1]

    def macs(self) -> float:
        """Per-sample MACs, counting a complex multiply-accumulate as 4 real ones (the
        paper's profiler counts real operations)."""
        sizes = (self.ndim,) + self.widths + (self.channels,)
        first = sizes[0] * sizes[1] + sizes[1]
        hidden = sum(4 * fi * fo + 2 * fo for fi, fo in zip(sizes[1:-2], sizes[2:-1]))
        return float(first + hidden + 2 * sizes[-2] * sizes[-1] + sizes[-1])

    def transcendentals(self) -> float:
        """exp, cos and sin per hidden unit."""
        return float(3 * sum(self.widths))

