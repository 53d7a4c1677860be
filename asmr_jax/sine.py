"""Sine and cosine for sine networks, as one vectorizable polynomial.

XLA on CPU evaluates ``jnp.sin`` one value at a time through the C library, several
nanoseconds per value; a SIREN's forward and backward passes spend most of their time
there. :func:`sincos` reduces the argument modulo ``pi/2`` (Cody-Waite reduction with a
three-part constant) and evaluates the Cephes single-precision minimax polynomials on
``[-pi/4, pi/4]``. It is built from adds, multiplies and selects, which XLA vectorizes on
every backend, so sine and cosine together cost about a tenth of one ``jnp.sin`` on CPU
(``experiments/sine_benchmark.py``). Its error against float64 is below ``2e-7`` for
``|x| < 1e4`` (tested), the same order as float32 rounding, far wider than a SIREN's
pre-activations ``w0 * (x W + b)``. Beyond ``|x| ~ 5e4`` the three-part reduction is no
longer exact and the error grows (measured: about 0.03 at 1e6, 0.9 at 1.7e7); the reduced
argument is clipped to ``[-1, 1]``, so every result stays in ``[-1, 1]`` (tested over
the whole finite float32 range). An exact reduction to
2.6e7 (quotient split in two 12-bit halves plus one correction step) was measured 2.3x
slower per sine, too much for the hot path; ``ASMR_JAX_SINE=xla`` gives the backend's sine
where huge arguments matter.

Both functions carry their own derivative (``d sin = cos``, ``d cos = -sin``), so
gradients of any order use the same polynomial rather than differentiating it.

The implementation is chosen per backend when a function is traced: the polynomial on
CPU, where it was measured faster, and the backend's own ``jnp.sin``/``jnp.cos`` on GPU and
TPU, whose sine units are fast already (``experiments/accelerator_check.py`` measures both
there). Set ``ASMR_JAX_SINE=poly`` or ``ASMR_JAX_SINE=xla`` before importing to force one
(``auto``, the default, is the per-backend choice).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("auto", "poly", "xla")
IMPL = os.environ.get("ASMR_JAX_SINE", "auto")
if IMPL not in IMPLEMENTATIONS:
    raise ValueError(f"ASMR_JAX_SINE must be one of {IMPLEMENTATIONS}, got {IMPL!r}")
POLY_BACKENDS = ("cpu",)  # where the polynomial was measured faster than the backend's sine


def implementation(backend: str | None = None) -> str:
    """``"poly"`` or ``"xla"``: what :func:`sin` uses on ``backend`` (default: JAX's default)."""
    if IMPL != "auto":
        return IMPL
    return "poly" if (backend or jax.default_backend()) in POLY_BACKENDS else "xla"

# Elementwise flops per value as XLA's cost analysis counts them (tested): a lone sine
# evaluates both polynomials and selects one; a (sin, cos) pair shares the reduction.
SIN_FLOPS = 34
SINCOS_FLOPS = 40

# pi/2 split so that q * _PIO2_A and q * _PIO2_B are exact in float32 for |q| < 2**15.
_PIO2_A = np.float32(1.5703125)
_PIO2_B = np.float32(4.837512969970703125e-4)
_PIO2_C = np.float32(7.54978995489188216e-8)
_TWO_OVER_PI = np.float32(2.0 / np.pi)
# Cephes sinf / cosf coefficients on [-pi/4, pi/4].
_SIN = tuple(np.float32(c) for c in (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1))
_COS = tuple(np.float32(c) for c in (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2))


def _sincos(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if implementation() == "xla" or x.dtype != jnp.float32:  # the polynomial is tuned for float32
        return jnp.sin(x), jnp.cos(x)
    q = jnp.round(x * _TWO_OVER_PI)
    r = ((x - q * _PIO2_A) - q * _PIO2_B) - q * _PIO2_C
    # |r| <= pi/4 (plus the rounding of x * 2/pi) for |x| < ~5e4; beyond, bounding r keeps
    # every value a sine's value (finite, within [-1, 1]); inf and NaN still give NaN
    r = jnp.clip(r, -1.0, 1.0)
    r2 = r * r
    s = r + r * r2 * ((_SIN[0] * r2 + _SIN[1]) * r2 + _SIN[2])
    c = 1.0 - 0.5 * r2 + r2 * r2 * ((_COS[0] * r2 + _COS[1]) * r2 + _COS[2])
    quadrant = q.astype(jnp.int32)
    odd = (quadrant & 1) == 1
    sin_x = jnp.where(odd, c, s)
    cos_x = jnp.where(odd, s, c)
    sin_x = jnp.where((quadrant & 2) == 2, -sin_x, sin_x)
    cos_x = jnp.where(((quadrant + 1) & 2) == 2, -cos_x, cos_x)
    return sin_x, cos_x


@jax.custom_jvp
def sincos(x):
    """``(sin x, cos x)`` sharing one argument reduction."""
    return _sincos(x)


@sincos.defjvp
def _sincos_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    s, c = sincos(x)
    return (s, c), (c * dx, -s * dx)


@jax.custom_jvp
def sin(x):
    """``sin x`` (see the module docstring)."""
    return _sincos(x)[0]


@sin.defjvp
def _sin_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    s, c = sincos(x)
    return s, c * dx
