"""Model registry: rebuild a model from its saved config.

Every model is a frozen (hashable) dataclass with ``kind``, ``shape``, ``channels``,
``init(key)``, ``apply(params, coords, shifts=None)``, ``render(params, shifts=None)``,
``num_params()``, ``shift_widths`` and ``config()``; ``config()`` round-trips through
:func:`from_config`.
"""

from __future__ import annotations

import functools

import jax

from asmr_jax.asmr import ASMR
from asmr_jax.ffn import FFN
from asmr_jax.kilonerf import KiloNeRF
from asmr_jax.loe import LoE
from asmr_jax.mfn import MFN
from asmr_jax.ngp import InstantNGP
from asmr_jax.siren import SIREN
from asmr_jax.wire import WIRE

MODELS = {"asmr": ASMR, "ffn": FFN, "kilonerf": KiloNeRF, "loe": LoE, "mfn": MFN, "ngp": InstantNGP,
          "siren": SIREN, "wire": WIRE}


@functools.lru_cache(maxsize=64)
def jitted_render(model):
    """``jax.jit(model.render)``, one per model (models are hashable): repeated renders of
    the same configuration reuse one compiled function instead of tracing again."""
    return jax.jit(model.render)


def from_config(config: dict):
    """Builds a model from ``model.config()``; raises ``ValueError`` on an unknown kind."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODELS)}")
    for key in ("shape", "widths"):
        if isinstance(config.get(key), list):
            config[key] = tuple(config[key])
    if isinstance(config.get("bases"), list):
        config["bases"] = tuple(tuple(b) for b in config["bases"])
    return MODELS[kind](**config)


def build(kind: str, shape, channels: int, *, width: int = 256, depth: int | None = None,
          levels: int | None = None, bases=None, w0: float = 30.0, modulator: str = "linear"):
    """One constructor for the CLI and experiments.

    ``depth`` is the paper's layer count ("SIREN-4", "ASMR-4"): ``depth - 1`` hidden
    layers of ``width``. For ASMR, ``levels`` (or the bases' length) sets the depth.
    """
    if kind == "asmr":
        levels = levels if levels is not None else depth
        if bases is None and levels is None:
            levels = 4
        return ASMR(tuple(shape), channels, bases=bases, widths=width, w0=w0, modulator=modulator, levels=levels)
    if kind == "siren":
        depth = depth if depth is not None else (levels if levels is not None else 4)
        if depth < 2:
            raise ValueError(f"SIREN depth must be >= 2 (one hidden layer + output), got {depth}")
        return SIREN(tuple(shape), channels, widths=(width,) * (depth - 1), w0=w0)
    if kind in MODELS:
        return MODELS[kind].build(shape, channels, width=width, depth=depth or levels or 4)
    raise ValueError(f"unknown model {kind!r}; expected one of {sorted(MODELS)}")


def match_width(count, target: int, lo: int = 2) -> int:
    """The width ``w >= lo`` whose ``count(w)`` is closest to ``target``; ``count`` (a
    parameter count) must grow with the width. For equal-parameter comparisons:
    ``match_width(lambda w: build("siren", shape, 3, width=w).num_params(), asmr.num_params())``."""
    hi = max(2 * lo, 8)
    while count(hi) < target:
        hi *= 2
    a, b = lo, hi
    while b - a > 1:  # count(a) < target <= count(b), unless target <= count(lo)
        mid = (a + b) // 2
        if count(mid) < target:
            a = mid
        else:
            b = mid
    return min((a, b), key=lambda w: (abs(count(w) - target), w))
