"""Meta-training run: data, sharding, checkpoints, evaluation, plots.

:func:`train` writes into ``workdir``::

    meta.json             format, model/meta config, training config (see meta.functa)
    checkpoints/<step>/   orbax CheckpointManager steps (items params, opt_state); last ``keep``
    history.json          loss/PSNR log (train, and test evals)
    metrics.json          final summary (status, steps, PSNRs, images/s, params, MACs)
    psnr.png              PSNR vs step (train batches and test evaluations)
    reconstructions.png   test targets (top) vs reconstructions after k inner steps (bottom)

Determinism: the model init comes from ``seed`` and batch ``t`` from
``dataset.batch_indices(t, batch_size, seed)``, so ``resume=True`` continues from the
latest checkpoint with exactly the parameters an uninterrupted run reaches. A
non-finite loss stops the run (status ``"diverged"``) without saving that step, so
the last good checkpoint stays the latest.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time

import jax
import numpy as np

from asmr_jax import macs, models, sharding
from asmr_jax.datasets import ImageDataset, check_images, load_dataset
from meta import functa

HISTORY = "history.json"
METRICS = "metrics.json"

# Fields of the training config that define a run (a resume must not change them).
RUN_KEYS = ("dataset", "data_dir", "resolution", "model", "width", "depth", "levels", "bases", "w0",
            "latent_dim", "inner_steps", "inner_lr", "batch_size", "lr", "seed")


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns (and writes to ``metrics.json``)."""

    workdir: str
    status: str  # "done" | "diverged" | "time_budget"
    step: int  # steps completed
    params: dict
    meta: functa.MetaModel
    metrics: dict
    history: list


def build_meta(model: str = "asmr", resolution: int = 32, channels: int = 3, width: int = 128,
               depth: int | None = None, levels: int | None = None, bases=None, w0: float = 30.0,
               latent_dim: int = 64, inner_steps: int = 3, inner_lr: float = 300.0) -> functa.MetaModel:
    """A :class:`~meta.functa.MetaModel` from flat keyword arguments (CLI/config friendly)."""
    shape = (int(resolution), int(resolution))
    net = models.build(model, shape, channels, width=width, depth=depth, levels=levels, bases=bases, w0=w0)
    return functa.MetaModel(net, latent_dim, inner_steps, inner_lr)


def _mesh_for(batch_size: int):
    """A data mesh over the most local devices that divide ``batch_size``."""
    devs = jax.devices()
    n = max(d for d in range(1, len(devs) + 1) if batch_size % d == 0)
    return sharding.data_mesh(devs[:n])


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _eval(meta, params, images, steps_list):
    out = {}
    for s in steps_list:
        _, p = functa.fit_latents(meta, params, images, steps=s)
        out[s] = float(np.mean(p))
    return out


def train(*, workdir, dataset: str | ImageDataset = "patches", test_dataset: ImageDataset | None = None,
          data_dir=None, resolution: int = 32, model: str = "asmr", width: int = 128, depth: int | None = None,
          levels: int | None = None, bases=None, w0: float = 30.0, latent_dim: int = 64, inner_steps: int = 3,
          inner_lr: float = 300.0, batch_size: int = 16, steps: int = 500, lr: float = 3e-4, seed: int = 0,
          resume: bool = False, eval_every: int = 100, eval_images: int = 64, eval_more_steps: int = 10,
          eval_at: tuple = (), checkpoint_every: int = 100, keep: int = 3, max_seconds: float | None = None,
          progress: bool = True, plots: bool = True, log=print) -> TrainResult:
    """Meta-trains a functa over ``dataset`` and writes ``workdir`` (see module docstring).

    Args:
      workdir: output folder. It must not hold checkpoints unless ``resume``.
      dataset: a dataset name for :func:`asmr_jax.datasets.load_dataset` (``train`` and
        ``test`` splits), or an :class:`ImageDataset` (then pass ``test_dataset`` too,
        or the train set is used for evaluation).
      steps: total outer steps (a resumed run continues up to this count).
      lr: Adam rate for all shared parameters.
      eval_every: test evaluation period (PSNR after ``inner_steps`` and after
        ``eval_more_steps`` inner steps on the first ``eval_images`` test images).
      eval_at: extra steps at which to evaluate.
      checkpoint_every: checkpoint period (plus one at the end).
      max_seconds: stop (and checkpoint) once this much training time has passed.

    Returns:
      a :class:`TrainResult`.
    """
    workdir = os.path.abspath(os.fspath(workdir))
    config = dict(dataset=dataset if isinstance(dataset, str) else dataset.name, data_dir=data_dir,
                  resolution=int(resolution), model=model, width=int(width), depth=depth, levels=levels,
                  bases=bases, w0=float(w0), latent_dim=int(latent_dim), inner_steps=int(inner_steps),
                  inner_lr=float(inner_lr), batch_size=int(batch_size), lr=float(lr), seed=int(seed))
    if int(steps) < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for name, val in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every), ("keep", keep)):
        if int(val) < 1:
            raise ValueError(f"{name} must be >= 1, got {val}")

    mgr_exists = os.path.isdir(os.path.join(workdir, functa.CHECKPOINTS))
    if resume:
        if not mgr_exists:
            raise ValueError(f"--resume: {workdir} has no {functa.CHECKPOINTS}/ folder to resume from")
        stored = functa.read_meta_json(workdir).get("train", {})
        changed = {k: (stored.get(k), config[k]) for k in RUN_KEYS if k in stored and stored.get(k) != config[k]}
        if changed:
            raise ValueError("--resume with a different configuration: "
                             + ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items()))
    elif mgr_exists:
        raise FileExistsError(f"{workdir} already holds checkpoints; pass resume=True (--resume) to continue "
                              f"or choose another workdir")

    # ---------------------------------------------------------------- data and model
    if isinstance(dataset, str):
        train_ds = load_dataset(dataset, "train", resolution, data_dir)
        test_ds = test_dataset or load_dataset(dataset, "test", resolution, data_dir)
    else:
        train_ds, test_ds = dataset, test_dataset or dataset
    if train_ds.shape != (config["resolution"],) * 2:
        raise ValueError(f"dataset images are {train_ds.shape}, resolution is {resolution}")
    meta = build_meta(model, resolution, train_ds.channels, width, depth, levels, bases, w0,
                      latent_dim, inner_steps, inner_lr)
    train_ds.steps_per_epoch(batch_size)  # raises if the batch is larger than the dataset
    eval_imgs = test_ds.get(np.arange(min(int(eval_images), len(test_ds))))
    check_images(eval_imgs, f"{test_ds.name}/{test_ds.split}")

    mesh = _mesh_for(batch_size)
    optimizer = functa.make_optimizer(lr)
    step_fn = functa.make_meta_step(meta, optimizer, mesh)
    rep = sharding.replicated(mesh)

    os.makedirs(workdir, exist_ok=True)
    mgr = functa.checkpoint_manager(workdir, keep=keep)
    import orbax.checkpoint as ocp

    params = meta.init(jax.random.key(seed))
    opt_state = optimizer.init(params)
    start, history = 0, []
    if resume and mgr.latest_step() is not None:
        start = int(mgr.latest_step())
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                                {"params": params, "opt_state": opt_state})
        restored = mgr.restore(start, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract["params"]),
            opt_state=ocp.args.StandardRestore(abstract["opt_state"])))
        params, opt_state = restored["params"], restored["opt_state"]
        hist_path = os.path.join(workdir, HISTORY)
        if os.path.isfile(hist_path):
            with open(hist_path) as f:
                history = [h for h in json.load(f) if h["step"] <= start]
        log(f"resumed {workdir} at step {start}")
    else:
        functa.write_meta_json(workdir, meta, {"train": config})
    params, opt_state = sharding.replicate(params, mesh), sharding.replicate(opt_state, mesh)

    cost = macs.count(meta.model)
    log(f"{meta.model.kind}: {meta.model.num_params():,} network params, {meta.num_params():,} shared params, "
        f"{cost.paper_macs:,.1f} MAC/pixel, latent {latent_dim}, k={inner_steps}, {len(train_ds)} train / "
        f"{len(test_ds)} test images, {mesh.size} device(s)")

    def save(step):
        mgr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                               opt_state=ocp.args.StandardSave(opt_state)), force=True)
        mgr.wait_until_finished()
        _write_json(os.path.join(workdir, HISTORY), history)

    # ---------------------------------------------------------------- loop
    status, step = "done", start
    step_times, t_start = [], time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(steps), initial=start, desc=f"meta-train {meta.model.kind}", dynamic_ncols=True)
    eval_steps = sorted({int(inner_steps), int(eval_more_steps)})
    extra_evals = {int(s) for s in eval_at}
    try:
        while step < int(steps):
            idx = train_ds.batch_indices(step, batch_size, shuffle=True, seed=seed)
            images = sharding.shard_batch(train_ds.get(idx), mesh)
            t0 = time.perf_counter()
            new_params, new_opt, m = step_fn(params, opt_state, images)
            loss, psnr = float(m["loss"]), float(m["psnr"])
            step_times.append(time.perf_counter() - t0)
            if not math.isfinite(loss):
                status = "diverged"
                log(f"step {step + 1}: loss is {loss}; stopping. The last good checkpoint "
                    f"(step {mgr.latest_step()}) is kept in {workdir}/{functa.CHECKPOINTS}")
                break
            params, opt_state, step = new_params, new_opt, step + 1
            entry = {"step": step, "loss": loss, "train_psnr": psnr}
            if step % int(eval_every) == 0 or step == int(steps) or step in extra_evals:
                ev = _eval(meta, params, eval_imgs, eval_steps)
                entry.update({f"test_psnr_{s}": v for s, v in ev.items()})
            history.append(entry)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", psnr=f"{psnr:.2f}",
                                **({"test": f"{entry[f'test_psnr_{inner_steps}']:.2f}"}
                                   if f"test_psnr_{inner_steps}" in entry else {}))
            if step % int(checkpoint_every) == 0:
                save(step)
            if max_seconds is not None and time.perf_counter() - t_start > max_seconds:
                status = "time_budget"
                break
    finally:
        if bar is not None:
            bar.close()
    train_seconds = time.perf_counter() - t_start
    if status != "diverged" and mgr.latest_step() != step and step > 0:
        if f"test_psnr_{inner_steps}" not in (history[-1] if history else {}):
            history[-1].update({f"test_psnr_{s}": v for s, v in _eval(meta, params, eval_imgs, eval_steps).items()})
        save(step)
    mgr.close()

    # ---------------------------------------------------------------- summary, pictures
    steady = step_times[1:] if len(step_times) > 1 else step_times
    sec = statistics.median(steady) if steady else float("nan")
    last_eval = next((h for h in reversed(history) if f"test_psnr_{inner_steps}" in h), {})
    metrics = {
        "status": status, "step": step, "config": config, "meta": meta.config(),
        "network_params": meta.model.num_params(), "shared_params": meta.num_params(),
        "mac_per_pixel": cost.paper_macs, "render_mac_per_pixel": cost.render_macs,
        "devices": mesh.size, "step_seconds_median": sec, "images_per_second": batch_size / sec if sec else None,
        "train_seconds": train_seconds, "steps_this_run": len(step_times),
        "test_images": len(eval_imgs),
        "test_psnr": {str(s): last_eval.get(f"test_psnr_{s}") for s in eval_steps},
        "final_train_loss": history[-1]["loss"] if history else None,
    }
    _write_json(os.path.join(workdir, METRICS), metrics)
    if plots and history:
        plot_history(history, os.path.join(workdir, "psnr.png"), inner_steps, eval_more_steps,
                     title=f"{meta.model.kind} functa, latent {latent_dim}")
        if status != "diverged":
            lat, _ = functa.fit_latents(meta, params, eval_imgs[:8])
            recon = functa.render_latents(meta, params, lat)
            write_grid(os.path.join(workdir, "reconstructions.png"), [eval_imgs[:8], recon])
    return TrainResult(workdir, status, step, jax.device_get(params), meta, metrics, history)


# ----------------------------------------------------------------------------- pictures
def write_grid(path, rows, pad: int = 2, min_size: int = 96):
    """PNG of image rows: ``rows`` is a list of ``[n, H, W, C]`` arrays (same n), one row each.

    Small images are enlarged by an integer factor (nearest neighbour) to at least ``min_size`` px.
    """
    from asmr_jax.io import write_png

    rows = [np.asarray(r, np.float32) for r in rows]
    f = max(1, -(-min_size // max(rows[0].shape[1:3])))
    rows = [r.repeat(f, axis=1).repeat(f, axis=2) for r in rows]
    n, h, w, c = rows[0].shape
    canvas = np.ones((len(rows) * (h + pad) + pad, n * (w + pad) + pad, c), np.float32)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            canvas[pad + i * (h + pad):pad + i * (h + pad) + h, pad + j * (w + pad):pad + j * (w + pad) + w] = img
    if c == 1:
        canvas = np.repeat(canvas, 3, axis=-1)
    tmp = path + ".tmp.png"
    write_png(tmp, canvas)
    os.replace(tmp, path)


def plot_history(history, path, inner_steps: int, more_steps: int, title: str = "", label: str = "",
                 ax=None):
    """PSNR vs step: train batches (thin) and test evaluations (markers). Writes ``path`` if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6, 4))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train_psnr"] for h in history], lw=0.6, alpha=0.5, label=f"{label}train (k={inner_steps})")
    for s, marker in ((inner_steps, "o-"), (more_steps, "s--")):
        pts = [(h["step"], h[f"test_psnr_{s}"]) for h in history if f"test_psnr_{s}" in h]
        if pts:
            ax.plot(*zip(*pts), marker, ms=3, label=f"{label}test, {s} steps")
    ax.set_xlabel("outer step")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if own:
        fig.tight_layout()
        tmp = path + ".tmp.png"
        fig.savefig(tmp, dpi=120)
        plt.close(fig)
        os.replace(tmp, path)
