"""asmr_jax.datasets: bundled patches and faces, TFDS through mock data, batching."""

import itertools

import numpy as np
import pytest

from asmr_jax import datasets, imageset


@pytest.mark.parametrize("res", [16, 32])
def test_patches_shapes_and_disjoint_photo_split(res):
    tr = datasets.load_dataset("patches", "train", res)
    te = datasets.load_dataset("patches", "test", res)
    assert tr.shape == te.shape == (res, res) and tr.channels == te.channels == 3
    assert len(tr) > 5 * len(te) > 0
    x = te.get([0, len(te) - 1])
    assert x.shape == (2, res, res, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert set(tr.sources) == set(datasets.PATCH_TRAIN_PHOTOS)
    assert set(te.sources) == set(datasets.PATCH_TEST_PHOTOS)
    assert not set(tr.sources) & set(te.sources)
    # no test patch equals a training patch
    big = tr.get(np.arange(len(tr))).reshape(len(tr), -1)
    for p in te.get(np.arange(len(te))).reshape(len(te), -1)[:20]:
        assert np.abs(big - p).max(axis=1).min() > 0
    # deterministic, and no near-constant patches
    again = datasets.load_dataset("patches", "test", res)
    np.testing.assert_array_equal(again.get(np.arange(len(te))), te.get(np.arange(len(te))))
    assert te.get(np.arange(len(te))).reshape(len(te), -1).std(axis=1).min() >= 0.02


def test_patch_stride_cuts_overlapping_patches_and_the_tile_grid_is_stride_equal_to_side():
    photos = {"train": ("camera",), "test": ("coffee",)}
    kw = dict(photos=photos, scales=(4,), min_std=0.0)  # every patch kept
    tiles = datasets.load_dataset("patches", "train", 16, **kw)
    same = datasets.load_dataset("patches", "train", 16, **kw, stride=16)
    np.testing.assert_array_equal(same.get(np.arange(len(same))), tiles.get(np.arange(len(tiles))))
    dense = datasets.load_dataset("patches", "train", 16, **kw, stride=8)
    # camera (512 x 512) at scale 4 is 128 x 128: 8 x 8 tiles, 15 x 15 corners 8 pixels apart
    assert (len(tiles), len(dense)) == (64, 225)
    small = datasets._resize(datasets._photo("camera"), (128, 128), "box")
    np.testing.assert_array_equal(dense.get([0, 1, 15])[:, :, :, 0],
                                  [small[0:16, 0:16, 0], small[0:16, 8:24, 0], small[8:24, 0:16, 0]])
    # every tile is one of the dense patches (the tile grid is a subset of the dense one)
    flat = dense.get(np.arange(len(dense))).reshape(len(dense), -1)
    assert all(np.abs(flat - t).max(axis=1).min() == 0 for t in tiles.get(np.arange(8)).reshape(8, -1))
    for bad in (0, 17):
        with pytest.raises(ValueError, match=f"stride must be in \\[1, resolution = 16\\] pixels, got {bad}"):
            datasets.load_dataset("patches", "train", 16, photos=photos, stride=bad)


def test_lfw_split_and_labels():
    tr = datasets.load_dataset("lfw", "train", 32)
    te = datasets.load_dataset("lfw", "test", 32)
    assert (len(tr), len(te)) == (160, 40) and tr.channels == 1
    assert te.get([0]).shape == (1, 32, 32, 1)
    assert not set(tr.indices) & set(te.indices)
    assert te.labels.sum() == 20 and tr.labels.sum() == 80  # 100 faces, 100 non-faces


def test_batches_are_a_function_of_the_step():
    ds = imageset.from_array(np.random.default_rng(0).uniform(size=(10, 4, 4, 3)), "toy")
    seen = [ds.batch_indices(s, 3, seed=1) for s in range(3)]
    assert sorted(np.concatenate(seen).tolist()) == sorted(set(np.concatenate(seen).tolist()))  # one epoch: no repeats
    assert ds.steps_per_epoch(3) == 3
    stream = list(ds.batches(3, seed=1, epochs=2))
    assert len(stream) == 6
    resumed = list(ds.batches(3, seed=1, epochs=2, start_step=4))
    for a, b in zip(stream[4:], resumed):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ds.batch_indices(0, 3, seed=1), ds.batch_indices(3, 3, seed=1))
    ordered = list(ds.batches(4, shuffle=False, drop_remainder=False, epochs=1))
    assert [len(b) for b in ordered] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(ordered), ds.get(np.arange(10)))


def test_bad_requests():
    with pytest.raises(ValueError, match="splits"):
        datasets.load_dataset("patches", "validation")
    with pytest.raises(ValueError, match="empty"):
        datasets.load_dataset("patches", "train", 32, photos={"train": ()})
    with pytest.raises(ValueError, match="resolution"):
        datasets.load_dataset("patches", "train", 1)
    with pytest.raises(ValueError, match="empty"):
        datasets.load_dataset("patches", "test", 512)
    ds = datasets.load_dataset("lfw", "test", 8)
    with pytest.raises(IndexError):
        ds.get([len(ds)])
    with pytest.raises(ValueError, match="exceeds"):
        next(ds.batches(len(ds) + 1))


def test_tfds_missing_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(ValueError, match="tfds build cifar10"):
        datasets.load_dataset("cifar10", "train", 32, data_dir=str(tmp_path))


def test_tfds_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = datasets.load_dataset("cifar10", "train", 16)
        x = ds.get(np.arange(8))
        assert len(ds) == 8 and x.shape == (8, 16, 16, 3) and 0 <= x.min() and x.max() <= 1
        assert ds.labels[np.arange(3)].shape == (3,)
        celeb = datasets.load_dataset("celeb_a", "test", 8)  # 218x178 -> center square -> 8x8
        assert celeb.get([0]).shape == (1, 8, 8, 3)
    with tfds.testing.mock_data(num_examples=0, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(ValueError, match="empty"):
            datasets.load_dataset("cifar10", "train", 16)


# ----------------------------------------------------------------------------- folder of your own images
def _write_photos(folder, n=12):
    from PIL import Image

    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = rng.integers(20, 60, size=2)
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr if i % 3 else arr[..., 0])  # some gray files
        img.save(folder / (f"img{i:02d}." + ("png" if i % 2 else "jpg")))


def test_folder_dataset_split_is_stable_and_cached(tmp_path):
    from asmr_jax import datasets

    _write_photos(tmp_path / "photos")
    train = datasets.load_dataset(f"folder:{tmp_path / 'photos'}", "train", 16)
    test = datasets.load_dataset(f"folder:{tmp_path / 'photos'}", "test", 16, test_fraction=0.3)
    train30 = datasets.load_dataset(f"folder:{tmp_path / 'photos'}", "train", 16, test_fraction=0.3)
    names = datasets.load_dataset(f"folder:{tmp_path / 'photos'}", "all", 16).files
    assert len(names) == 12 and train.files == [n for n in names if datasets.folder_split(n) == "train"]
    assert set(test.files).isdisjoint(train30.files) and len(test) + len(train30) == 12
    assert train.get([0]).shape == (1, 16, 16, 3) and train.get(np.arange(len(train))).max() <= 1.0
    # the split of a name depends on that name alone: adding files moves nothing
    before = {n: datasets.folder_split(n, 0.3) for n in test.files + train30.files}
    _write_photos(tmp_path / "photos", n=20)
    grown = datasets.load_dataset(f"folder:{tmp_path / 'photos'}", "test", 16, test_fraction=0.3)
    assert set(test.files) <= set(grown.files)
    assert all(datasets.folder_split(n, 0.3) == s for n, s in before.items())
    cache = tmp_path / "photos" / datasets.CACHE_DIR / "images-16.npy"
    assert cache.is_file()


def test_folder_cache_is_rebuilt_when_a_file_changes(tmp_path):
    from PIL import Image

    from asmr_jax import datasets

    _write_photos(tmp_path / "p", n=4)
    a = datasets.load_dataset(f"folder:{tmp_path / 'p'}", "all", 8)
    cache = tmp_path / "p" / datasets.CACHE_DIR / "images-8.npy"
    stamp = cache.stat().st_mtime_ns
    b = datasets.load_dataset(f"folder:{tmp_path / 'p'}", "all", 8)  # cache hit: not rewritten
    assert cache.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(a.get(np.arange(4)), b.get(np.arange(4)))
    Image.fromarray(np.full((30, 40, 3), 255, np.uint8)).save(tmp_path / "p" / a.files[0])
    c = datasets.load_dataset(f"folder:{tmp_path / 'p'}", "all", 8)
    np.testing.assert_allclose(c.get([0]), 1.0)  # the new white image, not the cached one
    assert cache.stat().st_mtime_ns != stamp


def test_folder_errors_name_the_problem(tmp_path):
    from asmr_jax import datasets

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        datasets.load_dataset(f"folder:{tmp_path / 'empty'}", "train", 8)
    with pytest.raises(ValueError, match="no such directory"):
        datasets.load_dataset(f"folder:{tmp_path / 'missing'}", "train", 8)
    _write_photos(tmp_path / "bad", n=3)
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png"):
        datasets.load_dataset(f"folder:{tmp_path / 'bad'}", "train", 8)
    with pytest.raises(ValueError, match="splits"):
        datasets.load_dataset(f"folder:{tmp_path / 'empty'}", "validation", 8)


def test_augment_is_a_symmetry_of_the_square_and_a_channel_order_drawn_from_seed_and_step():
    from asmr_jax.imageset import augment, augment_draws

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(64, 5, 5, 3)).astype(np.float32)
    draws = augment_draws(7, 64, 3, seed=1)
    assert draws.shape == (64, 2) and set(draws[:, 0]) == set(range(8)) and set(draws[:, 1]) <= set(range(6))
    np.testing.assert_array_equal(draws, augment_draws(7, 64, 3, seed=1))
    assert not np.array_equal(draws, augment_draws(8, 64, 3, seed=1))
    y = augment(x, draws)
    for img, out in zip(x, y):
        np.testing.assert_array_equal(np.sort(img, axis=None), np.sort(out, axis=None))  # the same pixels
        candidates = [np.rot90(m, k, axes=(0, 1))[..., list(order)] for m in (img, img[:, ::-1]) for k in range(4)
                      for order in itertools.permutations(range(3))]
        assert any(np.array_equal(out, c) for c in candidates)
    identity = np.zeros((64, 2), int)
    np.testing.assert_array_equal(augment(x, identity), x)
    with pytest.raises(ValueError, match="square"):
        augment(np.zeros((2, 4, 5, 3)), identity[:2])
