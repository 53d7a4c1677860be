"""Meta-step speed and memory of SIREN-functa and ASMR-functa at functa's configs.

    python -m experiments.meta_benchmark            # ~12 min on 2 cores (the default-size SIREN dominates)
    python -m experiments.meta_benchmark --quick    # the three small configs only (~4 min)
    python -m experiments.meta_benchmark --default-only   # functa's default size only (~4 min)
    python -m experiments.meta_benchmark --smoke    # tiny, seconds
    python -m experiments.meta_benchmark --spatial  # 32x32 w256 d4: global against 4x4 and 8x8 latent grids

Rows (batch 16, k = 3, functa's parameterization, outer Adam without clipping):

* functa's CPU reference configs, latent 256: SIREN width 256 depth 4 and depth 6 at
  32x32, width 256 depth 4 at 64x64, and ASMR of the same width and depth (equal
  parameters up to the modulators, ~0.3%);
* functa's default size: width 512, depth 15, 64x64, latent 512 (SIREN and a 15-level ASMR);
* with ``--spatial``: functa's first CPU config with global latents and with 4x4 and 8x8
  latent grids, each with a per-cell (1x1) and a 3x3 latent-to-modulation map
  (``meta.functa.MetaModel``'s ``spatial`` and ``spatial_kernel``, the same 256 values in
  all), SIREN and ASMR, with XLA's FLOP count of one latent's render per pixel (written
  to ``meta_benchmark_spatial.{json,md}``);
* SIREN also with ``microbatch`` (gradients summed over chunks of 8 images, of 4 and of
  2 at the default size: the same step, less memory); at the default size ASMR also with
  chunks of 8 and of 4. ``remat`` (``jax.checkpoint`` per inner step) is not a row: XLA's
  CPU memory plan is the same with and without it (experiments/README.md).

Each row runs in a fresh process on random images: one compiling step, then the median
of ``--steps`` timed steps. Memory: the process's peak RSS (the CPU backend has no
``memory_stats``) and XLA's plan of the compiled step (``meta.optimize.memory_plan``); as in
``meta.train``, the step is compiled first and the compiler's freed heap handed back
(``asmr_jax.io.release_free_heap``) before it runs. DeepMind
functa's own code on this machine (2 cores, quiet; numbers from the issue tracker,
measured with functa's ``function_reps.py``/``helpers.py`` in a separate venv): w256 d4
32x32 1.61 s/step, 1.04 GiB; w256 d6 32x32 2.78 s, 1.52 GiB; w256 d4 64x64 6.93 s,
2.76 GiB; at the default size functa cannot run batch 16 in 24 GB.

Writes ``experiments/results/meta_benchmark.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

from experiments import common

FUNCTA = {  # (width, depth, resolution, latent) -> (seconds per step, peak GiB) of functa's code here
    (256, 4, 32, 256): (1.61, 1.04),
    (256, 6, 32, 256): (2.78, 1.52),
    (256, 4, 64, 256): (6.93, 2.76),
}
SMALL = [(256, 4, 32, 256), (256, 6, 32, 256), (256, 4, 64, 256)]
DEFAULT = (512, 15, 64, 512)


def get_config(arg=None) -> dict:
    """Rows: per config, SIREN with each lever and ASMR without; at the default size the
    levers that fit in 24 GB (SIREN plain needs ~29 GiB by XLA's plan), one timed step."""
    common.check_config(arg, "smoke", "quick")
    if arg == "smoke":
        return {"steps": 2, "configs": [(16, 3, 16, 8)], "levers": [{}, {"microbatch": 4}], "batch": 8}
    small = {"steps": 3, "configs": SMALL, "levers": [{}, {"microbatch": 8}], "batch": 16}
    if arg == "quick":
        return small
    return {**small, "configs": SMALL + [DEFAULT], "default_levers": [{"microbatch": 4}, {"microbatch": 2}],
            "default_asmr_levers": [{}, {"microbatch": 8}, {"microbatch": 4}], "default_steps": 1}


def _current_rss_gib() -> float:
    return common.rss_mib() / 1024


class _RssSampler:
    """Peak resident memory while the block runs, sampled every 2 ms in a thread."""

    def __enter__(self):
        import threading

        self.peak, self._stop = _current_rss_gib(), threading.Event()

        def sample():
            while not self._stop.wait(0.002):
                self.peak = max(self.peak, _current_rss_gib())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _current_rss_gib())


def run_one(row: dict) -> dict:
    import jax
    import numpy as np

    from asmr_jax import io
    from meta import functa, optimize
    from meta.config import TrainConfig

    start_rss = _current_rss_gib()
    w, depth, res, latent = row["config"]
    meta = TrainConfig(model=row["model"], resolution=res, width=w, depth=depth, levels=depth, latent_dim=latent,
                       functa_init=True, spatial=row.get("spatial"),
                       spatial_kernel=row.get("spatial_kernel") or 3).meta_model(3)
    opt = optimize.make_optimizer(3e-6, None)
    step = optimize.make_meta_step(meta, opt, **row["lever"])
    params = meta.init(jax.random.key(0))
    state = opt.init(params)
    images = jax.numpy.asarray(np.random.default_rng(0).uniform(size=(row["batch"], res, res, 3)), np.float32)
    estimate = optimize.memory_plan(step.compile_for(params, state, images))  # as meta.train: compile, then
    io.release_free_heap()  # hand the compiler's freed heap back before the first step
    times = []
    params, state, m = jax.block_until_ready(step(params, state, images))
    compiled_rss = _current_rss_gib()
    with _RssSampler() as sampler:  # the running steps alone, compilation excluded
        for _ in range(row["steps"]):
            t0 = time.perf_counter()
            params, state, m = jax.block_until_ready(step(params, state, images))
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    from asmr_jax import macs

    render = jax.jit(lambda p, z: functa.render(meta, p, z))  # one latent's whole render
    flops = macs.xla_cost(render, params, jax.numpy.zeros(meta.latent_dim)).get("flops", float("nan"))
    return {**row, "shared_params": meta.num_params(), "render_flops_per_pixel": flops / res**2,
            "step_seconds": sec, "images_per_second": row["batch"] / sec,
             "loss": float(m["loss"]),
            "peak_rss_gib": common.peak_rss_mib() / 1024,
            "start_rss_gib": start_rss, "compiled_rss_gib": compiled_rss, "running_rss_gib": sampler.peak,
            "xla_plan_gib": estimate.get("peak", 0) / 2**30}


def spawn(row: dict) -> dict:
    out = subprocess.run(common.child_command("experiments.meta_benchmark", "--one", json.dumps(row)),
                         env=common.child_env(),
                         capture_output=True, text=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"row {row} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[-1])


def to_markdown(payload) -> str:
    body = []
    for r in payload["rows"]:
        key = tuple(r["config"])
        ref = FUNCTA.get(key)
        lever = ", ".join(f"{k}={v}" for k, v in r["lever"].items()) or "-"
        vs = "-" if ref is None else f"{ref[0] / r['step_seconds']:.1f}x"
        mem = "-" if ref is None else f"{r['peak_rss_gib'] / ref[1]:.2f}"
        w, d, res, latent = key
        grid = ("global" if r.get("spatial") is None else
                f"{r['spatial']}x{r['spatial']}, {r.get('spatial_kernel') or 3}x{r.get('spatial_kernel') or 3} map")
        body.append([f"{w}x{d}", res, latent, grid, r["model"], lever, f"{r['shared_params']:,}",
                     common.fmt(r.get("render_flops_per_pixel"), 0),
                     common.fmt(r["step_seconds"], 3), common.fmt(r["images_per_second"], 1), vs,
                     common.fmt(r["peak_rss_gib"]), mem, common.fmt(r.get("running_rss_gib")),
                     common.fmt(r.get("start_rss_gib")), common.fmt(r["xla_plan_gib"])])
    table = common.markdown_table(
        ["width x depth", "res", "latent", "latent grid", "model", "lever", "shared params", "render FLOP/px",
         "s/step", "img/s",
         "speed vs functa", "peak RSS GiB", "RSS / functa's", "RSS while stepping", "RSS at start",
         "XLA plan GiB"], body)
    return (f"Batch {payload['config']['batch']}, k = 3, median of {payload['config']['steps']} steps after the "
            f"compiling one; functa's own code here: {FUNCTA} (s/step, GiB).\n\n{table}\n")


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the three small configs only")
    p.add_argument("--default-only", action="store_true",
                   help="functa's default size only (written to meta_benchmark_default.{json,md})")
    p.add_argument("--spatial", action="store_true",
                   help="global against spatial latents at 32x32 w256 d4 (written to meta_benchmark_spatial.*)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0
    cfg = get_config("smoke" if args.smoke else "quick" if args.quick else None)
    if args.default_only:
        cfg["configs"] = [DEFAULT]
    grids = [None]
    if args.spatial:
        cfg["configs"], cfg["levers"], grids = [SMALL[0]], [{}], [None, (4, 1), (4, 3), (8, 1), (8, 3)]
        if args.smoke:
            cfg["configs"], grids = [(16, 3, 16, 8)], [None, (2, 1)]
    if args.steps is not None:
        cfg["steps"] = common.positive_int(args.steps, "--steps")
    rows, t0 = [], time.time()
    for config in cfg["configs"]:
        levers = cfg.get("default_levers", cfg["levers"]) if tuple(config) == DEFAULT else cfg["levers"]
        for model in ("siren", "asmr"):
            asmr_levers = cfg.get("default_asmr_levers", [{}]) if tuple(config) == DEFAULT else [{}]
            for lever in (asmr_levers if model == "asmr" else levers):
                for grid in [g if g is None else tuple(g) for g in grids]:
                    steps = cfg.get("default_steps", cfg["steps"]) if tuple(config) == DEFAULT else cfg["steps"]
                    row = spawn({"config": list(config), "model": model, "lever": lever, "steps": steps,
                                 "batch": cfg["batch"], "spatial": None if grid is None else grid[0],
                                 "spatial_kernel": None if grid is None else grid[1]})
                    rows.append(row)
                    print(f"[{time.time() - t0:5.0f}s] {model} {config} {lever} grid {grid}: "
                          f"{row['step_seconds']:.3f} s/step, RSS {row['peak_rss_gib']:.2f} GiB, XLA plan "
                          f"{row['xla_plan_gib']:.2f} GiB", flush=True)
    payload = {"config": cfg, "rows": rows, "wall_seconds": time.time() - t0,
               "command": common.command_line("experiments.meta_benchmark", argv)}
    suffix = ("_spatial" if args.spatial else "") + ("_smoke" if args.smoke else "_default" if args.default_only
                                                     else "")
    common.report(args.out, "meta_benchmark" + suffix, payload, to_markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
