"""Batch fitting: vmap equals separate fits, device count does not matter, the store resumes exactly."""

import hashlib
import json
import os
import shutil

import jax
import numpy as np
import pytest

from asmr_jax import batch, fit, metrics, sharding
from asmr_jax import store as store_lib
from asmr_jax.asmr import ASMR
from meta import commands as cli

# One tiny model and one optimizer setting everywhere, so the jitted runners compile once.
MODEL = ASMR((8, 8), 1, widths=8, levels=2)
STEPS, LR, PER_CALL = 20, 1e-3, 10
X = np.random.default_rng(0).random((5, 8, 8, 1)).astype(np.float32)


class ArrayData:
    """The dataset interface ``fit_dataset`` needs: ``__len__``, ``shape``, ``channels``, ``get``."""

    def __init__(self, images):
        self.images = images
        self.shape, self.channels = images.shape[1:3], images.shape[3]
        self.calls = []

    def __len__(self):
        return len(self.images)

    def get(self, indices):
        self.calls.append(list(np.asarray(indices)))
        return self.images[np.asarray(indices)]


def run_many(signals, **kw):
    kw = {"lr": LR, "steps_per_call": PER_CALL, "progress": False, **kw}
    return batch.fit_many(MODEL, signals, kw.pop("steps", STEPS), **kw)


def fit_store(out, data=None, **kw):
    kw = {"lr": LR, "steps_per_call": PER_CALL, "progress": False, **kw}
    return (
        batch.fit_dataset(MODEL, data, out, kw.pop("chunk", 2), kw.pop("steps", STEPS), **kw)
        if data is not None
        else fit_store(out, ArrayData(X), **kw)
    )


def assert_trees_close(a, b, atol=2e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-4)


def max_abs_diff(a, b) -> float:
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def row(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@pytest.fixture(scope="module")
def many():
    return run_many(X)


@pytest.fixture(scope="module")
def full_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("stores") / "full"
    fit_store(out)
    return out


def test_vmap_fit_equals_separate_fits(many):
    assert many.psnr.shape == (5,) and many.steps.tolist() == [STEPS] * 5 and not many.stopped.any()
    assert jax.tree.leaves(many.params)[0].shape[0] == 5
    base = jax.random.key(0)
    for i in (0, 3):
        one = fit.fit(
            MODEL, X[i], STEPS, lr=LR, key=jax.random.fold_in(base, i), chunk=PER_CALL, progress=False,
            keep_best=False,
        )
        assert_trees_close(row(many.params, i), one.params)
        assert abs(float(many.psnr[i]) - one.psnr) < 1e-3
    # Signals keep their fits in other batches: the key follows the global index.
    part = run_many(X[3:5], indices=[3, 4])
    assert_trees_close(part.params, row(many.params, slice(3, 5)))
    legacy = run_many(X[3:5], indices=[3, 4], key=jax.random.PRNGKey(0))  # uint32 keys work the same
    assert_trees_close(legacy.params, part.params, atol=0)
    assert not np.allclose(many.psnr[0], many.psnr[1])  # independent inits and data


def test_one_device_equals_eight(many):
    assert len(jax.devices()) == 8
    one = run_many(X, mesh=sharding.data_mesh(jax.devices()[:1]))
    assert_trees_close(one.params, many.params)
    np.testing.assert_allclose(one.psnr, many.psnr, atol=1e-3)
    two = run_many(X, mesh=sharding.data_mesh(jax.devices()[:2]))  # 5 signals padded to 6
    assert_trees_close(two.params, many.params)


def test_second_call_does_not_recompile(many):
    runner = batch._runner()
    before = runner._cache_size()
    again = run_many(X[:3] * 0.5)  # other values and count, same padded shape on 8 devices
    assert runner._cache_size() == before
    assert again.psnr.shape == (3,)


def test_shared_init_starts_every_signal_there(many):
    init = row(many.params, 0)
    res = run_many(X[:2], init=init)
    one = fit.fit(MODEL, X[1], STEPS, lr=LR, params=init, chunk=PER_CALL, progress=False, keep_best=False)
    assert_trees_close(row(res.params, 1), one.params)
    zero_steps = run_many(X[:2], init=init, target_psnr=-50.0)  # reached at once: nothing moves
    assert zero_steps.steps.tolist() == [0, 0] and zero_steps.stopped.all()
    for leaf, ref in zip(jax.tree.leaves(zero_steps.params), jax.tree.leaves(init)):
        np.testing.assert_array_equal(leaf, np.broadcast_to(ref, leaf.shape))
    with pytest.raises(ValueError, match="init leaf .* has shape"):
        run_many(X[:2], init=jax.tree.map(lambda x: x[None], init))
    with pytest.raises(ValueError, match="tree structure"):
        run_many(X[:2], init={"layers": init["layers"]})


@pytest.mark.xla_optimized  # its 2e-5 bound is the rounding of optimized programs
def test_target_psnr_freezes_signals():
    easy = np.full((8, 8, 1), 0.15, np.float32)  # reaches 20 dB after about 11 steps
    start = MODEL.init(jax.random.key(7))  # shared plain init: the output bias has to move
    hard = X[0]  # random pixels: 49 parameters cannot reach 20 dB
    lr = 5e-3
    res = run_many(np.stack([easy, hard]), target_psnr=20.0, lr=lr, init=start)
    assert res.stopped.tolist() == [True, False]
    assert 0 < res.steps[0] < STEPS and res.steps[1] == STEPS
    assert res.psnr[0] >= 20.0 - 0.05 and res.psnr[1] < 20.0
    # The frozen parameters are those after the recorded number of steps, not one more or
    # one fewer (Adam moves every weight by about lr per step).
    n = int(res.steps[0])
    dist = {}
    for k in (n - 1, n, n + 1):
        single = fit.fit(MODEL, easy, k, lr=lr, params=start, chunk=PER_CALL, progress=False, keep_best=False).params
        dist[k] = max_abs_diff(row(res.params, 0), single)
    assert dist[n] < 2e-5 and min(dist[n - 1], dist[n + 1]) > 0.3 * lr, dist
    free = run_many(np.stack([easy, hard]), lr=lr, init=start)
    assert free.psnr[0] > res.psnr[0]  # without the target it keeps training
    assert_trees_close(row(free.params, 1), row(res.params, 1))


def test_store_round_trip(full_store, many):
    store = store_lib.load_store(full_store)
    assert len(store) == 5 and store.complete and store.model == MODEL
    assert [e["count"] for e in store.meta["chunks"]] == [2, 2, 1]
    for i in range(5):
        assert_trees_close(store.params(i), row(many.params, i))
        recon = store.render(i)
        np.testing.assert_allclose(recon, np.asarray(MODEL.render(store.params(i))), atol=1e-5)
        assert abs(store.psnr(i) - metrics.psnr(recon, X[i])) < 1e-3
        assert store.steps(i) == STEPS
    np.testing.assert_array_equal(store.arrays()["indices"], np.arange(5))
    # numpy alone reads a chunk; checksums in store.json are the files' sha256.
    with open(full_store / "store.json") as f:
        meta = json.load(f)
    for entry in meta["chunks"]:
        path = full_store / entry["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        with np.load(path, allow_pickle=False) as z:
            paths = list(z["leaf_paths"])
            assert z["indices"].tolist() == list(range(entry["start"], entry["start"] + entry["count"]))
            assert all(z[f"params/{p}"].shape[0] == entry["count"] for p in paths)
    assert paths == [leaf["path"] for leaf in meta["leaves"]] and "layers/0/w" in paths
    with pytest.raises(IndexError, match="out of range"):
        store.params(5)


def test_resume_after_interruption_is_identical_and_keeps_finished_chunks(full_store, tmp_path, monkeypatch):
    out = tmp_path / "store"
    real, calls = batch._fit, []

    class Interrupted(Exception):
        pass

    def dies_on_third_chunk(model, load_rows, indices, *args, **kw):
        calls.append(indices.tolist())
        if len(calls) == 3:
            raise Interrupted
        return real(model, load_rows, indices, *args, **kw)

    monkeypatch.setattr(batch, "_fit", dies_on_third_chunk)
    with pytest.raises(Interrupted):
        fit_store(out)
    monkeypatch.setattr(batch, "_fit", real)
    partial = store_lib.load_store(out)
    assert len(partial) == 4 and not partial.complete
    with pytest.raises(IndexError, match="not fitted yet"):
        partial.params(4)
    (out / ".chunk_00002.npz.tmp-99999").write_bytes(b"half a chunk")  # a write cut short
    finished = {
        n: ((out / n).stat().st_mtime_ns, (out / n).read_bytes())
        for n in ("chunk_00000.npz", "chunk_00001.npz")
    }
    data = ArrayData(X)
    store = fit_store(out, data=data, resume=True)
    assert data.calls == [[4]]  # only the unfinished chunk was read and fitted
    for name, (mtime, blob) in finished.items():
        assert (out / name).stat().st_mtime_ns == mtime and (out / name).read_bytes() == blob
    assert not [n for n in os.listdir(out) if ".tmp-" in n]
    assert store.complete
    ref = json.loads((full_store / "store.json").read_text())
    got = json.loads((out / "store.json").read_text())
    assert got["chunks"] == ref["chunks"]  # same files, same checksums as the uninterrupted run
    for entry in ref["chunks"]:
        assert (out / entry["file"]).read_bytes() == (full_store / entry["file"]).read_bytes()
    # Resuming a complete store fits nothing and rewrites nothing.
    data = ArrayData(X)
    fit_store(out, data=data, resume=True)
    assert data.calls == []


def test_corrupt_chunk_is_reported(full_store, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(full_store, out)
    path = out / "chunk_00001.npz"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    store = store_lib.load_store(out)
    assert store.params(0) is not None  # other chunks still load
    with pytest.raises(store_lib.CorruptChunkError, match="chunk_00001.npz is corrupt: sha256"):
        store.params(2)
    with pytest.raises(store_lib.CorruptChunkError, match="chunk_00001.npz"):
        store.verify()
    with pytest.raises(store_lib.CorruptChunkError, match="chunk_00001.npz is corrupt"):
        fit_store(out, resume=True)
    assert path.read_bytes() == bytes(blob)  # reported, not silently replaced
    path.unlink()
    with pytest.raises(store_lib.CorruptChunkError, match="missing"):
        fit_store(out, resume=True)


def test_resume_refuses_other_settings(full_store, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(full_store, out)
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    with pytest.raises(FileExistsError, match="resume"):
        fit_store(out)
    with pytest.raises(ValueError, match="chunk = 2, this run has 3"):
        fit_store(out, chunk=3, resume=True)
    with pytest.raises(ValueError, match="made with model"):
        batch.fit_dataset(
            ASMR((8, 8), 1, widths=4, levels=2), ArrayData(X), out, 2, STEPS, resume=True, progress=False
        )
    with pytest.raises(ValueError, match="made with fit"):
        fit_store(out, steps=STEPS + 1, resume=True)
    with pytest.raises(ValueError, match="made with total"):
        fit_store(out, limit=3, resume=True)
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        fit_store(tmp_path / "other")


def test_bad_input_is_rejected(tmp_path):
    with pytest.raises(
        ValueError, match=r"signals 0 and 1 have different shapes \(8, 8, 1\) and \(4, 4, 1\)"
    ):
        run_many([X[0], X[0, :4, :4]])
    with pytest.raises(ValueError, match=r"expected \[n, \*\(8, 8, 1\)\]"):
        run_many(X[:, :4])
    nan = X.copy()
    nan[3, 2, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"signals \[3\] contain NaN/inf"):
        run_many(nan)
    with pytest.raises(ValueError, match="empty"):
        run_many(X[:0])
    with pytest.raises(ValueError, match="steps must be"):
        run_many(X, steps=0)
    with pytest.raises(ValueError, match="chunk size must be an integer >= 1, got 0"):
        fit_store(tmp_path / "a", chunk=0)
    with pytest.raises(ValueError, match="must have __len__ and get"):
        fit_store(tmp_path / "b", data=X)
    with pytest.raises(ValueError, match=r"dataset shape is \(4, 4\)"):
        fit_store(tmp_path / "c", data=ArrayData(X[:, :4, :4]))
    with pytest.raises(ValueError, match=r"signals \[3\] contain NaN"):
        fit_store(tmp_path / "d", data=ArrayData(nan))  # named by its dataset index, in the second chunk
    with pytest.raises(ValueError, match="not a batch store"):
        store_lib.load_store(tmp_path)


def test_cli_fit_many(tmp_path, capsys):
    path = tmp_path / "images.npy"
    np.save(path, X)
    out = tmp_path / "store"
    base = [
        "fit-many",
        "--dataset",
        str(path),
        "--model",
        "asmr",
        "--width",
        "8",
        "--levels",
        "2",
        "--steps",
        str(STEPS),
        "--lr",
        str(LR),
        "--steps-per-call",
        str(PER_CALL),
        "--limit",
        "3",
        "--no-progress",
    ]
    argv = base + ["--chunk", "2", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "mean PSNR" in printed and "2 chunks" in printed
    store = store_lib.load_store(out)
    assert len(store) == 3 and store.model == MODEL
    assert cli.main(argv) == 2  # existing store without --resume
    assert "--resume" in capsys.readouterr().err
    assert cli.main(argv + ["--resume"]) == 0
    assert cli.main(base + ["--chunk", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--chunk must be >= 1" in capsys.readouterr().err
