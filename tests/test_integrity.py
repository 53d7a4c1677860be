"""Saved artifacts are checked when read: damaged or foreign ones are refused with a named error."""

import os

import jax
import numpy as np
import pytest

from asmr_jax import io
from asmr_jax.imageset import from_array
from asmr_jax.siren import SIREN
from meta import checkpoint, functa, functaset, inference
from meta import train as train_lib

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax readers


def largest_file(root) -> str:
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    return max(files, key=os.path.getsize)


def flip_byte(path, where: float = 0.5):
    data = bytearray(open(path, "rb").read())
    i = int(len(data) * where)
    data[i] ^= 0x5A
    open(path, "wb").write(bytes(data))


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(0, 1, 8), np.linspace(0, 1, 8), indexing="ij")
    base = rng.uniform(0.2, 0.8, size=(n, 1, 1, 3))
    return np.clip(base + 0.1 * np.sin(3 * (x + y))[None, :, :, None], 0, 1).astype(np.float32)


TINY = dict(resolution=8, model="asmr", width=8, levels=2, latent_dim=4, batch_size=4, eval_images=4,
            eval_every=2, eval_more_steps=4, progress=False, plots=False, log=lambda *a: None)


@pytest.fixture(scope="module")
def data():
    return from_array(images(12), "toy", "train"), from_array(images(4, 1), "toy", "test")


def _flip_until_it_matters(root, load):
    """Flips a byte of the largest parameter file; returns the error the load raised."""
    target = largest_file(root)
    for where in (0.5, 0.75, 0.9, 0.3):
        flip_byte(target, where)
        try:
            load()
        except ValueError as e:
            return e
    raise AssertionError(f"flipping bytes of {target} went unnoticed")


def test_byte_flip_in_a_fit_checkpoint_is_refused(tmp_path):
    model = SIREN((8, 8), 1, widths=(32, 32))
    params = model.init(jax.random.key(0))
    io.save_model(tmp_path / "ckpt", model, params)
    _, back, _ = io.load_model(tmp_path / "ckpt")
    assert io.params_digest(back) == io.params_digest(params)
    err = _flip_until_it_matters(tmp_path / "ckpt" / "params", lambda: io.load_model(tmp_path / "ckpt"))
    assert "ckpt" in str(err)


def test_byte_flip_in_meta_checkpoints_is_refused(tmp_path, data):
    meta = functa.MetaModel(SIREN((8, 8), 3, widths=(32, 32)), 8)
    checkpoint.export(tmp_path / "exp", meta, meta.init(jax.random.key(0)))
    err = _flip_until_it_matters(tmp_path / "exp" / "params", lambda: checkpoint.load(tmp_path / "exp"))
    assert "exp" in str(err)
    train_lib.train(workdir=tmp_path / "w", data=data[0], test_data=data[1], steps=2, checkpoint_every=1,
                    **TINY)
    err = _flip_until_it_matters(tmp_path / "w" / checkpoint.CHECKPOINTS / "2" / "params",
                                 lambda: checkpoint.load(tmp_path / "w"))
    assert "step 2" in str(err) and "[1]" in str(err)  # names the step and offers the other one
    checkpoint.load(tmp_path / "w", step=1)  # the earlier step still loads
    # the optimizer state is checked too: a resume from a damaged one is refused
    _flip_until_it_matters(tmp_path / "w" / checkpoint.CHECKPOINTS / "1" / "opt_state", lambda: train_lib.train(
        workdir=tmp_path / "w", data=data[0], test_data=data[1], steps=3, resume=True, resume_step=1, **TINY))


def test_a_deleted_file_digest_is_refused_not_skipped(tmp_path):
    """A parameter folder's own digest file is part of what was saved: without it a fit
    checkpoint or an export is refused, while a folder saved before digests existed (its record
    names none) still loads, checked by its parameter digest."""
    model = SIREN((8, 8), 1, widths=(32, 32))
    io.save_model(tmp_path / "ckpt", model, model.init(jax.random.key(0)))
    meta = functa.MetaModel(SIREN((8, 8), 3, widths=(32, 32)), 8)
    checkpoint.export(tmp_path / "exp", meta, meta.init(jax.random.key(0)))
    for folder, load in {"ckpt": io.load_model, "exp": checkpoint.load}.items():
        digests = tmp_path / folder / "params" / io.FILES_DIGEST
        saved = digests.read_bytes()
        digests.unlink()
        with pytest.raises(ValueError, match=io.FILES_DIGEST.replace(".", r"\.") + " is missing"):
            load(tmp_path / folder)
        digests.write_bytes(saved)
        load(tmp_path / folder)
    record = io.read_model_json(tmp_path / "ckpt")
    del record["params_files"]
    io.write_json(tmp_path / "ckpt" / "model.json", record)
    os.remove(tmp_path / "ckpt" / "params" / io.FILES_DIGEST)
    io.load_model(tmp_path / "ckpt")


def test_truncated_newest_checkpoint_on_resume(tmp_path, data):
    kw = dict(TINY, data=data[0], test_data=data[1], checkpoint_every=2)
    full = train_lib.train(workdir=tmp_path / "full", steps=6, **kw)
    train_lib.train(workdir=tmp_path / "w", steps=4, **kw)
    target = largest_file(tmp_path / "w" / checkpoint.CHECKPOINTS / "4")
    with open(target, "r+b") as f:
        f.truncate(os.path.getsize(target) // 2)
    with pytest.raises(checkpoint.DamagedCheckpointError, match=r"step 4.*other saved steps: \[2\].*resume-step"):
        train_lib.train(workdir=tmp_path / "w", steps=6, resume=True, **kw)
    messages = []
    r = train_lib.train(workdir=tmp_path / "w", steps=6, resume=True, resume_step=2,
                        **{**kw, "log": messages.append})
    assert any("deleted the later checkpoint steps [4]" in m for m in messages)
    for a, b in zip(jax.tree.leaves(r.params), jax.tree.leaves(full.params)):
        np.testing.assert_array_equal(a, b)  # continued from step 2 exactly as the uninterrupted run


def test_functaset_from_another_network_is_refused(tmp_path, data):
    kw = dict(TINY, data=data[0], test_data=data[1], steps=2, checkpoint_every=2)
    train_lib.train(workdir=tmp_path / "a", seed=0, **kw)
    train_lib.train(workdir=tmp_path / "b", seed=1, **kw)  # same configuration, other weights
    meta, params = checkpoint.load(tmp_path / "a")
    lat, _ = inference.fit_latents(meta, params, data[1].get(np.arange(4)))
    functaset.save_functaset(tmp_path / "a.npz", functaset.build(meta, params, lat, np.zeros(4)))
    assert functaset.decode_functaset(tmp_path / "a.npz", tmp_path / "a").shape == (4, 8, 8, 3)
    with pytest.raises(ValueError, match="made by network .* but .* holds network"):
        functaset.decode_functaset(tmp_path / "a.npz", tmp_path / "b")
    # damaged files: a clear error, not a zipfile traceback
    blob = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="truncated or damaged"):
        functaset.load_functaset(tmp_path / "cut.npz")
    with pytest.raises(IsADirectoryError, match="directory"):
        functaset.encode_split(tmp_path / "a", out=tmp_path, overwrite=True)


def test_truncated_codec_file_is_a_clear_error(tmp_path):
    from meta import compress as C

    latents = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    codec = C.fit_codec(latents, 4, b"\x00" * 8)
    codec.save(tmp_path / "c.npz")
    assert C.Codec.load(tmp_path / "c.npz").bits == 4
    blob = (tmp_path / "c.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="truncated or damaged"):
        C.Codec.load(tmp_path / "cut.npz")


def test_meaningless_meta_train_settings_are_refused_before_any_write(tmp_path, data):
    kw = dict(TINY, data=data[0], test_data=data[1])
    with pytest.raises(ValueError, match="steps must be >= 1"):
        train_lib.train(workdir=tmp_path / "a", **{**kw, "steps": 0})
    with pytest.raises(ValueError, match="eval_images must be >= 1"):
        train_lib.train(workdir=tmp_path / "b", steps=2, **{**kw, "eval_images": 0})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_resume_from_a_damaged_checkpoint_is_one_error_line(tmp_path):
    """Through the command, in a fresh interpreter: one ``error:`` line, no traceback from orbax
    (not even the "Event loop is closed" kind printed at exit by a manager left open)."""
    import subprocess
    import sys

    def run(*extra):
        cmd = [sys.executable, "-m", "meta.commands", "meta-train", "--config", "cpu", "--workdir", str(tmp_path / "w"),
               "--set", "width=8", "--set", "latent_dim=4", "--set", "levels=2", "--eval-images", "4",
               "--checkpoint-every", "2", "--no-progress", *extra]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    first = run("--steps", "4")
    assert first.returncode == 0, first.stderr[-2000:]
    target = largest_file(tmp_path / "w" / checkpoint.CHECKPOINTS / "4")
    with open(target, "r+b") as f:
        f.truncate(os.path.getsize(target) // 2)
    second = run("--steps", "6", "--resume")
    assert second.returncode == 2, second.stderr[-2000:]
    err = second.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("asmr meta-train: error: cannot restore checkpoint step 4"), err
    assert "other saved steps: [2]" in err[0] and "TensorStore" not in err[0]
    assert "Traceback" not in second.stdout + second.stderr


MISMATCH_SCRIPT = """
import sys
import jax
from meta import checkpoint
from meta.config import TrainConfig

path = sys.argv[1]
small = TrainConfig(resolution=8, width=8, levels=2, latent_dim=4).meta_model(3)
checkpoint.export(path, small, small.init(jax.random.key(0)))
other = TrainConfig(resolution=8, width=8, levels=2, latent_dim=7).meta_model(3)
checkpoint.write_meta_json(path, other)  # another network's record
try:
    checkpoint.load(path)
except ValueError as e:
    print(e)
"""


def test_a_checkpoint_of_another_network_is_named_without_stray_tracebacks(tmp_path):
    """The shapes are compared from orbax's metadata before reading: no reader thread starts and
    fails, so nothing prints "Event loop is closed" tracebacks after the error (it did before)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", MISMATCH_SCRIPT, str(tmp_path / "m")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "saved by another network: ['latent_to_modulation']['w'] is float32[4, 8], this network needs " \
           "float32[7, 8]" in out.stdout, out.stdout
    assert "Traceback" not in out.stderr and "Event loop" not in out.stderr, out.stderr[-2000:]


# ----------------------------------------------------------------------------- checkpoints of an earlier version
V2 = os.path.join(os.path.dirname(__file__), "data", "meta_v2")  # written by version 2 (key "latent_to_shift")


@pytest.mark.xla_optimized  # its render was saved by an optimized build, bit for bit
@pytest.mark.parametrize("folder", ["exported", "workdir"])
def test_version_2_checkpoints_load_under_the_new_names_with_the_same_numbers_and_id(folder):
    from meta import compress

    ref = np.load(os.path.join(V2, "expected.npz"))
    meta, params = checkpoint.load(os.path.join(V2, folder))
    assert "latent_to_modulation" in params and "latent_to_shift" not in params
    np.testing.assert_array_equal(inference.render_latents(meta, params, ref["latent"]), ref["render"])
    assert compress.model_id(params, meta.config()) == ref["model_id"].tobytes()  # old codec files stay valid


@pytest.mark.xla_optimized
def test_a_version_2_run_resumes_and_its_new_steps_use_the_new_names(tmp_path):
    import shutil

    from meta.config import TrainConfig

    shutil.copytree(os.path.join(V2, "workdir"), tmp_path / "w")
    ref = np.load(os.path.join(V2, "expected.npz"))
    config = TrainConfig(resolution=8, width=8, levels=2, latent_dim=4, batch_size=4, steps=3, eval_images=4,
                         eval_every=2, checkpoint_every=2, keep=2)
    r = train_lib.train(config, tmp_path / "w", data=from_array(ref["images"], "tiny"), resume=True,
                        progress=False, plots=False, log=lambda *a: None)
    assert r.status == "done" and r.step == 3
    with checkpoint.RunCheckpoints(tmp_path / "w") as ckpts:
        assert ckpts.all_steps() == [2, 3]
    old_meta, old = checkpoint.load(tmp_path / "w", step=2)
    _, new = checkpoint.load(tmp_path / "w", step=3)
    assert jax.tree.structure(old) == jax.tree.structure(new)
    np.testing.assert_array_equal(inference.render_latents(old_meta, old, ref["latent"]), ref["render"])
    assert not np.array_equal(new["meta_sgd_lr"], old["meta_sgd_lr"])  # step 3 trained on
