"""Functasets: the latent of every image of a split, in a file numpy alone can read.

File format (``.npz``, written atomically, read with ``np.load(path)``; no pickles):

    format      str      "asmr-jax-functaset"
    version     int      1
    latents     float32  [n, D]   latent after ``steps`` inner steps from 0
    psnr        float64  [n]      PSNR (dB) of the clipped render against the image
    indices     int64    [n]      image index in the split
    labels      int64    [n]      dataset label, or -1 where the dataset has none
    config      str      JSON: {"meta": MetaModel config, "network": id of the producing network
                                (:func:`meta.compress.model_id` hex: its config and every shared
                                parameter), "dataset", "split", "resolution", "data_dir", "steps",
                                "checkpoint", "step"}

Every consumer (``meta-decode``, ``codec-fit --functaset``) checks ``network`` against the
checkpoint it is given and refuses a functaset made by another network, even one of the
same configuration (another seed or step).

``meta-decode`` renders latents back with the checkpoint's shared parameters.
"""

from __future__ import annotations

import json
import os

import numpy as np

from meta import inference
from meta.checkpoint import load as load_checkpoint
from meta.checkpoint import read_meta_json

FORMAT = "asmr-jax-functaset"
VERSION = 2
KEYS = ("format", "version", "latents", "psnr", "indices", "labels", "config")


def encode_split(checkpoint, split: str = "test", out=None, dataset: str | None = None, data_dir=None,
                 steps: int | None = None, limit: int | None = None, chunk: int = 64, overwrite: bool = False,
                 progress: bool = True, step: int | None = None) -> dict:
    """Fits the latent of every image of ``split`` and (optionally) writes ``out``.

    Args:
      checkpoint: meta-training workdir or exported folder (see :func:`meta.checkpoint.load`).
      dataset: dataset name (default: the one the checkpoint was trained on).
      steps: inner steps (default the checkpoint's ``k``).
      step: checkpoint step of a training workdir (default the latest).
      limit: encode only the first ``limit`` images.

    Returns:
      the arrays of the file format (see module docstring) as a dict.
    """
    from asmr_jax.datasets import load_dataset

    if out is not None and os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if out is not None and os.path.isdir(out):
        raise IsADirectoryError(f"--out {out} is a directory; give the path of the .npz file to write")
    if out is not None and os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    meta, params = load_checkpoint(checkpoint, step)
    train_cfg = read_meta_json(checkpoint).get("train", {})
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
        z, p = inference.fit_latents(meta, params, ds.get(idx), steps=steps, chunk=chunk)
        latents.append(z)
        psnrs.append(p)
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    labels = np.full(n, -1, np.int64)
    if ds.labels is not None:
        labels = np.asarray(ds.labels[np.arange(n)], np.int64)
    arrays = build(meta, params, np.concatenate(latents), np.concatenate(psnrs), labels=labels, dataset=dataset,
                   split=split, resolution=meta.shape[0], data_dir=data_dir, steps=steps,
                   checkpoint=os.path.abspath(os.fspath(checkpoint)), step=step)
    if out is not None:
        save_functaset(out, arrays, overwrite=overwrite)
    return arrays


def build(meta, params, latents, psnr, indices=None, labels=None, **config) -> dict:
    """The arrays of a functaset of ``latents [n, D]`` made by ``(meta, params)``; ``config``
    adds fields (dataset, split, ...) to the stored config."""
    latents = np.asarray(latents, np.float32)
    n = len(latents)
    config = {"meta": meta.config(), "network": network_id(meta, params), **config}
    return {"format": np.asarray(FORMAT), "version": np.asarray(VERSION, np.int64), "latents": latents,
            "psnr": np.asarray(psnr, np.float64), "indices": np.arange(n, dtype=np.int64) if indices is None
            else np.asarray(indices, np.int64), "labels": np.full(n, -1, np.int64) if labels is None
            else np.asarray(labels, np.int64), "config": np.asarray(json.dumps(config))}


def network_id(meta, params) -> str:
    """Identity of the network that produced (or may consume) a functaset: config + parameters."""
    from meta.compress import model_id

    return model_id(params, meta).hex()


def check_network(data: dict, meta, params, path, checkpoint):
    """Raises ``ValueError`` unless functaset ``data`` was made by this checkpoint's network."""
    want, have = network_id(meta, params), data["config"].get("network")
    if have != want:
        made = data["config"].get("checkpoint")
        raise ValueError(f"functaset {path} was made by network {have} ({made}), but {checkpoint} holds network "
                         f"{want}: its latents would render wrong images; encode it again with this checkpoint")


def save_functaset(path, arrays: dict, overwrite: bool = False):
    """Writes ``arrays`` (the format's keys) to ``path`` atomically (temp file + rename)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise ValueError(f"functaset is missing {missing}")
    from asmr_jax.io import atomic_write

    atomic_write(path, lambda f: np.savez(f, **{k: arrays[k] for k in KEYS}))


def load_functaset(path) -> dict:
    """Reads a functaset; ``config`` is returned parsed (a dict). Raises ``ValueError`` if foreign."""
    path = os.fspath(path)
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"cannot read functaset {path} (truncated or damaged?): {type(e).__name__}: {e}") from None
    if str(data.get("format", "")) != FORMAT:
        raise ValueError(f"{path} is not a functaset (format {data.get('format')!r}, expected {FORMAT!r})")
    if int(data["version"]) != VERSION:
        raise ValueError(f"{path} has functaset version {int(data['version'])}, this library reads {VERSION}")
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise ValueError(f"functaset {path} lacks {missing}")
    try:
        data["config"] = json.loads(str(data["config"]))
    except json.JSONDecodeError as e:
        raise ValueError(f"functaset {path} has a damaged config: {e}") from None
    return data


def decode_functaset(path, checkpoint, out_dir=None, limit: int | None = None, overwrite: bool = False):
    """Renders the latents of functaset ``path`` with ``checkpoint``.

    Writes ``out_dir/NNNNN.png`` (by image index) and ``out_dir/grid.png`` (first 16)
    atomically when ``out_dir`` is given. Returns images ``[n, H, W, C]`` on ``[0, 1]``.
    """
    from asmr_jax.data import write_png
    from asmr_jax.io import atomic_dir
    from meta.train import write_grid

    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be >= 1 latents, got {limit}")
    data = load_functaset(path)
    meta, params = load_checkpoint(checkpoint)
    check_network(data, meta, params, path, checkpoint)
    latents = data["latents"][:limit] if limit is not None else data["latents"]
    images = inference.render_latents(meta, params, latents)
    if out_dir is not None:
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            for i, img in zip(data["indices"], images):
                write_png(os.path.join(tmp, f"{int(i):05d}.png"), img)
            write_grid(os.path.join(tmp, "grid.png"), [images[:16]])
    return images
