"""The examples in the docstrings run and print what they say; the code passes ruff."""

import doctest
import importlib

import pytest

MODULES = ["asmr_jax.coords", "asmr_jax.flax_modules", "asmr_jax.datasets", "asmr_jax.ngp", "asmr_jax.batch",
           "asmr_jax.loe", "asmr_jax.asmr", "asmr_jax.siren", "asmr_jax.mfn", "asmr_jax.ffn", "asmr_jax.wire",
           "asmr_jax.kilonerf", "meta.config", "meta.inference"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def test_the_code_passes_the_linter():
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", root], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]
