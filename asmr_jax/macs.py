"""Analytic MAC and parameter counts, and XLA's own count of a compiled render.

Two conventions, both per sample of the signal (``N = prod(shape)``):

* ``paper_macs``: the paper's (official profiler's) count: weight multiply-accumulates
  plus bias adds, plus one modulation add per hidden unit of every cell a hidden matmul
  runs on; the ``N x K`` full-resolution sines are not counted. It reproduces the
  paper: SIREN-4 (width 256) 132,609; ASMR-4 ``[4,4,4,8]`` on 512x512 1353.75; ASMR-3
  ``[8,8,8]`` 1289.5.
* ``render_macs`` and ``transcendentals``: what :meth:`ASMR.render` actually computes
  with the factorized output layer: the readout ``K * C`` becomes ``2 * K * C`` per
  sample, and the sines are evaluated on coarse cells and modulation tables only
  (ASMR-4 on Cameraman: ~1.6K MAC and ~9 sin/cos per sample, against SIREN-4's
  132K MAC and 768 sines). A hidden level whose sine tables are small evaluates
  ``sin(a + m)`` by angle addition (:func:`asmr_jax.asmr.use_angle_sum`), so it takes
  sines and cosines of the two tables rather than of every cell.
* ``sine_flops``: the adds, multiplies and selects of the polynomial sine
  (:mod:`asmr_jax.sine`) per sample, as XLA's cost analysis counts them; with it the
  analytic count can be checked against the compiled render (:func:`xla_render_cost`).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time

import jax

from asmr_jax import coords as coords_lib
from asmr_jax import sine
from asmr_jax.asmr import NONLINEAR_WIDTH, use_angle_sum


@dataclasses.dataclass(frozen=True)
class Cost:
    """Per-sample inference cost of a model."""

    params: int
    paper_macs: float  # the paper's convention
    render_macs: float  # what our render computes
    transcendentals: float  # sin/cos evaluations per sample in our render
    sine_flops: float = 0.0  # elementwise flops of those sines (polynomial, as XLA counts)


def _mlp_cost(sizes) -> int:
    return sum(fi * fo + fo for fi, fo in zip(sizes[:-1], sizes[1:]))


def count(model) -> Cost:
    """Analytic per-sample cost of any registered model (see module docstring)."""
    n = math.prod(model.shape)
    if model.kind == "asmr":
        return _asmr_cost(model, n)
    if hasattr(model, "macs"):  # the other baselines count themselves (see their macs() docstrings)
        m, t = model.macs(), model.transcendentals()
        return Cost(model.num_params(), m, m, t, t * sine.SIN_FLOPS)
    sizes = (getattr(model, "in_features", model.ndim),) + tuple(model.widths) + (model.channels,)
    macs = _mlp_cost(sizes)
    if hasattr(model, "encoding_macs"):  # e.g. Fourier-feature baselines
        macs += model.encoding_macs()
    sines = float(sum(model.widths))
    return Cost(model.num_params(), float(macs), float(macs), sines, sines * sine.SIN_FLOPS)


def _asmr_cost(model, n: int) -> Cost:
    bases, d, nlev = model.bases, model.ndim, model.levels
    widths, c = model.widths, model.channels
    fan_in = (d,) + widths
    if model.modulator == "linear":
        mod_cost = [d * w for w in widths]
    else:
        mod_cost = [_mlp_cost((d, NONLINEAR_WIDTH, NONLINEAR_WIDTH, w)) for w in widths]
    total = float(n)
    padded = math.prod(coords_lib.padded_shape(bases))
    hidden, sines, pairs = 0.0, 0.0, 0.0  # sin-only values; (sin, cos) pairs
    for i in range(1, nlev):  # hidden layer i: matmul on level-(i-1) cells, modulator on level-i digits
        cells, digits = coords_lib.cells(bases, i - 1), coords_lib.digits_count(bases, i)
        k = widths[i - 1]
        hidden += cells * (fan_in[i - 1] * k + k + k) + digits * mod_cost[i - 1]
        if i == nlev - 1 or use_angle_sum(cells, digits):  # factorized output or angle addition
            pairs += k * (cells + digits)
        else:
            sines += k * cells * digits  # sines on the level-i cells
    k_last = widths[-1]
    paper = hidden + padded * (k_last * c + c)
    render = hidden + padded * (2 * k_last * c + c)
    trans = sines + 2 * pairs
    flops = sines * sine.SIN_FLOPS + pairs * sine.SINCOS_FLOPS
    return Cost(model.num_params(), paper / total, render / total, trans / total, flops / total)


def xla_cost(fn, *args) -> dict:
    """XLA's cost analysis of ``jax.jit(fn)(*args)``: ``{"flops", "transcendentals", ...}``."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax returns one dict per device
        analysis = analysis[0]
    return {k: float(v) for k, v in analysis.items() if k in ("flops", "transcendentals", "bytes accessed")}


def xla_render_cost(model, params) -> Cost:
    """Per-sample MACs (``flops / 2``) and transcendentals XLA counts for ``model.render``.

    XLA sees the polynomial sines as ordinary flops, so its ``render_macs`` corresponds
    to the analytic ``render_macs + sine_flops / 2``, and its transcendental count is 0.
    """
    n = math.prod(model.shape)
    cost = xla_cost(model.render, params)
    flops = cost.get("flops", float("nan"))
    return Cost(model.num_params(), float("nan"), flops / 2 / n, cost.get("transcendentals", 0.0) / n)


def median_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds (``fn`` must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
