"""A set of same-sized signals read on demand: batches by ``(seed, step)``, a prefetching
thread, and the square's symmetries as augmentation.

:func:`asmr_jax.datasets.load_dataset` builds one by name; :func:`from_array` wraps arrays.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np


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
