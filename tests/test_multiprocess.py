"""Real multi-process runs: 2 processes x 2 CPU devices on loopback (jax.distributed, gloo)
against 1 process x 4 devices: same meta-training params, same resume, same fit-many store."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "multiprocess_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(out, nproc, ndev):
    """The ``nproc`` processes of one run, started (see :func:`finish`)."""
    os.makedirs(out, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    return [subprocess.Popen([sys.executable, WORKER, str(out), str(nproc), str(i), str(port), str(ndev)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(nproc)]


def finish(out, procs, timeout=240):
    """Waits for a run's processes (the caller kills any left after ``timeout`` s); its results."""
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"process {i} of {len(procs)} failed:\n{log[-4000:]}"
    return np.load(os.path.join(out, "result.npz"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("mp")
    one, two = start(base / "one", 1, 4), start(base / "two", 2, 2)  # the two runs at once
    try:
        return finish(base / "one", one), finish(base / "two", two), base
    finally:  # a failed or timed-out run leaves no process behind
        for p in one + two:
            if p.poll() is None:
                p.kill()


def test_two_processes_equal_one(runs):
    one, two, _ = runs
    assert sorted(one.files) == sorted(two.files)
    for k in one.files:
        if k.startswith(("first/", "resumed/", "store/params/", "history")):
            np.testing.assert_allclose(two[k], one[k], rtol=2e-5, atol=2e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(two[k], one[k], err_msg=k)
    assert not np.allclose(one["first/0"], one["resumed/0"])  # the resume trained on


def test_each_process_loads_only_its_rows(runs):
    _, _, base = runs
    one = int((base / "one" / "loaded_0.txt").read_text())
    halves = [int((base / "two" / f"loaded_{i}.txt").read_text()) for i in range(2)]
    assert one == 5 * 8  # 5 steps of a global batch of 8 (3, then 2 resumed)
    assert halves == [one // 2, one // 2]


def test_only_process_zero_writes(runs):
    _, _, base = runs
    names = sorted(os.listdir(base / "two" / "meta"))
    assert "metrics.json" in names and "history.json" in names
    assert not [n for n in names if ".tmp" in n]
