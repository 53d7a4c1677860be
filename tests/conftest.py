"""Test setup: 8 fake CPU devices (real sharding code paths), no GPU preallocation, implicit
rank promotion refused (every broadcast in the code is written out), one XLA compilation
cache per test run, shared by its workers and the processes they start (empty at the start
of every run, so no run reuses another's programs), and, unless the run selects the ``slow``
tests, XLA's backend optimization level 0: the default run's programs are small and run a
few times each, so LLVM's optimization passes cost more time than they save (the processes
tests start inherit the flag). That level rounds some float results differently in the last
bits, so a test that checks numbers saved by an optimized build compares them to within
1e-5 and checks the parameters' bytes exactly."""

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


def pytest_configure(config):
    """Before any test runs (XLA reads its flags when the first computation starts)."""
    marks = config.option.markexpr or ""
    slow = "slow" in marks and "not slow" not in marks  # the paper-scale runs keep LLVM's optimizations
    if not slow and "optimization_level" not in os.environ["XLA_FLAGS"]:  # xdist workers inherit it
        os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"


@pytest.fixture
def key():
    return jax.random.key(0)


def pytest_sessionfinish(session):
    """The run's compilation cache goes with the run: the process that named it removes it (a
    cache directory set before the tests started is the user's, and is left alone)."""
    if os.environ["JAX_COMPILATION_CACHE_DIR"] == _CACHE:
        import shutil

        shutil.rmtree(_CACHE, ignore_errors=True)
