"""ASMR coordinate networks and Functa-style meta-learning in JAX."""

from asmr_jax.asmr import ASMR
from asmr_jax.coords import auto_bases
from asmr_jax.siren import SIREN

__all__ = ["ASMR", "SIREN", "auto_bases"]
__version__ = "0.1.0"
