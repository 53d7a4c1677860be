"""Test setup: 8 fake CPU devices (real sharding code paths), no GPU preallocation, implicit
rank promotion refused (every broadcast in the code is written out), and one XLA compilation
cache per test run, shared by its workers and the processes they start (empty at the start
of every run, so no run reuses another's programs)."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")  # here and in the processes tests start
# the controlling process names the cache; its workers and their processes inherit the name
_CACHE = os.path.join(tempfile.gettempdir(), f"asmr-jax-tests-{os.getpid()}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def key():
    return jax.random.key(0)


def pytest_sessionfinish(session):
    """The run's compilation cache goes with the run: the process that named it removes it (a
    cache directory set before the tests started is the user's, and is left alone)."""
    if os.environ["JAX_COMPILATION_CACHE_DIR"] == _CACHE:
        import shutil

        shutil.rmtree(_CACHE, ignore_errors=True)
