"""Functasets: the latent of every image of a split, in a file numpy alone can read.

File format (``.npz``, written atomically, read with ``np.load(path)``; no pickles):

    format      str      "asmr-jax-functaset"
    version     int      1
    latents     float32  [n, D]   latent after ``steps`` inner steps from 0
    psnr        float64  [n]      PSNR (dB) of the clipped render against the image
    indices     int64    [n]      image index in the split
    labels      int64    [n]      dataset label, or -1 where the dataset has none
    config      str      JSON: {"meta": MetaModel config, "dataset", "split", "resolution",
                                "data_dir", "steps", "checkpoint"}

``meta-decode`` renders latents back with the checkpoint's shared parameters.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from meta import functa

FORMAT = "asmr-jax-functaset"
VERSION = 1
KEYS = ("format", "version", "latents", "psnr", "indices", "labels", "config")


def encode_split(checkpoint, split: str = "test", out=None, dataset: str | None = None, data_dir=None,
                 steps: int | None = None, limit: int | None = None, chunk: int = 64, overwrite: bool = False,
                 progress: bool = True) -> dict:
    """Fits the latent of every image of ``split`` and (optionally) writes ``out``.

    Args:
      checkpoint: meta-training workdir or exported folder (see :func:`meta.functa.load_meta_checkpoint`).
      dataset: dataset name (default: the one the checkpoint was trained on).
      steps: inner steps (default the checkpoint's ``k``).
      limit: encode only the first ``limit`` images.

    Returns:
      the arrays of the file format (see module docstring) as a dict.
    """
    from asmr_jax.datasets import load_dataset

    if out is not None and os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    meta, params = functa.load_meta_checkpoint(checkpoint)
    train_cfg = functa.read_meta_json(checkpoint).get("train", {})
    dataset = dataset or train_cfg.get("dataset") or "patches"
    data_dir = data_dir if data_dir is not None else train_cfg.get("data_dir")
    ds = load_dataset(dataset, split, meta.shape[0], data_dir)
    if ds.channels != meta.channels:
        raise ValueError(f"{dataset}/{split} has {ds.channels} channels, the checkpoint expects {meta.channels}")
    n = len(ds) if limit is None else min(int(limit), len(ds))
    if n < 1:
        raise ValueError(f"nothing to encode: limit {limit}")
    steps = meta.inner_steps if steps is None else int(steps)
    latents, psnrs = [], []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="meta-encode", unit="img", dynamic_ncols=True)
    for a in range(0, n, chunk):
        idx = np.arange(a, min(a + chunk, n))
        z, p = functa.fit_latents(meta, params, ds.get(idx), steps=steps, chunk=chunk)
        latents.append(z)
        psnrs.append(p)
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    labels = np.full(n, -1, np.int64)
    if ds.labels is not None:
        labels = np.asarray(ds.labels[np.arange(n)], np.int64)
    config = {"meta": meta.config(), "dataset": dataset, "split": split, "resolution": meta.shape[0],
              "data_dir": data_dir, "steps": steps, "checkpoint": os.path.abspath(os.fspath(checkpoint))}
    arrays = {"format": np.asarray(FORMAT), "version": np.asarray(VERSION, np.int64),
              "latents": np.concatenate(latents).astype(np.float32), "psnr": np.concatenate(psnrs),
              "indices": np.arange(n, dtype=np.int64), "labels": labels, "config": np.asarray(json.dumps(config))}
    if out is not None:
        save_functaset(out, arrays, overwrite=overwrite)
    return arrays


def save_functaset(path, arrays: dict, overwrite: bool = False):
    """Writes ``arrays`` (the format's keys) to ``path`` atomically (temp file + rename)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise ValueError(f"functaset is missing {missing}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: arrays[k] for k in KEYS})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_functaset(path) -> dict:
    """Reads a functaset; ``config`` is returned parsed (a dict). Raises ``ValueError`` if foreign."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"cannot read functaset {path}: {e}") from None
    if str(data.get("format", "")) != FORMAT:
        raise ValueError(f"{path} is not a functaset (format {data.get('format')!r}, expected {FORMAT!r})")
    if int(data["version"]) != VERSION:
        raise ValueError(f"{path} has functaset version {int(data['version'])}, this library reads {VERSION}")
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise ValueError(f"functaset {path} lacks {missing}")
    data["config"] = json.loads(str(data["config"]))
    return data


def decode_functaset(path, checkpoint, out_dir=None, limit: int | None = None, overwrite: bool = False):
    """Renders the latents of functaset ``path`` with ``checkpoint``.

    Writes ``out_dir/NNNNN.png`` (by image index) and ``out_dir/grid.png`` (first 16)
    atomically when ``out_dir`` is given. Returns images ``[n, H, W, C]`` on ``[0, 1]``.
    """
    from asmr_jax.io import atomic_dir, write_png
    from meta.train import write_grid

    data = load_functaset(path)
    meta, params = functa.load_meta_checkpoint(checkpoint)
    if data["config"].get("meta") != json.loads(json.dumps(meta.config())):
        raise ValueError(f"functaset {path} was made with model {data['config'].get('meta')}, "
                         f"but {checkpoint} holds {meta.config()}")
    latents = data["latents"][:limit] if limit is not None else data["latents"]
    images = functa.render_latents(meta, params, latents)
    if out_dir is not None:
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            for i, img in zip(data["indices"], images):
                write_png(os.path.join(tmp, f"{int(i):05d}.png"), img)
            write_grid(os.path.join(tmp, "grid.png"), [images[:16]])
    return images
