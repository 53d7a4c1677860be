"""ASMR coordinate networks and Functa-style meta-learning in JAX.

The top-level names are imported on first use, so that ``import asmr_jax.<module>`` of a
module that needs no JAX (``arrays``) stays free of it.
"""

import importlib

_EXPORTS = {"ASMR": "asmr_jax.asmr", "SIREN": "asmr_jax.siren", "auto_bases": "asmr_jax.coords"}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'asmr_jax' has no attribute {name!r}")
