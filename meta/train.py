"""Meta-training run: data pipeline, sharding (one or many processes), checkpoints, evaluation, plots.

:func:`train` writes into ``workdir``::

    meta.json             format, model/meta config, the run record (see meta.checkpoint)
    checkpoints/<step>/   orbax CheckpointManager steps (items params, opt_state); last ``keep``
    history.json          loss/PSNR log (train, and test evals)
    metrics.json          final summary (status, steps, PSNRs, images/s, params, MACs)
    psnr.png              PSNR vs step (train batches and test evaluations)
    reconstructions.png   test targets (top) vs reconstructions after k inner steps (bottom)

The run is a :class:`meta.config.TrainConfig` (every field, its default and help, once);
config files (:mod:`meta.configs`) change what differs. :func:`train` is a loop over
named steps: check the workdir, load the data, restore or start, run (:class:`_Loop`:
steps, fetches, evaluations, checkpoints), summarize, draw.

Determinism: the model init comes from ``seed`` and batch ``t`` from
``data.batch_indices(t, batch_size, seed)``, so ``resume=True`` continues from the
latest checkpoint with exactly the parameters an uninterrupted run reaches.

Pipeline: a background thread loads batch ``t + 1 .. t + prefetch`` and puts it on the
devices while step ``t`` runs (:class:`asmr_jax.imageset.Prefetcher`); the loop never
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

from asmr_jax import io, macs, sharding
from asmr_jax.datasets import load_dataset
from asmr_jax.imageset import ImageDataset, Prefetcher, augment, augment_draws, check_images
from meta import checkpoint, functa, inference, optimize
from meta.config import TrainConfig

HISTORY = "history.json"
METRICS = "metrics.json"


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


def data_mesh_for(batch_size: int):
    """The data mesh of a run: all devices of all processes (the batch must divide over
    them) in a multi-process run; in one process, the most devices that divide the batch."""
    devs = jax.devices()
    if jax.process_count() > 1:
        sharding.check_divisible(batch_size, sharding.data_mesh(devs), "global batch size")
        return sharding.data_mesh(devs)
    n = max(d for d in range(1, len(devs) + 1) if batch_size % d == 0)
    return sharding.data_mesh(devs[:n])


def plan_steps(config: TrainConfig, budget_seconds: float, probe_seconds: float = 20.0, margin: float = 0.95,
               data: ImageDataset | None = None, test_data: ImageDataset | None = None) -> int:
    """Outer steps that fit in ``budget_seconds``, timed by a ``probe_seconds`` run of ``config``.

    A decayed rate (``lr_decay="cosine"``) needs its length in steps before a run starts,
    but budgets are wall clock: this meta-trains the config in a scratch folder for
    ``probe_seconds`` (no evaluations, no checkpoints), takes the median step time, and
    plans ``margin`` of the budget in steps (the rest for the real run's evaluations and
    checkpoints).
    """
    import tempfile

    probe = config.replace(steps=10**7, lr_decay="none", eval_every=10**7, checkpoint_every=10**7, log_every=10,
                           max_seconds=float(probe_seconds))
    with tempfile.TemporaryDirectory() as tmp:
        res = train(probe, tmp, data=data, test_data=test_data, plots=False, progress=False,
                    log=lambda *a, **k: None)
    return max(1, int(margin * float(budget_seconds) / res.metrics["step_seconds_median"]))


def _eval(meta, params, images, steps_list):
    out = {}
    for s in steps_list:
        _, p = inference.fit_latents(meta, params, images, steps=s)
        out[s] = float(np.mean(p))
    return out


# ----------------------------------------------------------------------------- the steps of a run
def check_workdir(config: TrainConfig, workdir: str, resume: bool):
    """Refuses a workdir that holds checkpoints unless resuming, and a resume whose run
    fields differ from the recorded ones."""
    exists = os.path.isdir(os.path.join(workdir, checkpoint.CHECKPOINTS))
    if resume:
        if not exists:
            raise ValueError(f"--resume: {workdir} has no {checkpoint.CHECKPOINTS}/ folder to resume from")
        stored, now = checkpoint.read_meta_json(workdir).get("train", {}), config.record()
        changed = {k: (stored.get(k), now[k]) for k in now if k in stored and stored.get(k) != now[k]}
        if changed:
            raise ValueError("--resume with a different configuration: "
                             + ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items()))
    elif exists:
        raise FileExistsError(f"{workdir} already holds checkpoints; pass resume=True (--resume) to continue "
                              f"or choose another workdir")


def load_data(config: TrainConfig, data: ImageDataset | None, test_data: ImageDataset | None):
    """``(train, test)`` datasets: ``config.dataset`` by name, or the given ones."""
    if data is None:
        if config.resolution is None:
            raise ValueError(f"dataset {config.dataset!r} is loaded by name: pass a resolution")
        extra = {} if config.patch_stride is None else {"stride": config.patch_stride}
        train_ds = load_dataset(config.dataset, "train", config.resolution, config.data_dir, **extra)
        return train_ds, test_data or load_dataset(config.dataset, "test", config.resolution, config.data_dir)
    res = config.resolution
    want = None if res is None else ((res,) * 2 if isinstance(res, int) else tuple(res))
    if want is not None and tuple(data.shape) != want:
        raise ValueError(f"dataset signals are {data.shape}, resolution is {res} "
                         f"(pass resolution=None to take the dataset's shape)")
    return data, test_data or data


def restore(ckpts: checkpoint.RunCheckpoints, workdir, resume_step, params, opt_state, rep, log):
    """``(step, params, opt_state, history)`` of the resumed step; later steps are deleted."""
    start = int(ckpts.latest_step() if resume_step is None else resume_step)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                            {"params": params, "opt_state": opt_state})
    restored = ckpts.restore(start, abstract)
    later = ckpts.delete_after(start)
    main = jax.process_index() == 0
    if later and main:
        log(f"continuing from step {start}: deleted the later checkpoint steps {later}")
    history = []
    hist_path = os.path.join(workdir, HISTORY)
    if os.path.isfile(hist_path):
        with open(hist_path) as f:
            history = [h for h in json.load(f) if h["step"] <= start]
    if main:
        log(f"resumed {workdir} at step {start}")
    return start, restored["params"], restored["opt_state"], history


def train(config: TrainConfig | None = None, workdir=None, *, data: ImageDataset | None = None,
          test_data: ImageDataset | None = None, resume: bool = False, resume_step: int | None = None,
          progress: bool = True, plots: bool = True, log=print, **changes) -> TrainResult:
    """Meta-trains a functa as ``config`` says and writes ``workdir`` (see module docstring).

    Args:
      config: the run (:class:`meta.config.TrainConfig`; default: its defaults), with
        ``changes`` (field values) applied on top.
      workdir: output folder. It must not hold checkpoints unless ``resume``.
      data, test_data: :class:`ImageDataset` s of any spatial shape to train and evaluate on
        instead of loading ``config.dataset`` (its name is then recorded); without
        ``test_data`` the train set is used for evaluation.
      resume, resume_step: continue from the latest checkpoint (or from step ``resume_step``;
        later steps are then deleted). A damaged step is refused with the steps to use instead.
      progress, plots, log: progress bar, pictures, and where messages go (process 0 only).

    Returns:
      a :class:`TrainResult`.
    """
    if workdir is None:
        raise TypeError("train() needs a workdir")
    config = (config or TrainConfig()).replace(**changes)
    if data is not None:
        config = config.replace(dataset=data.name)
    workdir = os.path.abspath(os.fspath(workdir))
    main = jax.process_index() == 0
    check_workdir(config, workdir, resume)

    train_ds, test_ds = load_data(config, data, test_data)
    meta = config.meta_model(train_ds.channels, train_ds.shape)
    train_ds.steps_per_epoch(config.batch_size)  # raises if the batch is larger than the dataset
    if config.augment and (len(train_ds.shape) != 2 or train_ds.shape[0] != train_ds.shape[1]):
        raise ValueError(f"augment turns square images; the signals are {train_ds.shape}")
    eval_imgs = test_ds.get(np.arange(min(config.eval_images, len(test_ds))))
    check_images(eval_imgs, f"{test_ds.name}/{test_ds.split}", spatial_dims=len(train_ds.shape))

    sharding.barrier("meta.train: workdir checked")  # every process has looked before one writes
    mesh = data_mesh_for(config.batch_size)
    record = config.record()
    optimizer = optimize.make_optimizer(config.lr, config.clip, record["decay_steps"])
    step_fn = optimize.make_meta_step(meta, optimizer, mesh, remat=config.remat, microbatch=config.microbatch)
    rep = sharding.replicated(mesh)
    if main:
        os.makedirs(workdir, exist_ok=True)
    with checkpoint.RunCheckpoints(workdir, keep=config.keep) as ckpts:
        params = meta.init(jax.random.key(config.seed))
        opt_state = optimizer.init(params)
        start, history = 0, []
        if resume and ckpts.latest_step() is not None:
            start, params, opt_state, history = restore(ckpts, workdir, resume_step, params, opt_state, rep, log)
        elif main:
            checkpoint.write_meta_json(workdir, meta, {"train": record})
        params, opt_state = sharding.replicate(params, mesh), sharding.replicate(opt_state, mesh)
        cost = macs.count(meta.model)
        if main:
            log(f"{meta.model.kind}: {meta.model.num_params():,} network params, {meta.num_params():,} shared params, "
                f"{cost.paper_macs:,.1f} MAC/pixel, latent {meta.latent_dim}, k={meta.inner_steps}, "
                f"{len(train_ds)} train / {len(test_ds)} test images, {mesh.size} device(s) in "
                f"{jax.process_count()} process(es)")
        loop = _Loop(config, meta, step_fn, mesh, train_ds, eval_imgs, ckpts, workdir, history, log)
        status, step, params, windows, seconds = loop.run(start, params, opt_state, progress and main)

    metrics = summary(config, meta, mesh, cost, status, step, start, history, windows, seconds, len(eval_imgs))
    host_params = sharding.to_host(params)
    if main:
        io.write_json(os.path.join(workdir, METRICS), metrics)
        if plots and history:
            write_pictures(workdir, meta, host_params, history, eval_imgs, config, status)
    return TrainResult(workdir, status, step, host_params, meta, metrics, history)


class _Loop:
    """The outer loop of :func:`train`: steps, metric fetches, evaluations, checkpoints."""

    def __init__(self, config, meta, step_fn, mesh, train_ds, eval_imgs, ckpts, workdir, history, log):
        self.c, self.meta, self.step_fn, self.mesh = config, meta, step_fn, mesh
        self.train_ds, self.eval_imgs, self.ckpts, self.workdir = train_ds, eval_imgs, ckpts, workdir
        self.history, self.log = history, log
        self.main = jax.process_index() == 0
        self.eval_steps = sorted({meta.inner_steps, config.eval_more_steps})
        self.pending = []  # (step, device metrics) not fetched yet
        self.windows = []  # (steps, seconds) between fetches
        self.status, self.bar = "done", None

    def load_batch(self, t):
        c = self.c
        idx = self.train_ds.batch_indices(t, c.batch_size, shuffle=True, seed=c.seed)
        draws = augment_draws(t, c.batch_size, self.train_ds.channels, c.seed) if c.augment else None

        def rows_of(rows):  # this process's rows of the global batch
            x = self.train_ds.get(idx[rows])
            return x if draws is None else augment(x, draws[rows])

        return sharding.global_batch(rows_of, c.batch_size, self.mesh)

    def save(self, step, params, opt_state):
        self.ckpts.save(step, params, opt_state)
        if self.main:
            io.write_json(os.path.join(self.workdir, HISTORY), self.history)

    def evaluate(self, params):
        ev = _eval(self.meta, sharding.to_host(params), self.eval_imgs, self.eval_steps)
        self.history[-1].update({f"test_psnr_{s}": v for s, v in ev.items()})

    def fetch(self) -> bool:
        """Moves pending metrics to the history; False if one was non-finite."""
        if not self.pending:
            return True
        values = list(zip([t for t, _ in self.pending], sharding.to_host([m for _, m in self.pending])))
        self.pending.clear()
        now = time.perf_counter()
        self.windows.append((values[-1][0] - self.last_fetch[1], now - self.last_fetch[0]))
        self.last_fetch = (now, values[-1][0])
        for t, m in values:
            loss, psnr = float(m["loss"]), float(m["psnr"])
            if not math.isfinite(loss):
                self.status = "diverged"
                if self.main:
                    kept = self.ckpts.latest_step()
                    self.log(f"step {t}: loss is {loss}; stopping. " + (
                        f"The last good checkpoint (step {kept}) is kept in {self.workdir}/{checkpoint.CHECKPOINTS}"
                        if kept is not None else "No checkpoint was written before it (lower lr or clip)"))
                return False
            self.history.append({"step": t, "loss": loss, "train_psnr": psnr})
        if self.bar is not None:
            k = f"test_psnr_{self.meta.inner_steps}"
            self.bar.update(values[-1][0] - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", psnr=f"{psnr:.2f}",
                                 **({"test": f"{self.history[-1][k]:.2f}"} if k in self.history[-1] else {}))
        return True

    def run(self, start, params, opt_state, progress):
        """``(status, step, params, fetch windows, seconds)``; the returned state is the last
        one whose every step was checked finite, and it is checkpointed."""
        c = self.c
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=c.steps, initial=start, desc=f"meta-train {self.meta.model.kind}",
                            dynamic_ncols=True)
        noise_key = jax.random.fold_in(jax.random.key(c.seed), 1)
        extra_evals = set(c.eval_at)
        good = (start, params, opt_state)
        t_start, t_budget = time.perf_counter(), None
        self.last_fetch = (t_start, start)
        batches = Prefetcher(self.load_batch, start, c.steps, depth=c.prefetch)
        try:
            for t, images in batches:
                key = jax.random.fold_in(noise_key, t)
                if t == start:  # compile, then give the compiler's freed heap back before the step's buffers
                    self.step_fn.compile_for(params, opt_state, images, key)
                    io.release_free_heap()
                params, opt_state, m = self.step_fn(params, opt_state, images, key)
                step = t + 1
                self.pending.append((step, m))
                want_eval = step % c.eval_every == 0 or step == c.steps or step in extra_evals
                want_ckpt = step % c.checkpoint_every == 0
                if t_budget is None:  # the budget starts once the first step (its compilation) is done
                    jax.block_until_ready(params)
                    t_budget = time.perf_counter()
                over_time = c.max_seconds is not None and time.perf_counter() - t_budget > c.max_seconds
                if want_eval or want_ckpt or over_time or step % c.log_every == 0:
                    if not self.fetch():
                        break
                    good = (step, params, opt_state)
                    if want_eval:
                        self.evaluate(params)
                    if want_ckpt:
                        self.save(step, params, opt_state)
                if over_time:
                    self.status = "time_budget"
                    break
        finally:
            batches.close()
            if self.bar is not None:
                self.bar.close()
        seconds = {"train": time.perf_counter() - t_start,
                   "budget": 0.0 if t_budget is None else time.perf_counter() - t_budget}
        step, params, opt_state = good
        if self.status != "diverged" and self.ckpts.latest_step() != step and step > start:
            if f"test_psnr_{self.meta.inner_steps}" not in (self.history[-1] if self.history else {}):
                self.evaluate(params)
            self.save(step, params, opt_state)
        return self.status, step, params, self.windows, seconds


def summary(config, meta, mesh, cost, status, step, start, history, windows, seconds, test_images) -> dict:
    """The ``metrics.json`` of a run."""
    steady = windows[1:] if len(windows) > 1 else windows  # the first window holds the compile
    rates = [dt / n for n, dt in steady if n > 0]
    sec = statistics.median(rates) if rates else float("nan")
    k = meta.inner_steps
    last_eval = next((h for h in reversed(history) if f"test_psnr_{k}" in h), {})
    return {
        "status": status, "step": step, "config": config.record(), "meta": meta.config(),
        "network_params": meta.model.num_params(), "shared_params": meta.num_params(),
        "mac_per_pixel": cost.paper_macs, "render_mac_per_pixel": cost.render_macs,
        "devices": mesh.size, "processes": jax.process_count(), "step_seconds_median": sec,
        "images_per_second": config.batch_size / sec if rates else None,
        "train_seconds": seconds["train"], "budget_seconds": seconds["budget"], "steps_this_run": step - start,
        "test_images": test_images,
        "test_psnr": {str(s): last_eval.get(f"test_psnr_{s}") for s in sorted({k, config.eval_more_steps})},
        "final_train_loss": history[-1]["loss"] if history else None,
    }


def write_pictures(workdir, meta, params, history, eval_imgs, config, status):
    """``psnr.png`` and (2-D signals, a run that did not diverge) ``reconstructions.png``."""
    plot_history(history, os.path.join(workdir, "psnr.png"), meta.inner_steps, config.eval_more_steps,
                 title=f"{meta.model.kind} functa, latent {meta.latent_dim}")
    if status != "diverged" and len(meta.shape) == 2:
        # all the evaluation images, as the evaluations fit them (their compiled shapes), the first 8 shown
        lat, _ = inference.fit_latents(meta, params, eval_imgs)
        recon = inference.render_latents(meta, params, lat)[:8]
        write_grid(os.path.join(workdir, "reconstructions.png"), [eval_imgs[:8], recon])


# ----------------------------------------------------------------------------- pictures
def write_grid(path, rows, pad: int = 2, min_size: int = 96):
    """PNG of image rows: ``rows`` is a list of ``[n, H, W, C]`` arrays (same n), one row each.

    Small images are enlarged by an integer factor (nearest neighbour) to at least ``min_size`` px.
    """
    from asmr_jax.data import write_png

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
