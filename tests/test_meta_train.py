"""meta.train, meta.functaset, meta.commands.metalearn: runs, resume, divergence, functasets, CLI."""

import json
import os

import jax
import numpy as np
import pytest

from asmr_jax.imageset import from_array
from meta import checkpoint, functaset, inference, optimize
from meta import commands as cli
from meta import train as train_lib
from meta.config import TrainConfig

TINY = dict(resolution=8, model="asmr", width=8, levels=2, latent_dim=4, batch_size=4, eval_images=4,
            eval_every=2, eval_more_steps=4, progress=False, log=lambda *a: None)


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, size=(n, 1, 1, 3))
    y, x = np.meshgrid(np.linspace(0, 1, 8), np.linspace(0, 1, 8), indexing="ij")
    wave = 0.15 * np.sin(rng.uniform(1, 4, size=(n, 1, 1, 1)) * (x + y)[None, :, :, None] * 3)
    return np.clip(base + wave, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return from_array(images(12), "toy", "train"), from_array(images(6, 1), "toy", "test")


def leaves_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_gives_identical_params(tmp_path, data):
    train_ds, test_ds = data
    kw = dict(TINY, data=train_ds, test_data=test_ds, checkpoint_every=3, plots=False)
    full = train_lib.train(workdir=tmp_path / "full", steps=5, **kw)
    part = train_lib.train(workdir=tmp_path / "part", steps=3, **kw)
    assert part.step == 3
    resumed = train_lib.train(workdir=tmp_path / "part", steps=5, resume=True, **kw)
    assert full.status == resumed.status == "done" and resumed.step == 5
    leaves_equal(full.params, resumed.params)
    # 3 epochs of 12 images / batch 4: the data order crosses an epoch boundary
    assert train_ds.batch_indices(3, 4).tolist() != train_ds.batch_indices(0, 4).tolist()
    meta, params = checkpoint.load(tmp_path / "part")
    leaves_equal(params, full.params)
    assert meta == full.meta


def test_augmented_runs_resume_identically_and_differ_from_plain_ones(tmp_path, data):
    train_ds, test_ds = data
    kw = dict(TINY, data=train_ds, test_data=test_ds, checkpoint_every=2, plots=False, augment=True)
    full = train_lib.train(workdir=tmp_path / "full", steps=4, **kw)
    plain = train_lib.train(workdir=tmp_path / "plain", steps=4, **{**kw, "augment": False})
    with pytest.raises(AssertionError):
        leaves_equal(full.params, plain.params)
    resumed = train_lib.train(workdir=tmp_path / "full", steps=4, resume=True, resume_step=2, **kw)
    leaves_equal(full.params, resumed.params)
    with pytest.raises(ValueError, match="augment was True, now False"):
        train_lib.train(workdir=tmp_path / "full", steps=4, resume=True, **{**kw, "augment": False})


def test_cosine_outer_rate_resumes_identically_and_keeps_its_length(tmp_path, data):
    train_ds, test_ds = data
    kw = dict(TINY, data=train_ds, test_data=test_ds, checkpoint_every=2, plots=False, lr_decay="cosine")
    full = train_lib.train(workdir=tmp_path / "full", steps=6, **kw)
    const = train_lib.train(workdir=tmp_path / "const", steps=6, **{**kw, "lr_decay": "none"})
    assert json.loads((tmp_path / "full" / "meta.json").read_text())["train"]["decay_steps"] == 6
    with pytest.raises(AssertionError):  # the schedule changes the run
        leaves_equal(full.params, const.params)
    resumed = train_lib.train(workdir=tmp_path / "full", steps=6, resume=True, resume_step=2, **kw)
    assert resumed.step == 6
    leaves_equal(full.params, resumed.params)
    with pytest.raises(ValueError, match="decay_steps was 6, now 8"):  # a longer run is another schedule
        train_lib.train(workdir=tmp_path / "full", steps=8, resume=True, **kw)
    with pytest.raises(ValueError, match="lr_decay must be one of 'none', 'cosine', got 'linear'"):
        train_lib.train(workdir=tmp_path / "bad", steps=2, **{**kw, "lr_decay": "linear"})
    assert not (tmp_path / "bad").exists()


def test_outputs_and_metrics(tmp_path, data):
    train_ds, test_ds = data
    r = train_lib.train(workdir=tmp_path / "run", data=train_ds, test_data=test_ds, steps=4, **TINY)
    for f in ("meta.json", "history.json", "metrics.json", "psnr.png", "reconstructions.png"):
        assert (tmp_path / "run" / f).is_file(), f
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["status"] == "done" and m["step"] == 4
    assert set(m["test_psnr"]) == {"3", "4"} and all(np.isfinite(v) for v in m["test_psnr"].values())
    assert [h["step"] for h in r.history] == [1, 2, 3, 4]
    assert "test_psnr_3" in r.history[1] and "test_psnr_3" not in r.history[0]


def test_existing_workdir_and_config_change_refused(tmp_path, data):
    train_ds, test_ds = data
    kw = dict(TINY, data=train_ds, test_data=test_ds, plots=False)
    train_lib.train(workdir=tmp_path / "w", steps=2, checkpoint_every=2, **kw)
    listing = sorted(os.listdir(tmp_path / "w" / checkpoint.CHECKPOINTS))
    _, before = checkpoint.load(tmp_path / "w")
    with pytest.raises(FileExistsError, match="resume"):
        train_lib.train(workdir=tmp_path / "w", steps=4, **kw)
    with pytest.raises(ValueError, match="latent_dim"):
        train_lib.train(workdir=tmp_path / "w", steps=4, resume=True, **{**kw, "latent_dim": 5})
    with pytest.raises(ValueError, match="no checkpoints"):
        train_lib.train(workdir=tmp_path / "nothing", steps=4, resume=True, **kw)
    assert sorted(os.listdir(tmp_path / "w" / checkpoint.CHECKPOINTS)) == listing
    leaves_equal(checkpoint.load(tmp_path / "w")[1], before)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data, monkeypatch):
    train_ds, test_ds = data
    real = optimize.make_meta_step

    def poisoned(meta, opt, mesh=None, **kw):
        step, calls = real(meta, opt, mesh, **kw), []

        def wrapped(params, state, imgs, key=None):
            calls.append(1)
            p, s, m = step(params, state, imgs, key)
            if len(calls) == 4:
                m = {**m, "loss": m["loss"] * np.nan}
            return p, s, m

        wrapped.compile_for = step.compile_for
        return wrapped

    monkeypatch.setattr(optimize, "make_meta_step", poisoned)
    messages = []
    r = train_lib.train(workdir=tmp_path / "nan", data=train_ds, test_data=test_ds, steps=6,
                        checkpoint_every=2, **{**TINY, "log": messages.append})
    # metrics are fetched every few steps: the NaN of step 4 is seen at the fetch of step 4,
    # and the run ends at the last state checked finite (step 2, also the last checkpoint)
    assert r.status == "diverged" and r.step == 2
    assert any("step 4: loss is nan" in m.lower() and "(step 2)" in m for m in messages)
    mgr = checkpoint.manager(tmp_path / "nan")
    assert mgr.latest_step() == 2
    mgr.close()
    assert json.loads((tmp_path / "nan" / "metrics.json").read_text())["status"] == "diverged"


def test_bad_datasets(tmp_path):
    bad = images(4)
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        from_array(bad)
    with pytest.raises(ValueError, match="empty"):
        from_array(np.zeros((0, 8, 8, 3)))
    ds = from_array(images(4))
    with pytest.raises(ValueError, match="resolution"):
        train_lib.train(workdir=tmp_path / "r", data=ds, steps=1, **{**TINY, "resolution": 16})
    with pytest.raises(ValueError, match="batch size 8 exceeds"):
        train_lib.train(workdir=tmp_path / "b", data=ds, steps=1, **{**TINY, "batch_size": 8})
    with pytest.raises(ValueError, match="axis"):
        train_lib.train(workdir=tmp_path / "c", data=ds, steps=1, **{**TINY, "bases": (2, 2)})
    assert not os.path.exists(tmp_path / "c" / checkpoint.CHECKPOINTS)


def test_patch_stride_densifies_the_training_patches_only():
    tiles, test = train_lib.load_data(TrainConfig(resolution=16), None, None)
    dense, dense_test = train_lib.load_data(TrainConfig(resolution=16, patch_stride=8), None, None)
    assert len(dense) > 3 * len(tiles) and len(dense_test) == len(test)
    with pytest.raises(ValueError, match="patch_stride applies to the bundled 'patches' dataset, not 'lfw'"):
        TrainConfig(dataset="lfw", resolution=25, patch_stride=8)
    with pytest.raises(ValueError, match=r"patch_stride must be in \[1, resolution = 16\] pixels, got 32"):
        TrainConfig(resolution=16, patch_stride=32)


def test_tfds_end_to_end_under_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        r = train_lib.train(workdir=tmp_path / "cifar", dataset="cifar10", steps=2, plots=False, **TINY)
    assert r.status == "done" and r.step == 2 and r.meta.channels == 3
    assert np.isfinite(r.metrics["test_psnr"]["3"])


def test_cli_train_encode_decode(tmp_path, capsys):
    work, npz, out = tmp_path / "work", tmp_path / "f.npz", tmp_path / "dec"
    flags = ["--dataset", "lfw", "--resolution", "8", "--width", "8", "--levels", "2", "--latent-dim", "4",
             "--batch-size", "8", "--steps", "2", "--eval-every", "2", "--eval-images", "8", "--no-progress"]
    assert cli.main(["meta-train", *flags, "--workdir", str(work)]) == 0
    assert cli.main(["meta-encode", str(work), "--split", "test", "--out", str(npz), "--limit", "10",
                     "--no-progress"]) == 0
    with np.load(npz, allow_pickle=False) as z:
        assert str(z["format"]) == functaset.FORMAT and int(z["version"]) == functaset.VERSION
        assert z["latents"].shape == (10, 4) and z["latents"].dtype == np.float32
        assert z["psnr"].shape == (10,) and z["labels"].tolist() == [1] * 10  # lfw test: faces first
        cfg = json.loads(str(z["config"]))
        assert cfg["split"] == "test" and cfg["meta"]["latent_dim"] == 4
    # encoding into an existing file is refused and leaves it as it was
    before = npz.read_bytes()
    assert cli.main(["meta-encode", str(work), "--out", str(npz), "--no-progress"]) == 2
    assert npz.read_bytes() == before
    assert cli.main(["meta-decode", str(npz), "--ckpt", str(work), "--out", str(out)]) == 0
    assert len([f for f in os.listdir(out) if f[0].isdigit()]) == 10 and (out / "grid.png").is_file()
    # decoded images equal rendering the stored latents
    meta, params = checkpoint.load(work)
    data = functaset.load_functaset(npz)
    imgs = inference.render_latents(meta, params, data["latents"])
    from PIL import Image

    png = np.asarray(Image.open(out / "00003.png"), np.float32) / 255.0
    np.testing.assert_allclose(png, imgs[3, ..., 0], atol=1 / 255 + 1e-6)
    # a foreign checkpoint and a corrupt functaset give clear errors
    assert cli.main(["meta-encode", str(tmp_path), "--out", str(tmp_path / "x.npz"), "--no-progress"]) == 2
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert cli.main(["meta-decode", str(tmp_path / "bad.npz"), "--ckpt", str(work), "--out",
                     str(tmp_path / "d2")]) == 2
    err = capsys.readouterr().err
    assert "not a meta-learning checkpoint" in err and "cannot read functaset" in err
    assert not os.path.exists(tmp_path / "d2")


def test_cli_help_lists_meta_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["meta-train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--dataset", "--model", "--latent-dim", "--inner-steps", "--batch-size", "--steps",
                 "--resolution", "--width", "--depth", "--levels", "--workdir", "--resume", "--data-dir"):
        assert flag in text


# ----------------------------------------------------------------------------- configs, pipeline, shapes
@pytest.mark.parametrize("name", ["cpu", "functa_celebahq64", "coinpp_cifar10", "spatial_cpu"])
def test_every_shipped_config_runs_a_smoke_step(tmp_path, name):
    from meta import configs

    tfds = pytest.importorskip("tensorflow_datasets")
    assert name in configs.shipped()
    for arg in ("smoke", "asmr,smoke"):
        config = configs.load(f"{name}:{arg}", ["steps=1"])
        with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
            r = train_lib.train(configs.to_config(config), tmp_path / arg, progress=False, plots=False,
                                log=lambda *a: None)
        assert r.status == "done" and r.step == 1 and np.isfinite(r.metrics["final_train_loss"])


def test_config_counterparts_have_equal_params_and_overrides_are_typed():
    from meta import configs

    assert sorted(configs.shipped()) == ["coinpp_cifar10", "cpu", "functa_celebahq64", "spatial_cpu"]
    for name in ("cpu", "functa_celebahq64", "coinpp_cifar10", "spatial_cpu"):
        a, s = configs.load(f"{name}:asmr"), configs.load(f"{name}:siren")
        na, ns = configs.load_meta(a, 3).num_params(), configs.load_meta(s, 3).num_params()
        assert a.model == "asmr" and s.model == "siren" and abs(na - ns) / ns < 0.01, (name, na, ns)
    c = configs.load("functa_celebahq64", ["latent_dim=256", "lr=1e-4"])
    assert (c.latent_dim, c.lr, c.width, c.depth, c.clip, c.functa_init) == (256, 1e-4, 512, 15, None, True)
    with pytest.raises(ValueError, match="unknown field"):
        configs.load("cpu", ["latnet_dim=3"])
    with pytest.raises(ValueError, match="latent_dim is int"):
        configs.load("cpu", ["latent_dim=big"])
    with pytest.raises(ValueError, match="shipped configs"):
        configs.load("nope")
    assert set(configs.defaults()) == set(configs.load("cpu"))
    # text values (a config argument like "cpu:bases=4x2x2x2") are read as their flags are
    c = TrainConfig.from_mapping(configs.load("cpu:bases=4x2x2x2,spatial=4,latent_hidden=512"))
    assert (c.bases, c.spatial, c.latent_hidden) == ((4, 2, 2, 2), 4, (512,))
    assert c.meta_model(3).model.bases == ((4, 2, 2, 2), (4, 2, 2, 2))
    with pytest.raises(ValueError, match="bases: cannot parse bases '4,y'"):
        TrainConfig(bases="4,y")


def test_cli_meta_train_from_config_file_with_overrides(tmp_path, capsys):
    cfg = tmp_path / "mine.py"
    cfg.write_text("from meta.configs import defaults\n\n"
                   "def get_config(arg=None):\n"
                   "    c = defaults()\n"
                   "    c.update(resolution=8, width=8, levels=2, latent_dim=4, batch_size=4, steps=3,\n"
                   "             eval_images=4, eval_every=3, checkpoint_every=3, dataset='lfw')\n"
                   "    if arg == 'siren':\n"
                   "        c.model = 'siren'\n"
                   "    return c\n")
    rc = cli.main(["meta-train", "--config", f"{cfg}:siren", "--set", "steps=2", "--lr", "1e-3",
                   "--workdir", str(tmp_path / "w"), "--no-progress"])
    assert rc == 0
    stored = json.loads((tmp_path / "w" / "meta.json").read_text())["train"]
    assert (stored["model"], stored["lr"], stored["dataset"]) == ("siren", 1e-3, "lfw")
    assert json.loads((tmp_path / "w" / "metrics.json").read_text())["step"] == 2
    rc = cli.main(["meta-train", "--config", f"{cfg}", "--memory-estimate", "--workdir", str(tmp_path / "m")])
    assert rc == 0 and "GiB peak" in capsys.readouterr().out and not (tmp_path / "m").exists()


def test_resume_with_tuple_bases_path_data_dir_and_changed_fields(tmp_path, data):
    train_ds, test_ds = data
    kw = dict(TINY, data=train_ds, test_data=test_ds, plots=False, bases=(2, 4), levels=None,
              data_dir=tmp_path / "tfds", checkpoint_every=2)
    full = train_lib.train(workdir=tmp_path / "full", steps=4, **kw)
    train_lib.train(workdir=tmp_path / "part", steps=2, **kw)
    # run-control fields may change on resume; the result stays that of one uninterrupted run
    resumed = train_lib.train(workdir=tmp_path / "part", steps=4, resume=True,
                              **{**kw, "eval_every": 1, "log_every": 1, "data_dir": str(tmp_path / "tfds")})
    leaves_equal(resumed.params, full.params)
    with pytest.raises(ValueError, match="lr_scale was 1.0, now 2.0"):
        train_lib.train(workdir=tmp_path / "part", steps=6, resume=True, **{**kw, "lr_scale": 2.0})
    with pytest.raises(ValueError, match="bases"):
        train_lib.train(workdir=tmp_path / "part", steps=6, resume=True, **{**kw, "bases": (4, 2)})


def test_one_dimensional_signals_meta_train(tmp_path):
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 24)
    audio = (0.5 + 0.3 * np.sin(rng.uniform(2, 9, size=(8, 1, 1)) * t[None, :, None])).astype(np.float32)
    ds = from_array(audio, "tones")
    r = train_lib.train(workdir=tmp_path / "a", data=ds, resolution=None, model="asmr", bases=(4, 6),
                        levels=None, width=8, latent_dim=4, batch_size=4, steps=3, eval_images=4, eval_every=3,
                        progress=False, log=lambda *a: None)
    assert r.status == "done" and r.meta.shape == (24,) and np.isfinite(r.metrics["test_psnr"]["3"])


def test_prefetcher_yields_the_plain_batches_in_order_and_resumes_mid_epoch(data):
    from asmr_jax.imageset import Prefetcher

    ds = data[0]  # 12 images, batch 4: 3 steps per epoch
    plain = [ds.get(ds.batch_indices(t, 4, seed=3)) for t in range(7)]
    with Prefetcher(lambda t: ds.get(ds.batch_indices(t, 4, seed=3)), 0, 7, depth=2) as it:
        got = list(it)
    assert [t for t, _ in got] == list(range(7))
    for (_, a), b in zip(got, plain):
        np.testing.assert_array_equal(a, b)
    with Prefetcher(lambda t: ds.get(ds.batch_indices(t, 4, seed=3)), 4, 7) as it:  # mid-epoch 1
        for (_, a), b in zip(it, plain[4:]):
            np.testing.assert_array_equal(a, b)

    def bad(t):
        if t == 2:
            raise OSError("disk on fire")
        return t

    with Prefetcher(bad, 0, 5) as it, pytest.raises(OSError, match="disk on fire"):
        assert [t for t, _ in it] == [0, 1]
    with Prefetcher(lambda t: t, 2, 5, depth=0) as it:  # the plain loop
        assert list(it) == [(2, 2), (3, 3), (4, 4)]
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(bad, 0, 1, depth=-1)


def test_folder_dataset_feeds_meta_train_and_fit_many(tmp_path):
    from PIL import Image

    from asmr_jax import batch, datasets
    from asmr_jax.siren import SIREN

    rng = np.random.default_rng(0)
    (tmp_path / "mine").mkdir()
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, size=(12 + i, 20, 3), dtype=np.uint8)).save(tmp_path / "mine" / f"{i}.png")
    name = f"folder:{tmp_path / 'mine'}"
    r = train_lib.train(workdir=tmp_path / "w", dataset=name, steps=2, plots=False, **TINY)
    assert r.status == "done" and r.meta.shape == (8, 8)
    store = batch.fit_dataset(SIREN((8, 8), 3, widths=(8,)), datasets.load_dataset(name, "test", 8),
                              tmp_path / "store", chunk=4, steps=2, progress=False)
    assert store.complete and len(store) == len(datasets.load_dataset(name, "test", 8))
