"""Batch fitting benchmark: signals/s and PSNR of ASMR vs SIREN, device scaling, memory vs chunk.

Three measurements, each printed as a table and written to
``experiments/results/batch_benchmark.json`` and ``.md``:

1. ``fit_many`` on ``n`` images of 32x32 and 64x64 (natural-image patches from
   :func:`asmr_jax.datasets.load_dataset`, or center crops of scikit-image's bundled photos
   when that module is missing; the table says which), SIREN vs ASMR with (nearly) equal
   parameter counts, the same steps and learning rate, in one process, side by side:
   signals/s (compile excluded, measured separately), final PSNR, and the ratios.
2. Scaling over 1, 2 and 8 forced CPU devices: the script re-invokes itself in a
   subprocess per device count with ``XLA_FLAGS=--xla_force_host_platform_device_count=D``.
   Forced host devices share the same CPU cores, so on a small machine this measures the
   sharding overhead, not a speed-up.
3. Peak memory vs chunk size: ``fit_dataset`` into a temporary store in a subprocess per
   chunk size; the subprocess reports its own peak RSS (``common.peak_rss_mib``), next to a
   baseline process that only imports JAX and builds the model.

Usage::

    python -m experiments.batch_benchmark --quick     # 4 signals, 100 steps: 5.5 min on 2 busy cores
    python -m experiments.batch_benchmark             # 8 signals, 300 steps: 14 min on 2 busy cores

Options choose sizes, steps, the device counts and the chunk sizes (``--help``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from experiments import common


# ----------------------------------------------------------------------------- data and models
def load_images(resolution: int, n: int, split: str = "test"):
    """``n`` RGB images ``[n, r, r, 3]`` on ``[0, 1]`` and a description of their source."""
    from asmr_jax import datasets

    ds = datasets.load_dataset("patches", split=split, resolution=resolution)
    idx = np.unique(np.linspace(0, len(ds) - 1, n).round().astype(np.int64))
    if len(idx) < n:
        idx = np.arange(n) % len(ds)
    return ds.get(idx), f"patches/{split} ({len(ds)} patches, {n} evenly spaced)"


def model_pair(resolution: int, levels: int, width: int):
    """An ASMR and the SIREN of the same depth whose width gives the closest parameter count."""
    from asmr_jax import models

    asmr = models.build("asmr", (resolution,) * 2, 3, width=width, levels=levels)
    build = lambda w: models.build("siren", (resolution,) * 2, 3, width=w, depth=levels)  # noqa: E731
    return asmr, build(models.match_width(lambda w: build(w).num_params(), asmr.num_params(), lo=8))


def full_fit(model, images, steps: int, lr: float, per_call: int) -> dict:
    """Compiles with one short call, then fits ``steps`` steps: PSNR and the run's time."""
    from asmr_jax import batch, macs

    t0 = time.perf_counter()
    batch.fit_many(model, images, per_call, lr=lr, steps_per_call=per_call, progress=False)
    compile_s = time.perf_counter() - t0
    res = batch.fit_many(model, images, steps, lr=lr, steps_per_call=per_call, progress=False)
    return {
        "model": model.kind,
        "params": model.num_params(),
        "mac_per_sample": macs.count(model).paper_macs,
        "width": model.widths[0],
        "depth": len(model.widths) + 1,
        "signals": len(images),
        "steps": steps,
        "full_run_s": res.fit_seconds,
        "first_call_s": compile_s,
        "psnr_mean": float(np.mean(res.psnr)),
        "psnr_median": float(np.median(res.psnr)),
    }


def speed_runs(models, images, lr: float, per_call: int, repeats: int) -> list[list[float]]:
    """Seconds of ``repeats`` compiled ``fit_many`` calls of ``per_call`` steps per model.

    The models alternate, so a change in machine load hits them alike; returns one list
    of times per model.
    """
    from asmr_jax import batch

    times = [[] for _ in models]
    for _ in range(repeats):
        for m, t in zip(models, times):
            t0 = time.perf_counter()
            batch.fit_many(m, images, per_call, lr=lr, steps_per_call=per_call, progress=False)
            t.append(time.perf_counter() - t0)
    return times


def with_speed(row: dict, times: list[float], per_call: int) -> dict:
    """Signals/s for a fit of ``row["steps"]`` steps, from the median time of ``per_call`` steps."""
    row["speed_s"] = times
    row["signals_per_s"] = row["signals"] * per_call / (float(np.median(times)) * row["steps"])
    return row


# ----------------------------------------------------------------------------- subprocess jobs
def worker(spec: dict) -> dict:
    import jax

    from asmr_jax import batch

    out = {"devices": len(jax.devices())}
    asmr, siren = model_pair(spec["resolution"], spec["levels"], spec["width"])
    model = asmr if spec.get("model", "asmr") == "asmr" else siren
    if spec["job"] == "devices":
        images, _ = load_images(spec["resolution"], spec["n"])
        out.update(full_fit(model, images, spec["steps"], spec["lr"], spec["per_call"]))
        with_speed(out, speed_runs([model], images, spec["lr"], spec["per_call"], spec["repeats"])[0], spec["per_call"])
    elif spec["job"] == "memory":
        from asmr_jax import datasets

        ds = datasets.load_dataset("patches", split="train", resolution=spec["resolution"])
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            store = batch.fit_dataset(
                model,
                ds,
                os.path.join(tmp, "store"),
                spec["chunk"],
                spec["steps"],
                lr=spec["lr"],
                limit=spec["n"],
                steps_per_call=spec["per_call"],
                progress=False,
            )
            out["seconds"] = time.perf_counter() - t0
            out["signals"] = len(store)
            out["store_mb"] = sum(os.path.getsize(os.path.join(store.path, f)) for f in os.listdir(store.path)) / 2**20
    elif spec["job"] == "baseline":  # what every memory job holds before fitting
        from asmr_jax import datasets

        datasets.load_dataset("patches", split="train", resolution=spec["resolution"]).get([0])
    else:
        raise ValueError(f"unknown job {spec['job']!r}")
    out["max_rss_mb"] = common.peak_rss_mib()
    return out


def run_worker(spec: dict, devices: int = 1) -> dict:
    env = common.child_env()
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env.setdefault("JAX_PLATFORMS", "cpu")
    proc = subprocess.run(
        common.child_command("experiments.batch_benchmark", "--worker", json.dumps(spec)),
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"worker {spec} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def get_config(arg: str | None = None) -> dict:
    """Every setting's default; ``"quick"``: 4 signals, 100 steps (5.5 minutes on 2 busy cores)."""
    common.check_config(arg, "quick")
    quick = arg == "quick"
    return {"n": 4 if quick else 8, "steps": 100 if quick else 300, "lr": 1e-3, "repeats": 3 if quick else 5,
            "sizes": "32,64", "levels": 3, "width": 64, "devices": "1,2,8", "chunks": "4,16,64", "memory_n": 64}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 signals, 100 steps (5.5 minutes on 2 busy cores)")
    p.add_argument("--n", type=int, default=None, help="signals per fit (default 8; quick 4)")
    p.add_argument("--steps", type=int, default=None, help="steps per signal (default 300; quick 100)")
    p.add_argument("--lr", type=float, default=None, help="Adam rate (default 1e-3: short runs)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per model (default 5; quick 3)")
    p.add_argument("--sizes", default=None, help="image resolutions (default 32,64)")
    p.add_argument("--levels", type=int, default=None, help="ASMR levels = SIREN depth (default 3)")
    p.add_argument("--width", type=int, default=None, help="ASMR width; SIREN width matches params (default 64)")
    p.add_argument("--devices", default=None, help="forced CPU device counts (default 1,2,8)")
    p.add_argument("--chunks", default=None, help="chunk sizes for the memory table (default 4,16,64)")
    p.add_argument("--memory-n", type=int, default=None, help="signals fitted in the memory table (default 64)")
    p.add_argument("--out", default=os.path.join(common.RESULTS_DIR, "batch_benchmark"),
                   help="results path without suffix")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    for key, value in get_config("quick" if args.quick else None).items():  # flags not given
        if getattr(args, key) is None:
            setattr(args, key, value)
    n, steps, repeats = args.n, args.steps, args.repeats
    per_call = min(50, steps)
    if steps % per_call:
        raise ValueError(f"--steps {steps} must be a multiple of {per_call}")
    sizes = [int(s) for s in args.sizes.split(",")]
    devices = [int(d) for d in args.devices.split(",")]
    chunks = [int(c) for c in args.chunks.split(",")]

    import jax

    t_all = time.perf_counter()
    meta = {
        "n": n,
        "steps": steps,
        "lr": args.lr,
        "levels": args.levels,
        "width": args.width,
        "quick": args.quick,
        "repeats": repeats,
        "steps_per_timed_call": per_call,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    results = {"meta": meta, "models": [], "ratios": {}, "devices": [], "memory": []}

    # 1. ASMR vs SIREN, one process, one device.
    print(
        f"== fit_many: {n} signals, PSNR after {steps} steps, speed from {repeats} alternating calls of "
        f"{per_call} steps, lr {args.lr}, {jax.device_count()} device(s)"
    )
    rows = []
    for r in sizes:
        images, source = load_images(r, n)
        meta[f"data_{r}"] = source
        asmr, siren = model_pair(r, args.levels, args.width)
        pair = [full_fit(m, images, steps, args.lr, per_call) for m in (siren, asmr)]
        times = speed_runs((siren, asmr), images, args.lr, per_call, repeats)
        for row, t in zip(pair, times):
            with_speed(row, t, per_call)
            row["resolution"] = r
            results["models"].append(row)
        s, a = pair
        ratio = float(np.median(np.array(times[0]) / np.array(times[1])))  # pairs measured back to back
        results["ratios"][str(r)] = {"speed": ratio, "dpsnr": a["psnr_mean"] - s["psnr_mean"]}
        rows.append(
            [
                f"{r}x{r}",
                s["params"],
                a["params"],
                f"{s['mac_per_sample']:.0f}",
                f"{a['mac_per_sample']:.0f}",
                f"{s['signals_per_s']:.2f}",
                f"{a['signals_per_s']:.2f}",
                f"{ratio:.2f}x",
                f"{s['psnr_mean']:.2f}",
                f"{a['psnr_mean']:.2f}",
                f"{a['psnr_mean'] - s['psnr_mean']:+.2f}",
                f"{s['first_call_s']:.1f} / {a['first_call_s']:.1f}",
            ]
        )
        print(f"   {r}x{r}: data = {source}")
    t1 = common.markdown_table(
        [
            "size",
            "SIREN params",
            "ASMR params",
            "SIREN MAC",
            "ASMR MAC",
            "SIREN sig/s",
            "ASMR sig/s",
            "speed ratio",
            "SIREN PSNR",
            "ASMR PSNR",
            "dPSNR",
            "first call s (S / A)",
        ],
        rows,
    )
    print(t1)

    # 2. Device scaling (forced host devices, separate processes).
    r0 = sizes[0]
    print(f"\n== device scaling: ASMR {r0}x{r0}, {n} signals x {steps} steps, one process per device count")
    rows = []
    for d in devices:
        out = run_worker(
            {
                "job": "devices",
                "resolution": r0,
                "levels": args.levels,
                "width": args.width,
                "n": n,
                "steps": steps,
                "lr": args.lr,
                "per_call": per_call,
                "repeats": repeats,
            },
            devices=d,
        )
        results["devices"].append(out)
    base = results["devices"][0]["signals_per_s"]
    for out in results["devices"]:
        rows.append(
            [
                out["devices"],
                f"{out['signals_per_s']:.2f}",
                f"{out['signals_per_s'] / base:.2f}",
                f"{out['psnr_mean']:.2f}",
                f"{out['first_call_s']:.1f}",
                f"{out['max_rss_mb']:.0f}",
            ]
        )
    t2 = common.markdown_table(
        ["devices", "ASMR sig/s", f"vs {devices[0]} device", "PSNR", "first call s", "max RSS MB"], rows)
    print(t2)

    # 3. Peak memory vs chunk size.
    mem_steps = per_call
    print(f"\n== memory: fit_dataset of {args.memory_n} patches {r0}x{r0} (ASMR, {mem_steps} steps) per chunk size")
    spec = {
        "resolution": r0,
        "levels": args.levels,
        "width": args.width,
        "lr": args.lr,
        "per_call": per_call,
        "steps": mem_steps,
        "n": args.memory_n,
    }
    baseline = run_worker({**spec, "job": "baseline"})
    rows = [["baseline (import, model, open dataset)", "-", f"{baseline['max_rss_mb']:.0f}", "-", "-"]]
    for c in chunks:
        out = run_worker({**spec, "job": "memory", "chunk": c})
        out["chunk"] = c
        results["memory"].append(out)
        rows.append(
            [
                c,
                out["signals"],
                f"{out['max_rss_mb']:.0f}",
                f"{out['max_rss_mb'] - baseline['max_rss_mb']:.0f}",
                f"{out['seconds']:.1f}",
            ]
        )
    results["memory_baseline_mb"] = baseline["max_rss_mb"]
    t3 = common.markdown_table(["chunk", "signals", "max RSS MB", "above baseline MB", "seconds"], rows)
    print(t3)

    meta["total_seconds"] = time.perf_counter() - t_all
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(results, f, indent=1)
    command = common.command_line("experiments.batch_benchmark", argv)
    with open(args.out + ".md", "w") as f:
        f.write(
            f"# Batch fitting benchmark\n\n`{command}`"
            f" on {meta['cpu_count']} CPU cores ({meta['backend']}, jax {meta['jax']}), "
            f"{meta['total_seconds']:.0f} s in all.\n\n"
        )
        f.write(f"## ASMR vs SIREN, {n} signals x {steps} full-batch steps, lr {args.lr}, 1 device\n\n")
        for r in sizes:
            f.write(f"- {r}x{r} data: {meta[f'data_{r}']}\n")
        f.write(
            f"\nPSNR after {steps} steps. sig/s = signals fitted per second for {steps} steps, from the median "
            f"time of {repeats} compiled calls of {per_call} steps, the two models alternating; speed ratio = "
            "median of the back-to-back "
            "pairs' time ratios. The first (compiling) call is in the last column.\n\n" + t1 + "\n\n"
        )
        f.write(f"## Forced CPU devices (ASMR {r0}x{r0}; the devices share the same cores)\n\n" + t2 + "\n\n")
        f.write(f"## Peak memory vs chunk size ({args.memory_n} signals, {mem_steps} steps)\n\n" + t3 + "\n")
    print(f"\nwrote {args.out}.json and {args.out}.md ({meta['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
