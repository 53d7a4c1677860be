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
  (ASMR-4 on Cameraman: ~1.6K MAC and ~12 sin/cos per sample, against SIREN-4's
  132K MAC and 768 sines).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time

import jax

from asmr_jax import coords as coords_lib

NONLINEAR_WIDTH = 32


@dataclasses.dataclass(frozen=True)
class Cost:
    """Per-sample inference cost of a model."""

    params: int
    paper_macs: float  # the paper's convention
    render_macs: float  # what our render computes
    transcendentals: float  # sin/cos evaluations per sample in our render


def _mlp_cost(sizes) -> int:
    return sum(fi * fo + fo for fi, fo in zip(sizes[:-1], sizes[1:]))


def count(model) -> Cost:
    """Analytic per-sample cost of a SIREN or ASMR (see module docstring)."""
    n = math.prod(model.shape)
    if model.kind == "asmr":
        return _asmr_cost(model, n)
    sizes = (getattr(model, "in_features", model.ndim),) + tuple(model.widths) + (model.channels,)
    macs = _mlp_cost(sizes)
    if hasattr(model, "encoding_macs"):  # e.g. Fourier-feature baselines
        macs += model.encoding_macs()
    return Cost(model.num_params(), float(macs), float(macs), float(sum(model.widths)))


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
    hidden, trans = 0.0, 0.0
    for i in range(1, nlev):  # hidden layer i: matmul on level-(i-1) cells, modulator on level-i digits
        cells = coords_lib.cells(bases, i - 1)
        k = widths[i - 1]
        hidden += cells * (fan_in[i - 1] * k + k + k) + coords_lib.digits_count(bases, i) * mod_cost[i - 1]
        if i < nlev - 1:
            trans += coords_lib.cells(bases, i) * k  # sines on the level-i cells
    k_last = widths[-1]
    paper = hidden + padded * (k_last * c + c)
    render = hidden + padded * (2 * k_last * c + c)
    trans += 2 * k_last * (coords_lib.cells(bases, nlev - 2) + coords_lib.digits_count(bases, nlev - 1))
    return Cost(model.num_params(), paper / total, render / total, trans / total)


def xla_cost(fn, *args) -> dict:
    """XLA's cost analysis of ``jax.jit(fn)(*args)``: ``{"flops", "transcendentals", ...}``."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax returns one dict per device
        analysis = analysis[0]
    return {k: float(v) for k, v in analysis.items() if k in ("flops", "transcendentals", "bytes accessed")}


def xla_render_cost(model, params) -> Cost:
    """Per-sample MACs (``flops / 2``) and transcendentals XLA counts for ``model.render``."""
    n = math.prod(model.shape)
    cost = xla_cost(model.render, params)
    flops = cost.get("flops", float("nan"))
    return Cost(model.num_params(), float("nan"), flops / 2 / n, cost.get("transcendentals", float("nan")) / n)


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
