"""Image datasets for meta-learning and batch fitting: one interface, three sources.

:func:`load_dataset` returns an :class:`ImageDataset`: ``len(ds)`` images of
``ds.shape = (H, W)`` with ``ds.channels`` values each, read as float32 on ``[0, 1]``
with ``ds.get(indices) -> [n, H, W, C]``, or streamed with ``ds.batches(...)``.

Sources:

* ``"patches"`` (offline, the default): natural-image patches cut from the photos that
  scikit-image ships in its wheel. Every photo is downscaled by each factor in
  ``scales`` (box filter; a downscaled copy packs more content into a patch) and tiled
  into non-overlapping ``resolution x resolution`` patches; near-constant patches
  (pixel std below ``min_std``) are dropped, and a photo with more than
  ``max_per_photo`` (200) patches keeps an evenly spaced subset, so the large, dark
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
import itertools
import math
import queue
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np

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


class ImageDataset:
    """A random-access set of same-sized images.

    Args:
      name: dataset name (``"patches"``, ``"lfw"``, a TFDS name, or anything for arrays).
      split: split name.
      shape: ``(H, W)``.
      channels: values per pixel.
      size: number of images.
      loader: ``loader(indices [n] int64) -> float32 [n, H, W, C]`` on ``[0, 1]``.
      labels: optional ``[size]`` integer labels (e.g. CIFAR-10 classes).
    """

    def __init__(self, name: str, split: str, shape, channels: int, size: int,
                 loader: Callable[[np.ndarray], np.ndarray], labels: np.ndarray | None = None):
        self.name, self.split = name, split
        self.shape = tuple(int(s) for s in shape)
        self.channels = int(channels)
        self._size = int(size)
        self._loader = loader
        self.labels = labels  # None, an array, or a lazy [size] sequence
        if self._size < 1:
            raise ValueError(f"split {split!r} of dataset {name!r} is empty (0 images)")

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"ImageDataset({self.name!r}, split={self.split!r}, {len(self)} x {self.shape} x {self.channels})"

    def get(self, indices) -> np.ndarray:
        """Images ``indices`` (int or sequence) as float32 ``[n, H, W, C]`` on ``[0, 1]``."""
        idx = np.atleast_1d(np.asarray(indices, np.int64))
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices must be in [0, {len(self)}), got range [{idx.min()}, {idx.max()}]")
        out = np.asarray(self._loader(idx), np.float32)
        if out.shape != (idx.size, *self.shape, self.channels):
            raise ValueError(f"{self!r} loaded shape {out.shape}, expected {(idx.size, *self.shape, self.channels)}")
        return out

    def steps_per_epoch(self, batch_size: int, drop_remainder: bool = True) -> int:
        n = len(self)
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if drop_remainder and batch_size > n:
            raise ValueError(f"batch size {batch_size} exceeds the {n} images of {self!r}")
        return n // batch_size if drop_remainder else -(-n // batch_size)

    def batch_indices(self, step: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                      drop_remainder: bool = True) -> np.ndarray:
        """Indices ``[B]`` of batch number ``step`` (0-based, counted over epochs).

        A pure function of its arguments: epoch ``e = step // steps_per_epoch`` uses the
        permutation drawn from ``(seed, e)``.
        """
        spe = self.steps_per_epoch(batch_size, drop_remainder)
        epoch, pos = divmod(int(step), spe)
        order = np.arange(len(self))
        if shuffle:
            order = np.random.default_rng([int(seed), epoch]).permutation(len(self))
        return order[pos * batch_size:(pos + 1) * batch_size]

    def batches(self, batch_size: int, shuffle: bool = True, seed: int = 0, drop_remainder: bool = True,
                epochs: int | None = None, start_step: int = 0) -> Iterator[np.ndarray]:
        """Yields float32 ``[B, H, W, C]`` batches from batch number ``start_step`` on.

        ``epochs=None`` repeats forever. The last partial batch of an epoch is dropped
        when ``drop_remainder`` (otherwise it is yielded smaller).
        """
        spe = self.steps_per_epoch(batch_size, drop_remainder)
        step = int(start_step)
        while epochs is None or step < epochs * spe:
            yield self.get(self.batch_indices(step, batch_size, shuffle, seed, drop_remainder))
            step += 1


class Prefetcher:
    """Iterates ``(t, make(t))`` for ``t`` in ``[start, stop)``, computing ``depth`` items ahead
    in a background thread (loading, decoding and host-to-device transfer overlap the
    consumer's work). Items come in order, exactly as a plain loop would make them; an
    exception in ``make`` is raised by the iterator at that item. :meth:`close` (or leaving
    a ``with`` block) stops the thread. ``depth=0`` makes each item when it is asked for,
    in the caller's thread (no overlap: the plain loop, for comparisons).

    >>> with Prefetcher(lambda t: t * t, 0, 4) as it:
    ...     list(it)
    [(0, 0), (1, 1), (2, 4), (3, 9)]
    """

    _DONE = object()

    def __init__(self, make: Callable[[int], object], start: int, stop: int, depth: int = 2):
        if int(depth) < 0:
            raise ValueError(f"prefetch depth must be >= 0, got {depth}")
        self._plain = (make, int(start), int(stop)) if int(depth) == 0 else None
        self._stop = threading.Event()
        self._thread = None
        if self._plain is None:
            self._queue: queue.Queue = queue.Queue(maxsize=int(depth))
            self._thread = threading.Thread(target=self._work, args=(make, int(start), int(stop)), daemon=True)
            self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, make, start, stop):
        for t in range(start, stop):
            try:
                item = (t, make(t), None)
            except BaseException as e:  # handed to the consumer
                self._put((t, None, e))
                return
            if not self._put(item):
                return
        self._put(self._DONE)

    def __iter__(self):
        if self._plain is not None:
            make, start, stop = self._plain
            for t in range(start, stop):
                yield t, make(t)
            return
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            t, value, error = item
            if error is not None:
                raise error
            yield t, value

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def augment_draws(step: int, batch_size: int, channels: int, seed: int = 0) -> np.ndarray:
    """``[batch_size, 2]`` int draws for :func:`augment` of global batch ``step``: a symmetry
    of the square (0..7) and a channel order (0..channels! - 1), from ``(seed, step)`` alone,
    so that every process (each augmenting only its rows) and every resume draws the same."""
    rng = np.random.default_rng([int(seed), int(step), 0xA5])
    return np.stack([rng.integers(0, 8, batch_size), rng.integers(0, math.factorial(channels), batch_size)], 1)


def augment(images: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Images ``[n, H, W, C]`` turned by one of the square's 8 symmetries each (rotations by
    90 degrees times a mirror; ``H == W``) and their channels permuted: ``draws`` from
    :func:`augment_draws`. Natural images are about as likely under every one of these."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"augment takes square images [n, H, H, C], got shape {images.shape}")
    orders = list(itertools.permutations(range(images.shape[-1])))
    out = np.empty_like(images)
    for i, (sym, perm) in enumerate(np.asarray(draws)):
        img = np.rot90(images[i], k=int(sym) % 4, axes=(0, 1))
        out[i] = (img[:, ::-1] if sym >= 4 else img)[..., orders[int(perm)]]
    return out


def from_array(images, name: str = "array", split: str = "train", labels=None) -> ImageDataset:
    """An :class:`ImageDataset` over in-memory signals ``[n, *shape, C]`` on ``[0, 1]``
    (images ``[n, H, W, C]``; audio ``[n, T, C]`` and video ``[n, F, H, W, C]`` work too)."""
    images = np.asarray(images, np.float32)
    if images.ndim < 3:
        raise ValueError(f"{name}/{split} must have shape [n, *shape, C], got {images.shape}")
    check_images(images, f"{name}/{split}", spatial_dims=images.ndim - 2)
    labels = None if labels is None else np.asarray(labels)
    return ImageDataset(name, split, images.shape[1:-1], images.shape[-1], len(images),
                        lambda idx: images[idx], labels)


def check_images(images, what: str = "images", spatial_dims: int = 2):
    """Raises ``ValueError`` unless ``images`` is a finite ``[n, *shape, C]`` batch on ``[0, 1]``
    with ``spatial_dims`` spatial axes (2 for images: ``[n, H, W, C]``)."""
    images = np.asarray(images)
    if images.ndim != spatial_dims + 2:
        layout = "[n, H, W, C]" if spatial_dims == 2 else f"[n, <{spatial_dims} spatial axes>, C]"
        raise ValueError(f"{what} must have shape {layout}, got {images.shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{what} is empty (shape {images.shape})")
    bad = ~np.isfinite(images)
    if bad.any():
        raise ValueError(f"{what} has {int(bad.sum())} NaN/inf values")
    if images.min() < 0.0 or images.max() > 1.0:
        raise ValueError(f"{what} has values in [{images.min()}, {images.max()}], expected [0, 1]")


def load_dataset(name: str = "patches", split: str = "train", resolution: int = 32, data_dir=None,
                 **kwargs) -> ImageDataset:
    """Loads a dataset by name (see the module docstring).

    Args:
      name: ``"patches"``, ``"lfw"``, or a TFDS image dataset name.
      split: ``"train"``/``"test"`` (bundled sets); any TFDS split string otherwise.
      resolution: output ``H = W``.
      data_dir: TFDS data directory (TFDS only).
      **kwargs: ``patches``: ``scales`` (2, 3, 4), ``min_std`` (0.02), ``max_per_photo``
        (200), ``photos`` (a dict split -> names);
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
                 max_per_photo: int):
    out, src = [], []
    for name in photos:
        first = len(out)
        img = _photo(name)
        for s in scales:
            h, w = img.shape[0] // s, img.shape[1] // s
            small = _resize(img, (h, w), "box") if s > 1 else img.astype(np.float32) / 255.0
            for i in range(h // resolution):
                for j in range(w // resolution):
                    p = small[i * resolution:(i + 1) * resolution, j * resolution:(j + 1) * resolution]
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
             photos: dict | None = None, max_per_photo: int = 200) -> ImageDataset:
    photos = photos or {"train": PATCH_TRAIN_PHOTOS, "test": PATCH_TEST_PHOTOS}
    if split not in photos:
        raise ValueError(f"dataset 'patches' has splits {sorted(photos)}, got {split!r}")
    scales = tuple(int(s) for s in scales)
    if not scales or min(scales) < 1:
        raise ValueError(f"scales must be positive integers, got {scales}")
    arr, src = _patch_array(tuple(photos[split]), resolution, scales, float(min_std), int(max_per_photo))
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
