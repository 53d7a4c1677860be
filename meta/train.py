"""Meta-training run: data pipeline, sharding (one or many processes), checkpoints, evaluation, plots.

:func:`train` writes into ``workdir``::

    meta.json             format, model/meta config, training config (see meta.functa)
    checkpoints/<step>/   orbax CheckpointManager steps (items params, opt_state); last ``keep``
    history.json          loss/PSNR log (train, and test evals)
    metrics.json          final summary (status, steps, PSNRs, images/s, params, MACs)
    psnr.png              PSNR vs step (train batches and test evaluations)
    reconstructions.png   test targets (top) vs reconstructions after k inner steps (bottom)

Defaults: the keyword defaults of :func:`train` are the only copy; config files
(:mod:`meta.configs`) change what differs.

Determinism: the model init comes from ``seed`` and batch ``t`` from
``dataset.batch_indices(t, batch_size, seed)``, so ``resume=True`` continues from the
latest checkpoint with exactly the parameters an uninterrupted run reaches.

Pipeline: a background thread loads batch ``t + 1 .. t + prefetch`` and puts it on the
devices while step ``t`` runs (:class:`asmr_jax.datasets.Prefetcher`); the loop never
waits on the host: metrics stay on the device and are fetched every ``log_every`` steps
(and before every evaluation and checkpoint). A non-finite loss found in a fetch stops
the run (status ``"diverged"``) and names the first bad step; checkpoints are written
only after a fetch showed every step before them finite, so the last good checkpoint
stays the latest.

Multi-process (``jax.distributed``): call :func:`asmr_jax.sharding.initialize_distributed`
first in every process; the mesh then spans ``jax.devices()`` of all processes, each
process loads only the rows of every global batch that its devices hold and the global
array is assembled with ``jax.make_array_from_process_local_data``. Checkpoints are
written by orbax from all processes together (``workdir`` on a file system they all see);
progress bars, JSON files and pictures come from process 0 only.
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

from asmr_jax import io, macs, models, sharding
from asmr_jax.datasets import ImageDataset, Prefetcher, check_images, load_dataset
from meta import functa

HISTORY = "history.json"
METRICS = "metrics.json"

# Fields of the training config that define a run (a resume must not change them).
RUN_KEYS = ("dataset", "data_dir", "resolution", "model", "width", "depth", "levels", "bases", "w0",
            "latent_dim", "inner_steps", "lr_scale", "modulate_shift", "modulate_scale", "latent_init_scale",
            "l2_weight", "noise_std", "functa_init", "meta_sgd", "spatial", "spatial_kernel", "batch_size", "lr",
            "clip", "lr_decay", "decay_steps", "seed")
LR_DECAYS = ("none", "cosine")
META_KEYS = ("latent_dim", "inner_steps", "lr_scale", "modulate_shift", "modulate_scale", "latent_init_scale",
             "l2_weight", "noise_std", "functa_init", "meta_sgd", "spatial", "spatial_kernel")


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


def build_meta(model="asmr", resolution=32, channels: int = 3, width: int = 128,
               depth: int | None = None, levels: int | None = 4, bases=None, w0: float = 30.0,
               **meta_kwargs) -> functa.MetaModel:
    """A :class:`~meta.functa.MetaModel` from flat keyword arguments (CLI/config friendly).

    ``model`` is a family name for :func:`asmr_jax.models.build` (sized by ``width``,
    ``depth``, ``levels``, ``bases``, ``w0``) or a model's ``config()`` dict (any registered
    model, e.g. an Instant-NGP hash grid, taken as it is). ``resolution`` is an int
    (square images) or a spatial shape; ``meta_kwargs`` are :class:`~meta.functa.MetaModel`
    fields (``latent_dim``, ``inner_steps``, ``lr_scale``, ...).
    """
    shape = (int(resolution),) * 2 if isinstance(resolution, (int, np.integer)) else tuple(resolution)
    if isinstance(model, dict):
        net = models.from_config(model)
        if tuple(net.shape) != shape or net.channels != channels:
            raise ValueError(f"model config is for {net.shape} x {net.channels}, the data is {shape} x {channels}")
    else:
        net = models.build(model, shape, channels, width=width, depth=depth, levels=levels, bases=bases, w0=w0)
    return functa.MetaModel(net, **meta_kwargs)


def data_mesh_for(batch_size: int):
    """The data mesh of a run: all devices of all processes (the batch must divide over
    them) in a multi-process run; in one process, the most devices that divide the batch."""
    devs = jax.devices()
    if jax.process_count() > 1:
        sharding.check_divisible(batch_size, sharding.data_mesh(devs), "global batch size")
        return sharding.data_mesh(devs)
    n = max(d for d in range(1, len(devs) + 1) if batch_size % d == 0)
    return sharding.data_mesh(devs[:n])


def plan_steps(budget_seconds: float, probe_seconds: float = 20.0, margin: float = 0.95, **train_kwargs) -> int:
    """Outer steps that fit in ``budget_seconds``, timed by a ``probe_seconds`` run of the same config.

    A decayed rate (``lr_decay="cosine"``) needs its length in steps before a run starts,
    but budgets are wall clock: this meta-trains the config in a scratch folder for
    ``probe_seconds`` (no evaluations, no checkpoints), takes the median step time, and
    plans ``margin`` of the budget in steps (the rest for the real run's evaluations and
    checkpoints).
    """
    import tempfile

    quiet = dict(steps=10**7, lr_decay="none", eval_every=10**7, checkpoint_every=10**7, log_every=10,
                 plots=False, progress=False, max_seconds=float(probe_seconds), log=lambda *a, **k: None)
    with tempfile.TemporaryDirectory() as tmp:
        res = train(**{**train_kwargs, **quiet, "workdir": tmp, "resume": False})
    return max(1, int(margin * float(budget_seconds) / res.metrics["step_seconds_median"]))


def _eval(meta, params, images, steps_list):
    out = {}
    for s in steps_list:
        _, p = functa.fit_latents(meta, params, images, steps=s)
        out[s] = float(np.mean(p))
    return out


def train(*, workdir, dataset: str | ImageDataset = "patches", test_dataset: ImageDataset | None = None,
          data_dir=None, resolution: int = 32, model: str = "asmr", width: int = 128, depth: int | None = None,
          levels: int | None = 4, bases=None, w0: float = 30.0, latent_dim: int = 64, inner_steps: int = 3,
          lr_scale: float = 1.0, modulate_shift: bool = True, modulate_scale: bool = False,
          latent_init_scale: float = 0.0, l2_weight: float = 0.0, noise_std: float = 0.0,
          functa_init: bool = False, meta_sgd: bool = True, spatial=None, spatial_kernel: int = 3,
          batch_size: int = 16, steps: int = 500,
          lr: float = 3e-4, clip: float | None = functa.OUTER_CLIP, lr_decay: str = "none", seed: int = 0,
          remat: bool = False,
          microbatch: int | None = None, resume: bool = False, resume_step: int | None = None,
          eval_every: int = 100, eval_images: int = 64, eval_more_steps: int = 10, eval_at: tuple = (),
          checkpoint_every: int = 100, keep: int = 3,
          log_every: int = 25, prefetch: int = 2, max_seconds: float | None = None, progress: bool = True,
          plots: bool = True, log=print) -> TrainResult:
    """Meta-trains a functa over ``dataset`` and writes ``workdir`` (see module docstring).

    Args:
      workdir: output folder. It must not hold checkpoints unless ``resume``.
      dataset: a dataset name for :func:`asmr_jax.datasets.load_dataset` (``train`` and
        ``test`` splits), or an :class:`ImageDataset` of any spatial shape (then pass
        ``test_dataset`` too, or the train set is used for evaluation).
      resolution: image side when ``dataset`` is a name.
      model, width, depth, levels, bases, w0: the network (:func:`asmr_jax.models.build`), or
        ``model`` a registered model's ``config()`` dict (the size fields are then unused).
      latent_dim ... meta_sgd: :class:`meta.functa.MetaModel` fields (functa's knobs).
      spatial, spatial_kernel: a grid of latent vectors instead of one (``None``, functa), and
        the side of the convolution that maps it to modulations (:class:`meta.functa.MetaModel`).
      batch_size: global batch (over all devices and processes).
      steps: total outer steps (a resumed run continues up to this count).
      resume, resume_step: continue from the latest checkpoint (or from step ``resume_step``;
        later steps are then deleted). A damaged step is refused with the steps to use instead.
      lr, clip: outer Adam rate and global-norm gradient clip (``None``: none).
      lr_decay: ``"none"`` (a constant rate, as functa) or ``"cosine"`` (from ``lr`` down to
        ``lr / 100`` over ``steps``; a resume must keep ``steps``).
      remat, microbatch: memory levers of :func:`meta.functa.meta_step` (same results).
      eval_every: test evaluation period (PSNR after ``inner_steps`` and after
        ``eval_more_steps`` inner steps on the first ``eval_images`` test images).
      eval_at: extra steps at which to evaluate.
      checkpoint_every: checkpoint period (plus one at the end).
      log_every: steps between metric fetches (the only host syncs besides evals/checkpoints).
      prefetch: batches loaded ahead by the background thread (0: none, the plain loop).
      max_seconds: stop (and checkpoint) once this much training time has passed (counted from
        the end of the first step, so that compilation is not part of it).

    Returns:
      a :class:`TrainResult`.
    """
    workdir = os.path.abspath(os.fspath(workdir))
    main = jax.process_index() == 0
    if resolution is None and isinstance(dataset, str):
        raise ValueError(f"dataset {dataset!r} is loaded by name: pass a resolution")
    res = (None if resolution is None else int(resolution) if isinstance(resolution, (int, np.integer))
           else tuple(int(r) for r in resolution))
    config = dict(dataset=dataset if isinstance(dataset, str) else dataset.name,
                  data_dir=None if data_dir is None else os.fspath(data_dir), resolution=res,
                  model=dict(model) if isinstance(model, dict) else model,
                  width=int(width), depth=depth, levels=levels,
                  bases=None if bases is None else json.loads(json.dumps(bases)), w0=float(w0),
                  latent_dim=int(latent_dim), inner_steps=int(inner_steps), lr_scale=float(lr_scale),
                  modulate_shift=bool(modulate_shift), modulate_scale=bool(modulate_scale),
                  latent_init_scale=float(latent_init_scale), l2_weight=float(l2_weight),
                  noise_std=float(noise_std), functa_init=bool(functa_init), meta_sgd=bool(meta_sgd),
                  spatial=None if spatial is None else json.loads(json.dumps(spatial)),
                  spatial_kernel=int(spatial_kernel),
                  batch_size=int(batch_size), lr=float(lr), clip=None if clip is None else float(clip),
                  lr_decay=lr_decay, decay_steps=int(steps) if lr_decay == "cosine" else None, seed=int(seed))
    config = json.loads(json.dumps(config))  # compare as stored: tuples become lists
    if lr_decay not in LR_DECAYS:
        raise ValueError(f"lr_decay must be one of {', '.join(map(repr, LR_DECAYS))}, got {lr_decay!r}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be in [0, 2^32), got {seed}")
    for name, val in (("lr", lr), ("w0", w0), ("lr_scale", lr_scale)):
        if not (math.isfinite(float(val)) and float(val) > 0):
            raise ValueError(f"{name} must be a positive finite number, got {val}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for name, val in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every), ("keep", keep),
                      ("log_every", log_every)):
        if int(val) < 1:
            raise ValueError(f"{name} must be >= 1, got {val}")
    if int(prefetch) < 0:
        raise ValueError(f"prefetch must be >= 0 (0: load each batch when it is needed), got {prefetch}")
    if int(eval_images) < 1:
        raise ValueError(f"eval_images must be >= 1 (test images per evaluation), got {eval_images}")
    if microbatch is not None and (int(microbatch) < 1 or int(batch_size) % int(microbatch)):
        raise ValueError(f"microbatch must be a divisor of batch_size {batch_size}, got {microbatch}")

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
        train_ds = load_dataset(dataset, "train", res, data_dir)
        test_ds = test_dataset or load_dataset(dataset, "test", res, data_dir)
    else:
        train_ds, test_ds = dataset, test_dataset or dataset
        want = None if resolution is None else ((res,) * 2 if isinstance(res, int) else res)
        if want is not None and train_ds.shape != want:
            raise ValueError(f"dataset signals are {train_ds.shape}, resolution is {resolution} "
                             f"(pass resolution=None to take the dataset's shape)")
    meta = build_meta(model, train_ds.shape, train_ds.channels, width, depth, levels,
                      None if bases is None else bases, w0,
                      **{k: config[k] for k in META_KEYS})
    train_ds.steps_per_epoch(batch_size)  # raises if the batch is larger than the dataset
    eval_imgs = test_ds.get(np.arange(min(int(eval_images), len(test_ds))))
    check_images(eval_imgs, f"{test_ds.name}/{test_ds.split}", spatial_dims=len(train_ds.shape))

    sharding.barrier("meta.train: workdir checked")  # every process has looked before one writes
    mesh = data_mesh_for(int(batch_size))
    optimizer = functa.make_optimizer(lr, clip, config["decay_steps"])
    step_fn = functa.make_meta_step(meta, optimizer, mesh, remat=bool(remat),
                                    microbatch=None if microbatch is None else int(microbatch))
    rep = sharding.replicated(mesh)

    if main:
        os.makedirs(workdir, exist_ok=True)
    mgr = functa.checkpoint_manager(workdir, keep=keep)
    try:
        import orbax.checkpoint as ocp

        params = meta.init(jax.random.key(seed))
        opt_state = optimizer.init(params)
        start, history = 0, []
        if resume and mgr.latest_step() is not None:
            start = int(mgr.latest_step() if resume_step is None else resume_step)
            abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                                    {"params": params, "opt_state": opt_state})
            restored = functa.restore_step(mgr, workdir, start, abstract)
            params, opt_state = restored["params"], restored["opt_state"]
            later = [s for s in mgr.all_steps() if s > start]
            if later:
                sharding.barrier("meta.train: resume step restored")
                for s in later:
                    mgr.delete(s)
                if main:
                    log(f"continuing from step {start}: deleted the later checkpoint steps {later}")
            hist_path = os.path.join(workdir, HISTORY)
            if os.path.isfile(hist_path):
                with open(hist_path) as f:
                    history = [h for h in json.load(f) if h["step"] <= start]
            if main:
                log(f"resumed {workdir} at step {start}")
        elif main:
            functa.write_meta_json(workdir, meta, {"train": config})
        params, opt_state = sharding.replicate(params, mesh), sharding.replicate(opt_state, mesh)
        noise_key = jax.random.fold_in(jax.random.key(seed), 1)

        cost = macs.count(meta.model)
        if main:
            log(f"{meta.model.kind}: {meta.model.num_params():,} network params, {meta.num_params():,} shared params, "
                f"{cost.paper_macs:,.1f} MAC/pixel, latent {latent_dim}, k={inner_steps}, {len(train_ds)} train / "
                f"{len(test_ds)} test images, {mesh.size} device(s) in {jax.process_count()} process(es)")

        def save(step):
            mgr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                   opt_state=ocp.args.StandardSave(opt_state)), force=True)
            mgr.wait_until_finished()
            if main:
                functa.record_digest(workdir, step, sharding.to_host({"params": params, "opt_state": opt_state}))
                io.write_json(os.path.join(workdir, HISTORY), history)

        def load_batch(t):
            idx = train_ds.batch_indices(t, batch_size, shuffle=True, seed=seed)
            return sharding.global_batch(lambda rows: train_ds.get(idx[rows]), int(batch_size), mesh)

        # ---------------------------------------------------------------- loop
        status, step = "done", start
        windows, t_start, t_budget = [], time.perf_counter(), None  # (steps, seconds) between fetches
        bar = None
        if progress and main:
            from tqdm import tqdm

            bar = tqdm(total=int(steps), initial=start, desc=f"meta-train {meta.model.kind}", dynamic_ncols=True)
        eval_steps = sorted({int(inner_steps), int(eval_more_steps)})
        extra_evals = {int(s) for s in eval_at}
        pending = []  # (step, device metrics) not fetched yet
        good = (start, params, opt_state)  # the last state whose every step was checked finite
        last_fetch = [time.perf_counter(), start]

        def fetch():
            """Moves pending metrics to the history; False if one was non-finite."""
            nonlocal good, status
            if not pending:
                return True
            values = list(zip([t for t, _ in pending], sharding.to_host([m for _, m in pending])))  # one transfer
            pending.clear()
            now = time.perf_counter()
            windows.append((values[-1][0] - last_fetch[1], now - last_fetch[0]))
            last_fetch[:] = [now, values[-1][0]]
            for t, m in values:
                loss, psnr = float(m["loss"]), float(m["psnr"])
                if not math.isfinite(loss):
                    status = "diverged"
                    if main:
                        kept = mgr.latest_step()
                        log(f"step {t}: loss is {loss}; stopping. " + (
                            f"The last good checkpoint (step {kept}) is kept in {workdir}/{functa.CHECKPOINTS}"
                            if kept is not None else "No checkpoint was written before it (lower lr or clip)"))
                    return False
                history.append({"step": t, "loss": loss, "train_psnr": psnr})
            if bar is not None:
                bar.update(values[-1][0] - bar.n)
                bar.set_postfix(loss=f"{loss:.4f}", psnr=f"{psnr:.2f}",
                                **({"test": f"{history[-1][f'test_psnr_{inner_steps}']:.2f}"}
                                   if f"test_psnr_{inner_steps}" in history[-1] else {}))
            return True

        batches = Prefetcher(load_batch, start, int(steps), depth=int(prefetch))
        try:
            for t, images in batches:
                key = jax.random.fold_in(noise_key, t)
                if t == start:  # compile, then give the compiler's freed heap back before the step's buffers
                    step_fn.compile_for(params, opt_state, images, key)
                    io.release_free_heap()
                params, opt_state, m = step_fn(params, opt_state, images, key)
                step = t + 1
                pending.append((step, m))
                want_eval = step % int(eval_every) == 0 or step == int(steps) or step in extra_evals
                want_ckpt = step % int(checkpoint_every) == 0
                if t_budget is None:  # the budget starts once the first step (its compilation) is done
                    jax.block_until_ready(params)
                    t_budget = time.perf_counter()
                over_time = max_seconds is not None and time.perf_counter() - t_budget > max_seconds
                if want_eval or want_ckpt or over_time or step % int(log_every) == 0:
                    if not fetch():
                        break
                    good = (step, params, opt_state)
                    if want_eval:
                        ev = _eval(meta, sharding.to_host(params), eval_imgs, eval_steps)
                        history[-1].update({f"test_psnr_{s}": v for s, v in ev.items()})
                    if want_ckpt:
                        save(step)
                if over_time:
                    status = "time_budget"
                    break
        finally:
            batches.close()
            if bar is not None:
                bar.close()
        train_seconds = time.perf_counter() - t_start
        budget_seconds = 0.0 if t_budget is None else time.perf_counter() - t_budget
        step, params, opt_state = good
        if status != "diverged" and mgr.latest_step() != step and step > start:
            if f"test_psnr_{inner_steps}" not in (history[-1] if history else {}):
                ev = _eval(meta, sharding.to_host(params), eval_imgs, eval_steps)
                history[-1].update({f"test_psnr_{s}": v for s, v in ev.items()})
            save(step)
    finally:  # closed on every path: an open manager's threads print tracebacks at exit
        mgr.close()

    # ---------------------------------------------------------------- summary, pictures
    steady = windows[1:] if len(windows) > 1 else windows  # the first window holds the compile
    rates = [dt / n for n, dt in steady if n > 0]
    sec = statistics.median(rates) if rates else float("nan")
    last_eval = next((h for h in reversed(history) if f"test_psnr_{inner_steps}" in h), {})
    host_params = sharding.to_host(params)
    metrics = {
        "status": status, "step": step, "config": config, "meta": meta.config(),
        "network_params": meta.model.num_params(), "shared_params": meta.num_params(),
        "mac_per_pixel": cost.paper_macs, "render_mac_per_pixel": cost.render_macs,
        "devices": mesh.size, "processes": jax.process_count(), "step_seconds_median": sec,
        "images_per_second": batch_size / sec if rates else None,
        "train_seconds": train_seconds, "budget_seconds": budget_seconds, "steps_this_run": step - start,
        "test_images": len(eval_imgs),
        "test_psnr": {str(s): last_eval.get(f"test_psnr_{s}") for s in eval_steps},
        "final_train_loss": history[-1]["loss"] if history else None,
    }
    if main:
        io.write_json(os.path.join(workdir, METRICS), metrics)
        if plots and history:
            plot_history(history, os.path.join(workdir, "psnr.png"), inner_steps, eval_more_steps,
                         title=f"{meta.model.kind} functa, latent {latent_dim}")
            if status != "diverged" and len(meta.shape) == 2:
                lat, _ = functa.fit_latents(meta, host_params, eval_imgs[:8])
                recon = functa.render_latents(meta, host_params, lat)
                write_grid(os.path.join(workdir, "reconstructions.png"), [eval_imgs[:8], recon])
    return TrainResult(workdir, status, step, host_params, meta, metrics, history)


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
    write_png(path, canvas)


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
        io.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
        plt.close(fig)
