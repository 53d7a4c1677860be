"""ASMR: activation-sharing multi-resolution coordinate networks.

An ``L``-level ASMR is a SIREN trunk with ``L - 1`` hidden layers plus a linear output,
and one modulator per level ``i >= 1``::

    z_0 = x^0
    z_i = sin(w0 * (z_{i-1} @ W_i + b_i + M_i(x^i) + s_i))      i = 1..L-1
    y   = z_{L-1} @ W_L + b_L

with ``M_i(x) = w0 * x @ W_Mi`` (bias-free, ``W_Mi ~ U(-sqrt(1/d), sqrt(1/d))``) or,
optionally, ``w0`` times a 3-layer width-32 SIREN ("nonlinear" modulator).

Two forward paths compute the same function:

* :meth:`ASMR.apply` evaluates any batch of integer coordinates point by point.
* :meth:`ASMR.render` evaluates the whole grid with activation sharing: layer ``i``'s
  matmul runs once per coarse cell (levels ``< i``), its modulator once per level-``i``
  digit, and the two meet in a broadcast add. The activation keeps one array axis per
  (level, axis) pair, so 1D, 2D and 3D signals share one code path, and the signal
  layout is restored once at the end with a generated ``einops`` pattern. The last
  hidden layer is never built at full resolution: with ``A`` its pre-activation on the
  coarse cells and ``M`` the finest modulation table,
  ``sin(w0 (a + m)) = sin(w0 a) cos(w0 m) + cos(w0 a) sin(w0 m)``, so the output is two
  GEMMs ``[cells, K] @ [K, digits * C]`` and the render needs
  ``O(N * C + cells * K)`` memory instead of ``O(N * K)``. The other hidden levels use
  the same identity when it saves sines (:func:`use_angle_sum`): sines and cosines of
  the two small tables, then three flops per value of the level's activation. That form
  is for the forward pass only: its derivative (:func:`hidden_sine`'s JVP) is the direct
  ``cos(w0 (a + m))`` form, whose backward takes far fewer ops than differentiating the
  angle-addition form (timed in experiments/README.md).

All sines go through :mod:`asmr_jax.sine`, a vectorized polynomial.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import einops
import jax
import jax.numpy as jnp
import numpy as np

from asmr_jax import coords as coords_lib
from asmr_jax import sine
from asmr_jax.field import CoordinateNetwork
from asmr_jax.siren import affine, init_linear, init_mlp, mlp_apply, modulate

MODULATORS = ("linear", "nonlinear")
NONLINEAR_WIDTH = 32


@dataclasses.dataclass(frozen=True)
class ASMR(CoordinateNetwork):
    """An ASMR network for a signal of spatial ``shape`` and ``channels`` values.

    Args:
      shape: spatial shape, e.g. ``(512, 512)``; sizes need not factor (padded grid).
      channels: output values per sample (1 gray/audio, 3 RGB).
      bases: per-axis, per-level bases (see :mod:`asmr_jax.coords`); a flat list is used
        for every axis. ``None`` picks :func:`~asmr_jax.coords.auto_bases` with ``levels``.
      widths: hidden widths, one per hidden layer (``L - 1`` of them); an int is repeated.
      w0: SIREN frequency.
      modulator: ``"linear"`` (the paper) or ``"nonlinear"`` (3-layer width-32 SIREN).
      levels: only used when ``bases`` is ``None``.

    >>> model = ASMR(shape=(512, 512), channels=1, bases=(4, 4, 4, 8), widths=256)
    >>> params = model.init(jax.random.key(0))
    >>> model.render(params).shape
    (512, 512, 1)
    """

    shape: tuple[int, ...]
    channels: int
    bases: tuple | None = None
    widths: tuple[int, ...] | int = 256
    w0: float = 30.0
    modulator: str = "linear"
    levels: int | None = None

    kind = "asmr"
    batched_render = True  # render takes [*batch, width] modulations (as SIREN's)

    def __post_init__(self):
        shape = tuple(int(s) for s in self.shape)
        object.__setattr__(self, "shape", shape)
        if self.bases is None:
            if self.levels is None:
                raise ValueError("ASMR needs bases or a number of levels")
            bases = coords_lib.auto_bases(shape, self.levels)
        else:
            bases = coords_lib.normalize_bases(self.bases, shape, self.levels)
        object.__setattr__(self, "bases", bases)
        object.__setattr__(self, "levels", len(bases[0]))
        widths = self.widths
        if isinstance(widths, (int, np.integer)):
            widths = (int(widths),) * (self.levels - 1)
        widths = tuple(int(w) for w in widths)
        if len(widths) != self.levels - 1:
            raise ValueError(
                f"an ASMR with {self.levels} levels has {self.levels - 1} hidden layers, "
                f"got {len(widths)} widths {widths}"
            )
        if min(widths) < 1:
            raise ValueError(f"widths must be positive, got {widths}")
        object.__setattr__(self, "widths", widths)
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if self.modulator not in MODULATORS:
            raise ValueError(f"modulator must be one of {MODULATORS}, got {self.modulator!r}")

    # ------------------------------------------------------------------ structure
    @property
    def depth(self) -> int:
        """Number of trunk weight layers: the paper's "ASMR-L" (equals ``levels``)."""
        return self.levels

    @property
    def padded_shape(self) -> tuple[int, ...]:
        return coords_lib.padded_shape(self.bases)

    def config(self) -> dict:
        out = super().config()
        out["bases"] = [list(b) for b in self.bases]
        return out

    # ------------------------------------------------------------------ params
    def init(self, key) -> dict:
        """Trunk (SIREN init) plus one modulator per level ``>= 1``."""
        k_trunk, k_mod = jax.random.split(key)
        sizes = (self.ndim,) + self.widths + (self.channels,)
        keys = jax.random.split(k_mod, self.levels - 1)
        if self.modulator == "linear":
            bound = math.sqrt(1.0 / self.ndim)
            mods = [init_linear(k, self.ndim, w, bound, bias=False) for k, w in zip(keys, self.widths)]
        else:
            mods = [
                init_mlp(k, (self.ndim, NONLINEAR_WIDTH, NONLINEAR_WIDTH, w), self.w0)
                for k, w in zip(keys, self.widths)
            ]
        return {"layers": init_mlp(k_trunk, sizes, self.w0), "mods": mods}

    def num_params(self) -> int:
        sizes = (self.ndim,) + self.widths + (self.channels,)
        trunk = sum(fi * fo + fo for fi, fo in zip(sizes[:-1], sizes[1:]))
        if self.modulator == "linear":
            mods = sum(self.ndim * w for w in self.widths)
        else:
            h = NONLINEAR_WIDTH
            mods = sum((self.ndim + 1) * h + (h + 1) * h + (h + 1) * w for w in self.widths)
        return trunk + mods

    def modulation(self, params, level: int, x):
        """``M_level(x)`` for level coordinates ``x [..., d]`` -> ``[..., width]``."""
        mod = params["mods"][level - 1]
        if self.modulator == "linear":
            return self.w0 * (x @ mod["w"])
        return self.w0 * mlp_apply(mod, x, self.w0)

    # ------------------------------------------------------------------ forward paths
    def apply(self, params, coords, shifts=None, scales=None):
        """Per-point forward.

        Args:
          params: from :meth:`init`.
          coords: integer coordinates ``[..., d]`` on the (padded) grid.
          shifts: optional per-instance shifts, one ``[width_i]`` vector per hidden layer,
            added to ``z @ W_i + b_i`` (inside ``w0``, next to the level modulation).
          scales: optional per-instance FiLM scales of ``z @ W_i + b_i``, same layout.

        Returns:
          ``[..., channels]``.
        """
        xs = coords_lib.decompose(coords, self.bases)  # L x [..., d]
        layers = params["layers"]
        h = affine(xs[0], layers[0])  # [..., K1]
        for i in range(1, self.levels):
            h = modulate(h, i - 1, shifts, scales)
            z = sine.sin(self.w0 * (h + self.modulation(params, i, xs[i])))
            h = affine(z, layers[i])
        return h

    def render(self, params, shifts=None, bases=None, crop: bool = True, factorized: bool = True, scales=None,
               grid=None):
        """Activation-sharing forward over the whole grid.

        Args:
          params: from :meth:`init`.
          shifts, scales: optional per-instance modulations, one ``[*batch, width_i]`` per
            hidden layer; batch axes lead the output (one render per modulation vector, each
            layer one 2-D matmul over all of them, see :mod:`asmr_jax.siren`).
          bases: render with other bases of the same number of levels (e.g. a larger
            finest base to sample the field more densely); default: the model's.
          crop: crop the padded grid to ``shape`` (only with the model's own bases).
          factorized: use the factorized output layer; ``False`` builds the
            full-resolution last activation instead (``O(N * K)`` memory; a reference).
          grid: per-cell modulations: ``shifts[i]`` / ``scales[i]`` are ``[*batch, *grid, width_i]``,
            one vector per cell of the coarse level whose cell counts are ``grid``
            (:meth:`cell_level`). Each layer then runs its matmul once per cell of the finer of
            that level and its own (``O(cells * width)``), never per pixel.

        Returns:
          ``[*batch, *shape, channels]`` (``[*batch, *padded_shape(bases), channels]`` for
          other bases).
        """
        own = bases is None
        bases = self.bases if own else coords_lib.normalize_bases(bases, None, self.levels, self.ndim)
        if len(bases) != self.ndim:
            raise ValueError(f"bases describe {len(bases)} axes, the model has {self.ndim}")
        level = None
        if grid is not None:
            level = self.cell_level(grid)
            if any(tuple(b[: level + 1]) != tuple(o[: level + 1]) for b, o in zip(bases, self.bases)):
                raise ValueError(f"per-cell modulations live on levels 0..{level} of bases {self.bases}; "
                                 f"render bases {bases} change those levels")
        return self._render(params, shifts, bases, crop=own and crop, factorized=factorized, scales=scales,
                            level=level)

    def cell_grid(self, level: int) -> tuple[int, ...]:
        """Cells per axis at ``level``: ``prod(B[a][:level + 1])``."""
        return tuple(math.prod(b[: level + 1]) for b in self.bases)

    def cell_level(self, grid) -> int:
        """The coarse level (``0 .. L - 2``) whose cells per axis are ``grid``; ``ValueError`` naming the choices."""
        grid = tuple(int(g) for g in grid)
        choices = {self.cell_grid(lv): lv for lv in range(self.levels - 1)}
        if grid not in choices:
            raise ValueError(f"a latent grid of {grid} cells matches no coarse level of bases {self.bases}; "
                             f"levels 0..{self.levels - 2} have " + ", ".join(f"{g}" for g in choices))
        return choices[grid]

    def render_tiled(self, params, shifts=None) -> np.ndarray:
        """The whole grid as a host array, one level-0 cell (tile) at a time.

        For grids whose render does not fit at once (e.g. 8192 x 8192 RGB at width 512):
        peak memory is that of one tile plus the ``[*shape, C]`` result. One compile.
        """
        tile = tuple(p // b[0] for p, b in zip(self.padded_shape, self.bases))
        out = np.empty(self.padded_shape + (self.channels,), np.float32)
        grid0 = coords_lib.level_grid(self.bases, 0)  # [*B[:, 0], d]
        one = jax.jit(lambda p, s, x0: self._render(p, s, self.bases, crop=False, factorized=True, x0=x0))
        for idx in np.ndindex(*grid0.shape[:-1]):
            x0 = grid0[idx].reshape((1,) * self.ndim + (self.ndim,))
            sl = tuple(slice(i * t, (i + 1) * t) for i, t in zip(idx, tile))
            out[sl] = np.asarray(one(params, shifts, x0))
        return out[tuple(slice(0, s) for s in self.shape)]

    def _render(self, params, shifts, bases, crop, factorized, x0=None, scales=None, level=None):
        d, nlev = self.ndim, self.levels
        layers = params["layers"]
        if level is not None:  # per-cell modulations [*batch, *grid, K] -> level-major [*batch, *B[:, :level+1], K]
            pattern, sizes = _cell_pattern(bases, level)
            to_levels = lambda mods: None if mods is None else [einops.rearrange(v, pattern, **sizes) for v in mods]  # noqa: E731
            shifts, scales = to_levels(shifts), to_levels(scales)

        # h carries the batch axes, then one axis per (level, axis) pair it has so far (``have``
        # levels), then the width.
        x0 = jnp.asarray(coords_lib.level_grid(bases, 0) if x0 is None else x0)  # [*B[:, 0], d]
        h = affine(x0, layers[0])  # [*B[:, 0], K1]
        have = 1
        for i in range(1, nlev):
            if level is None:
                h = modulate(h, i - 1, shifts, scales, spatial=have * d)  # [*batch, *B[:, :have], K]
            else:
                if have < level + 1:  # the per-cell modulations bring the levels up to theirs
                    h = h.reshape(h.shape[:-1] + (1,) * (d * (level + 1 - have)) + h.shape[-1:])
                    have = level + 1
                extra = (1,) * (d * (have - level - 1))  # the levels between theirs and h's
                sh, sc = ([v[i - 1].reshape(v[i - 1].shape[:-1] + extra + v[i - 1].shape[-1:])]
                          if v is not None else None for v in (shifts, scales))
                h = modulate(h, 0, sh, sc)  # [*batch, *B[:, :have], K]
            m = self.modulation(params, i, jnp.asarray(coords_lib.level_grid(bases, i)))  # [*B[:, i], K]
            if factorized and i == nlev - 1:
                y = _factorized_output(h, m, layers[-1], self.w0)  # [*batch, *coarse, C, *B[:, -1]]
                break
            if have > i:  # level i's axes are already there: add its modulation in place
                m = m.reshape((1,) * (d * i) + m.shape[:-1] + (1,) * (d * (have - i - 1)) + m.shape[-1:])
                z = hidden_sine(h, coords_lib.with_rank(m, h.ndim), self.w0)  # [*batch, *B[:, :have], K]
            else:
                lead = h.ndim - 1
                h_cells = h.reshape(h.shape[:-1] + (1,) * d + h.shape[-1:])
                z = hidden_sine(h_cells, m.reshape((1,) * lead + m.shape), self.w0)  # [*batch, *B[:, :i+1], K]
                have = i + 1
            h = affine(z, layers[i])
        else:
            y = jnp.moveaxis(h, -1, h.ndim - 1 - d)  # [*batch, *coarse, C, *B[:, -1]]

        y = einops.rearrange(y, _layout_pattern(d, nlev))  # [*batch, *padded, C]
        if crop:
            y = y[(Ellipsis,) + tuple(slice(0, s) for s in self.shape) + (slice(None),)]
        return y


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def hidden_sine(a, m, w0: float):
    """``sin(w0 (a + m))`` of a hidden level: ``a`` the coarse cells' pre-activations
    ``[*cells, 1.., K]``, ``m`` the level's modulation table ``[1.., *digits, K]``
    (broadcasting to ``[*cells, *digits, K]``).

    The value uses angle addition where it saves sines (:func:`use_angle_sum`):
    ``sin(w0 a) cos(w0 m) + cos(w0 a) sin(w0 m)`` from sines of the two small tables. The
    derivative is ``cos(w0 (a + m)) * w0 (da + dm)``, from the direct form: the same
    values, and a backward of a few fused ops instead of the products, broadcasts and
    reductions of the four tables.
    """
    width = a.shape[-1]
    if use_angle_sum(a.size // width, m.size // width):
        # sin(a + m) = sin a cos m + cos a sin m: sines on the two small tables only.
        sa, ca = _sincos(w0 * a, a)
        sm, cm = _sincos(w0 * m, a)
        return sa * cm + ca * sm
    return sine.sin(w0 * (a + m))


@hidden_sine.defjvp
def _hidden_sine_jvp(w0, primals, tangents):
    (a, m), (da, dm) = primals, tangents
    s, c = sine.sincos(w0 * (a + m))
    return s, c * (w0 * (da + dm))


def use_angle_sum(cells: int, digits: int) -> bool:
    """Whether a hidden level evaluates ``sin(w0 (a + m))`` by angle addition.

    The direct form takes ``cells * digits`` sines per unit, the angle-addition form
    ``2 * (cells + digits)`` (plus three flops per output value), so it wins once both
    tables have more than a couple of rows.
    """
    return 2 * (cells + digits) < cells * digits


def _sincos(x, like):
    """``(sin x, cos x)``, each computed once and stored.

    XLA counts sine and cosine as cheap and would otherwise fuse them into the broadcast
    consumer, recomputing them for every element of the big table. Dividing by a
    runtime one (``1 + 0 * like``, which the compiler cannot fold for floats) is an
    exact no-op that XLA treats as expensive, so the two small tables are materialized.
    """
    one = 1 + 0 * like.reshape(-1)[0]
    s, c = sine.sincos(x)
    return s / one, c / one


def _factorized_output(a, m, out_layer, w0):
    """``sin(w0 (a_p + m_q)) @ W + b`` for every coarse cell p and digit tuple q.

    Args:
      a: pre-activation of the last hidden layer on the coarse cells, ``[*coarse, K]``.
      m: finest modulation table, ``[*digits, K]``.
      out_layer: ``{"w": [K, C], "b": [C]}``.

    Returns:
      ``[*coarse, C, *digits]`` (``*coarse`` includes any batch axes), from two GEMMs
      ``[P, K] @ [K, Q*C]`` (``sin(w0 a)`` against ``cos(w0 m) * W``, ``cos(w0 a)`` against
      ``sin(w0 m) * W``): the readout weights are folded into the small digit side, so memory is
      ``O(P*K + Q*C*K + P*Q*C)`` and the ``[P, Q, K]`` activation is never built.
    """
    k = a.shape[-1]
    w, b = out_layer["w"], out_layer["b"]
    c = w.shape[-1]
    wa = w0 * a.reshape(-1, k)  # [P, K]
    wm = w0 * m.reshape(-1, k)  # [Q, K]
    sa, ca = sine.sincos(wa)
    sm, cm = _sincos(wm, a)
    right_c = (cm[:, None, :] * w.T[None]).reshape(-1, k)  # [Q*C, K]
    right_s = (sm[:, None, :] * w.T[None]).reshape(-1, k)
    y = sa @ right_c.T + ca @ right_s.T  # [P, Q*C]
    y = y.reshape(wa.shape[0], wm.shape[0], c).transpose(0, 2, 1) + b[None, :, None]  # [P, C, Q]
    return y.reshape(a.shape[:-1] + (c,) + m.shape[:-1])


def _cell_pattern(bases, level: int) -> tuple[str, dict]:
    """einops pattern (and sizes) from a cell grid ``[..., *C[:, level], K]`` to the render's
    level-major layout ``[..., *B[:, 0], ..., *B[:, level], K]``."""
    name = lambda lv, ax: f"l{lv}a{ax}"  # noqa: E731
    d = len(bases)
    grid = " ".join("(" + " ".join(name(lv, ax) for lv in range(level + 1)) + ")" for ax in range(d))
    out = " ".join(name(lv, ax) for lv in range(level + 1) for ax in range(d))
    sizes = {name(lv, ax): bases[ax][lv] for lv in range(level + 1) for ax in range(d)}
    return f"... {grid} k -> ... {out} k", sizes


def _layout_pattern(d: int, nlev: int) -> str:
    """einops pattern from the level-major render layout to the signal layout."""
    name = lambda level, axis: f"l{level}a{axis}"  # noqa: E731
    coarse = " ".join(name(lv, ax) for lv in range(nlev - 1) for ax in range(d))
    fine = " ".join(name(nlev - 1, ax) for ax in range(d))
    out = " ".join("(" + " ".join(name(lv, ax) for lv in range(nlev)) + ")" for ax in range(d))
    return f"... {coarse} c {fine} -> ... {out} c"
