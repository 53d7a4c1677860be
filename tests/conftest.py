"""Test setup: 8 fake CPU devices (real sharding code paths), no GPU preallocation, implicit
rank promotion refused (every broadcast in the code is written out), one XLA compilation
cache per test run, shared by its workers and the processes they start (empty at the start
of every run, so no run reuses another's programs), and, unless the run selects the ``slow``
tests, XLA's backend optimization level 0: the default run's programs are small and run a
few times each, so LLVM's optimization passes cost more time than they save (the processes
tests start inherit the flag). That level rounds some float results differently in the last
bits, so a test marked ``xla_optimized`` (one that checks numbers to that rounding) runs in
a child pytest with the optimizations on."""

import os
import subprocess
import sys
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


UNOPTIMIZED = "--xla_backend_optimization_level=0"
OPTIMIZED_CHILD = "ASMR_TEST_OPTIMIZED"  # set in the child pytest of an ``xla_optimized`` test


def pytest_configure(config):
    """Before any test runs (XLA reads its flags when the first computation starts)."""
    marks = config.option.markexpr or ""
    slow = "slow" in marks and "not slow" not in marks  # the paper-scale runs keep LLVM's optimizations
    if not (slow or OPTIMIZED_CHILD in os.environ or UNOPTIMIZED in os.environ["XLA_FLAGS"]):  # workers inherit it
        os.environ["XLA_FLAGS"] += " " + UNOPTIMIZED


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """An ``xla_optimized`` test in an unoptimized run: the same test, alone, in a child pytest
    with the optimizations on."""
    if pyfuncitem.get_closest_marker("xla_optimized") is None or UNOPTIMIZED not in os.environ["XLA_FLAGS"]:
        return None
    env = {**os.environ, OPTIMIZED_CHILD: "1",
           "XLA_FLAGS": " ".join(f for f in os.environ["XLA_FLAGS"].split() if f != UNOPTIMIZED)}
    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n0", "-p", "no:cacheprovider", pyfuncitem.nodeid],
                           cwd=pyfuncitem.config.rootpath, env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, f"{pyfuncitem.nodeid} with XLA's optimizations:\n{child.stdout[-6000:]}"
    return True


@pytest.fixture
def key():
    return jax.random.key(0)


def pytest_sessionfinish(session):
    """The run's compilation cache goes with the run: the process that named it removes it (a
    cache directory set before the tests started is the user's, and is left alone)."""
    if os.environ["JAX_COMPILATION_CACHE_DIR"] == _CACHE:
        import shutil

        shutil.rmtree(_CACHE, ignore_errors=True)
