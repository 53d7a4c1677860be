"""Image datasets for meta-learning and batch fitting: one interface, three sources.

:func:`load_dataset` returns an :class:`ImageDataset`: ``len(ds)`` images of
``ds.shape = (H, W)`` with ``ds.channels`` values each, read as float32 on ``[0, 1]``
with ``ds.get(indices) -> [n, H, W, C]``, or streamed with ``ds.batches(...)``.

Sources:

* ``"patches"`` (offline, the default): natural-image patches cut from the photos that
  scikit-image ships in its wheel. Every photo is downscaled by each factor in
  ``scales`` (box filter; a downscaled copy packs more content into a patch) and tiled
  into non-overlapping ``resolution x resolution`` patches (or, with ``stride``, patches
  whose corners are ``stride`` pixels apart: overlapping ones, ``(resolution / stride)^2``
  times as many, a denser training set from the same photos); near-constant patches
  (pixel std below ``min_std``) are dropped, and a photo with more than
  ``max_per_photo`` (200, scaled by the same factor under ``stride``) patches keeps an
  evenly spaced subset, so the large, dark
  retina and Hubble photos do not dominate. Gray photos are replicated to RGB. The
  split is by source photo, so test patches come from photos never trained on:

  - train: astronaut, rocket, motorcycle_left, motorcycle_right (a stereo pair, kept
    together), hubble_deep_field, retina, immunohistochemistry, colorwheel, and the gray
    camera, brick, grass, gravel, moon, coins, cell;
  - test: coffee, chelsea (RGB photos of a cup and of a cat).

* ``"lfw"``: scikit-image's ``lfw_subset()`` (200 gray 25x25 crops, the first 100 faces,
  the last 100 non-faces), resized (bicubic) to ``resolution``, one channel; every 5th
  image (index % 5 == 0) is in the test split (40 images), the rest in train (160).

* ``"folder:DIR"``: your own PNG/JPEG files in ``DIR`` (any sizes; not recursive),
  center-cropped to a square and resized (bicubic) to ``resolution``, RGB (gray files
  replicated). The split is a stable hash of the file name (SHA-1; a tenth, by default,
  in ``test``), so adding files never moves an old file to the other split. The decoded
  images are cached in ``DIR/.asmr-cache/`` (one ``.npy`` per resolution with a JSON list
  of the files it holds: names, sizes, modification times) and rebuilt when any of those
  change; an empty folder or an unreadable file is a ``ValueError`` naming it.

* any TFDS image dataset (``cifar10``, ``celeb_a``, ``celeb_a_hq/256``, ...): read with
  ``tfds.data_source`` from already prepared array_record files under ``data_dir``
  (TensorFlow is not needed for reading), center-cropped to a square and resized
  (bicubic) to ``resolution``. Prepare the files on a machine with network access and
  TensorFlow: ``pip install tensorflow-cpu tensorflow-datasets`` then
  ``tfds build cifar10 --data_dir DIR --file_format array_record`` and copy ``DIR``.

Batches are a pure function of ``(seed, step)``: :meth:`ImageDataset.batch_indices`
draws one permutation per epoch from ``(seed, epoch)``, so a resumed run sees exactly the
batches an uninterrupted run would.

>>> ds = load_dataset("patches", split="test", resolution=32)
>>> ds.get([0, 1]).shape
(2, 32, 32, 3)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from asmr_jax.imageset import ImageDataset

PATCH_TRAIN_PHOTOS = (
    "astronaut", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field", "retina",
    "immunohistochemistry", "colorwheel", "camera", "brick", "grass", "gravel", "moon", "coins", "cell",
)
PATCH_TEST_PHOTOS = ("coffee", "chelsea")
BUNDLED = ("patches", "lfw")
FOLDER_PREFIX = "folder:"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CACHE_DIR = ".asmr-cache"
LFW_TEST_EVERY = 5


def load_dataset(name: str = "patches", split: str = "train", resolution: int = 32, data_dir=None,
                 **kwargs) -> ImageDataset:
    """Loads a dataset by name (see the module docstring).

    Args:
      name: ``"patches"``, ``"lfw"``, or a TFDS image dataset name.
      split: ``"train"``/``"test"`` (bundled sets); any TFDS split string otherwise.
      resolution: output ``H = W``.
      data_dir: TFDS data directory (TFDS only).
      **kwargs: ``patches``: ``scales`` (2, 3, 4), ``min_std`` (0.02), ``max_per_photo``
        (200), ``stride`` (pixels between patch corners; default ``resolution``), ``photos``
        (a dict split -> names);
        TFDS: ``image_key`` (default ``"image"``), ``label_key`` (default ``"label"``).

    Returns:
      An :class:`ImageDataset`.
    """
    resolution = int(resolution)
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    if name == "patches":
        return _patches(split, resolution, **kwargs)
    if name == "lfw":
        return _lfw(split, resolution, **kwargs)
    if str(name).startswith(FOLDER_PREFIX):
        return _folder(str(name)[len(FOLDER_PREFIX):], split, resolution, **kwargs)
    return _tfds(name, split, resolution, data_dir, **kwargs)


# ----------------------------------------------------------------------------- bundled
def _resize(img: np.ndarray, size: tuple[int, int], resample: str = "bicubic") -> np.ndarray:
    """uint8 or [0, 1] image ``[h, w, c]`` -> float32 ``[H, W, c]`` on [0, 1] (PIL, per channel)."""
    from PIL import Image

    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    filt = {"bicubic": Image.BICUBIC, "box": Image.BOX}[resample]
    chans = [np.asarray(Image.fromarray(img[..., c]).resize((size[1], size[0]), filt)) for c in range(img.shape[-1])]
    return np.stack(chans, axis=-1).astype(np.float32) / 255.0


@functools.lru_cache(maxsize=64)
def _photo(name: str) -> np.ndarray:
    """A bundled photo as uint8 RGB ``[h, w, 3]`` (gray replicated, alpha dropped)."""
    import skimage.data
    from skimage.util import img_as_ubyte

    if name in ("motorcycle_left", "motorcycle_right"):  # one stereo pair: (left, right, disparity)
        img = skimage.data.stereo_motorcycle()[0 if name.endswith("left") else 1]
    else:
        img = getattr(skimage.data, name)()
    img = img_as_ubyte(np.asarray(img))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


@functools.lru_cache(maxsize=16)
def _patch_array(photos: tuple[str, ...], resolution: int, scales: tuple[int, ...], min_std: float,
                 max_per_photo: int, stride: int):
    out, src = [], []
    for name in photos:
        first = len(out)
        img = _photo(name)
        for s in scales:
            h, w = img.shape[0] // s, img.shape[1] // s
            small = _resize(img, (h, w), "box") if s > 1 else img.astype(np.float32) / 255.0
            for i in range(0, h - resolution + 1, stride):
                for j in range(0, w - resolution + 1, stride):
                    p = small[i:i + resolution, j:j + resolution]
                    if p.std() >= min_std:
                        out.append(p)
                        src.append(name)
        if len(out) - first > max_per_photo:  # keep an evenly spaced subset of a large photo's patches
            keep = np.linspace(first, len(out) - 1, max_per_photo).round().astype(int)
            out[first:] = [out[k] for k in keep]
            src[first:] = [src[k] for k in keep]
    if not out:
        return np.zeros((0, resolution, resolution, 3), np.float32), ()
    return np.stack(out).astype(np.float32), tuple(src)


def _patches(split: str, resolution: int, scales: Sequence[int] = (2, 3, 4), min_std: float = 0.02,
             photos: dict | None = None, max_per_photo: int = 200, stride: int | None = None) -> ImageDataset:
    photos = photos or {"train": PATCH_TRAIN_PHOTOS, "test": PATCH_TEST_PHOTOS}
    if split not in photos:
        raise ValueError(f"dataset 'patches' has splits {sorted(photos)}, got {split!r}")
    scales = tuple(int(s) for s in scales)
    if not scales or min(scales) < 1:
        raise ValueError(f"scales must be positive integers, got {scales}")
    stride = resolution if stride is None else int(stride)
    if not 1 <= stride <= resolution:
        raise ValueError(f"stride must be in [1, resolution = {resolution}] pixels, got {stride}")
    cap = round(int(max_per_photo) * (resolution / stride) ** 2)
    arr, src = _patch_array(tuple(photos[split]), resolution, scales, float(min_std), cap, stride)
    if len(arr) == 0:
        raise ValueError(f"split {split!r} of 'patches' is empty at resolution {resolution} with scales {scales}: "
                         f"the photos {tuple(photos[split])} are too small; use a smaller resolution or scale")
    ds = ImageDataset("patches", split, (resolution, resolution), 3, len(arr), lambda idx: arr[idx])
    ds.sources = src  # source photo of each patch
    return ds


def _lfw(split: str, resolution: int) -> ImageDataset:
    import skimage.data

    if split not in ("train", "test"):
        raise ValueError(f"dataset 'lfw' has splits ['test', 'train'], got {split!r}")
    faces = np.asarray(skimage.data.lfw_subset(), np.float64)  # [200, 25, 25] on [0, 1]
    idx = np.arange(len(faces))
    keep = idx[(idx % LFW_TEST_EVERY == 0) == (split == "test")]
    arr = np.stack([_resize(faces[i][..., None], (resolution, resolution)) for i in keep])
    labels = (keep < 100).astype(np.int64)  # 1 = face, 0 = not a face
    ds = ImageDataset("lfw", split, (resolution, resolution), 1, len(arr), lambda i: arr[i], labels)
    ds.indices = keep
    return ds


# ----------------------------------------------------------------------------- your own images
def folder_split(name: str, test_fraction: float = 0.1) -> str:
    """``"train"`` or ``"test"`` for a file name: a stable SHA-1 hash, independent of the other files."""
    import hashlib

    h = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") / 2.0**64
    return "test" if h < test_fraction else "train"


def _folder_files(root: str) -> list[tuple[str, int, int]]:
    import os

    if not os.path.isdir(root):
        raise ValueError(f"folder dataset {root!r}: no such directory")
    files = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES):
            st = entry.stat()
            files.append((entry.name, int(st.st_size), int(st.st_mtime_ns)))
    if not files:
        raise ValueError(f"folder dataset {root!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _decode_square(path: str, resolution: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ValueError(f"folder dataset: cannot read image {path}: {type(e).__name__}: {e}") from None
    return np.round(_resize(_center_square(img), (resolution, resolution)) * 255.0).astype(np.uint8)


def _folder_cache(root: str, resolution: int) -> tuple[list[str], np.ndarray]:
    """All images of ``root`` as uint8 ``[n, r, r, 3]`` with their names, from the cache if current."""
    import io as _io
    import json
    import os

    from asmr_jax.io import atomic_write

    files = _folder_files(root)
    cache = os.path.join(root, CACHE_DIR)
    base = os.path.join(cache, f"images-{resolution}")
    listing = [list(f) for f in files]
    try:
        with open(base + ".json") as f:
            cached = json.load(f)
        if cached.get("files") == listing:
            arr = np.load(base + ".npy", allow_pickle=False)
            if arr.shape == (len(files), resolution, resolution, 3) and arr.dtype == np.uint8:
                return [f[0] for f in files], arr
    except (OSError, ValueError, json.JSONDecodeError):
        pass  # missing, stale or damaged: rebuilt below
    arr = np.stack([_decode_square(os.path.join(root, name), resolution) for name, _, _ in files])
    try:
        buf = _io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        atomic_write(base + ".npy", buf.getvalue())
        atomic_write(base + ".json", json.dumps({"files": listing, "resolution": resolution}))
    except OSError:
        pass  # a read-only folder: no cache, same images
    return [f[0] for f in files], arr


def _folder(root: str, split: str, resolution: int, test_fraction: float = 0.1) -> ImageDataset:
    import os

    if split not in ("train", "test", "all"):
        raise ValueError(f"folder dataset has splits 'train', 'test' and 'all', got {split!r}")
    root = os.path.abspath(os.path.expanduser(root))
    names, arr = _folder_cache(root, resolution)
    keep = np.array([split == "all" or folder_split(n, test_fraction) == split for n in names])
    if not keep.any():
        raise ValueError(f"folder dataset {root!r}: split {split!r} is empty ({len(names)} files, test fraction "
                         f"{test_fraction}); add images or use split 'all'")
    data = arr[keep]
    ds = ImageDataset(f"{FOLDER_PREFIX}{root}", split, (resolution, resolution), 3, len(data),
                      lambda idx: data[idx].astype(np.float32) / 255.0)
    ds.files = [n for n, k in zip(names, keep) if k]
    return ds


# ----------------------------------------------------------------------------- TFDS
def _center_square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    return img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def _prepare_hint(name: str, data_dir) -> str:
    where = data_dir or "~/tensorflow_datasets"
    return (f"prepare it on a machine with network access and TensorFlow "
            f"(pip install tensorflow-cpu tensorflow-datasets; "
            f"tfds build {name} --data_dir {where} --file_format array_record), "
            f"then copy the folder here and pass --data-dir {where}")


def _tfds(name: str, split: str, resolution: int, data_dir, image_key: str = "image",
          label_key: str = "label") -> ImageDataset:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - tfds is a dependency
        raise ValueError(f"dataset {name!r} needs tensorflow-datasets: {e}") from None
    known = f"; bundled offline datasets: {', '.join(BUNDLED)}"
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises DatasetNotFoundError, split errors, file-format errors, ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        try:
            prepared = tfds.builder(name, data_dir=data_dir).is_prepared()
        except Exception as e2:  # unknown name, bad config
            raise ValueError(f"unknown dataset {name!r} ({type(e2).__name__}: {str(e2).splitlines()[0][:200]})"
                             f"{known}") from None
        if not prepared:
            raise ValueError(f"TFDS dataset {name!r} is not prepared under data_dir {data_dir!r}; "
                             f"{_prepare_hint(name, data_dir)}") from None
        raise ValueError(f"cannot open TFDS dataset {name!r} split {split!r} (data_dir {data_dir!r}): "
                         f"{type(e).__name__}: {msg[:300]} (reading without TensorFlow needs the "
                         f"array_record file format: tfds build {name} --file_format array_record){known}") from None
    n = len(source)
    if n == 0:
        raise ValueError(f"split {split!r} of TFDS dataset {name!r} is empty (0 images)")
    first = source[0]
    if image_key not in first:
        raise ValueError(f"TFDS dataset {name!r} has no {image_key!r} feature; features: {sorted(first)}")
    channels = int(np.asarray(first[image_key]).shape[-1]) if np.asarray(first[image_key]).ndim == 3 else 1

    def loader(idx):
        out = []
        for i in idx:
            img = np.asarray(source[int(i)][image_key])
            if img.ndim == 2:
                img = img[..., None]
            out.append(_resize(_center_square(img), (resolution, resolution)))
        return np.stack(out) if out else np.zeros((0, resolution, resolution, channels), np.float32)

    labels = None
    if label_key in first and np.ndim(first[label_key]) == 0:
        labels = _LazyLabels(source, label_key, n)
    return ImageDataset(name, split, (resolution, resolution), channels, n, loader, labels)


class _LazyLabels:
    """``labels[i]`` read on demand from a TFDS data source (avoids decoding every image)."""

    def __init__(self, source, key: str, n: int):
        self._source, self._key, self._n = source, key, n

    def __len__(self):
        return self._n

    def __getitem__(self, idx):
        idx = np.atleast_1d(np.asarray(idx, np.int64))
        return np.asarray([int(self._source[int(i)][self._key]) for i in idx], np.int64)

    def __array__(self, dtype=None, copy=None):
        return self[np.arange(self._n)].astype(dtype or np.int64)
